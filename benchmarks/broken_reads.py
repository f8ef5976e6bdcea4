"""Broken-but-stored files read back (issue 13), side by side: how each server answers every read path.

The corpus is tests/test_broken_files.py's: seeded mutants of every pydicom test file with pixel data
(tests/mutations.py; the unmutated original of each file plus ``--mutants-per-file`` broken copies). Each mutant
is sent by STOW-RS to every server, one per request; then every instance a server stored is read through each read
path below, and each answer is tallied:

- ``2xx``: a complete answer (``bad`` counts those whose body is not what its Content-Type says: a DICOM part that
  pydicom does not read or that names another transfer syntax than its file meta, an image that does not decode,
  JSON that does not parse; tests/test_broken_files.py ``check``; a body that holds the mutant byte for byte is not
  bad: it is the file as it was sent),
- ``4xx`` (``404`` of them counted apart: Orthanc 1.10's DICOMweb plugin has no thumbnail resource),
- ``5xx``,
- ``cut``: no answer, an exception while reading the body, a body shorter or longer than its Content-Length, or a
  multipart body without its closing delimiter (RFC 2046 §5.1.1).

A broken file may be refused, at store or at read time, but a 5xx or a cut body is a wrong answer. Requests go one
at a time on one keep-alive connection, renewed after a 5xx or a cut; bodies are asked uncompressed
(Orthanc gzips answers when asked). Example (broken_reads.sh starts both servers and runs this)::

    python benchmarks/broken_reads.py ours=http://127.0.0.1:8080/dicomweb orthanc=http://127.0.0.1:8042/dicom-web

The WADO-URI endpoint of a server defaults to ``/wado`` beside its DICOMweb root when the root ends with
``/dicom-web`` (Orthanc), else to ``ROOT/wado`` (ours); ``--wado-uri LABEL=URL`` sets it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: the corpus is the tests'
from tests.data import multipart, stow_headers
from tests.mutations import ORIGINAL, Mutant, corpus
from tests.test_broken_files import (
    BOUNDARY,
    DICOM,
    MUTANTS_PER_FILE,
    OCTETS,
    RETRIEVE_URL,
    SEED,
    Answer,
    Stored,
    check,
    fetch,
    pixel_files,
)

Outcome = Literal["2xx", "bad", "4xx", "404", "5xx", "cut", "other"]
NO_COMPRESSION = {"Accept-Encoding": "identity"}
TIMEOUT_SECONDS = 60.0
PROBE_SECONDS = 5.0  # is the server still there, after a 5xx or a cut
SHOWN_BYTES = 200  # of an error body, in the JSON
# The read paths, in the order of the tables (the URL and Accept header of each: read_requests).
PATHS = (
    "instance as stored",
    "instance single-part",
    "instance multipart",
    "series multipart",
    "frames/1",
    "frames/1 as stored",
    "rendered",
    "thumbnail",
    "metadata",
    "WADO-URI dicom",
    "WADO-URI jpeg",
)


@dataclass(frozen=True)
class Server:
    label: str
    root: str  # the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web
    wado_uri: str  # the WADO-URI endpoint, e.g. http://127.0.0.1:8042/wado


@dataclass
class Result:
    """What one server did with the corpus."""

    server: Server
    stow: Counter[str] = field(default_factory=Counter)  # stored, refused, 5xx, cut
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)  # mutant name -> read path -> outcome
    answers: list[dict[str, Any]] = field(default_factory=list)  # every answer but a good 2xx
    deaths: list[str] = field(default_factory=list)  # "mutant path" of each read after which the server was gone
    unread: int = 0  # requests not sent: the server did not come back
    store_seconds: float = 0.0
    read_seconds: float = 0.0

    def counts(self, path: str, mutants: set[str] | None = None) -> Counter[Outcome]:
        """The outcomes of one read path, over every stored mutant or those named."""
        found = (paths[path] for name, paths in self.outcomes.items() if mutants is None or name in mutants)
        return Counter(found)


def read_requests(server: Server, stored: Stored) -> list[tuple[str, str, str | None]]:
    """(path name, URL, Accept) of each read of one stored instance, as tests/test_broken_files.py makes them:
    the default transfer syntax is the one without a ``transfer-syntax`` parameter (PS3.18 §8.7.3.5)."""
    instance = f"{server.root}/{stored.instance}"
    series = f"{server.root}/studies/{stored.study}/series/{stored.series}"
    query = f"{server.wado_uri}?requestType=WADO&studyUID={stored.study}&seriesUID={stored.series}"
    query += f"&objectUID={stored.sop}"
    requests = [
        ("instance as stored", instance, DICOM + "; transfer-syntax=*"),
        ("instance single-part", instance, "application/dicom"),
        ("instance multipart", instance, DICOM),
        ("series multipart", series, DICOM),
        ("frames/1", instance + "/frames/1", OCTETS),
        ("frames/1 as stored", instance + "/frames/1", OCTETS + "; transfer-syntax=*"),
        ("rendered", instance + "/rendered", None),
        ("thumbnail", instance + "/thumbnail", None),
        ("metadata", instance + "/metadata", "application/dicom+json"),
        ("WADO-URI dicom", query + "&contentType=application/dicom", None),
        ("WADO-URI jpeg", query + "&contentType=image/jpeg", None),
    ]
    assert tuple(name for name, _, _ in requests) == PATHS
    return requests


def classify(answer: Answer, stored: Stored) -> tuple[Outcome, str]:
    """The answer's outcome, and what was wrong or refused (empty for a good 2xx)."""
    if answer.cut:
        return "cut", answer.cut
    status, body = answer.status, answer.body
    if status >= 400:
        text = body[:SHOWN_BYTES].decode("utf-8", "replace")
        return ("5xx" if status >= 500 else "404" if status == 404 else "4xx"), text
    if not 200 <= status < 300:
        return "other", f"status {status}"
    content_type = answer.headers.get("content-type", "")
    if content_type.startswith("multipart/related"):
        match = BOUNDARY.search(content_type)
        closing = b"--" + match.group(1).encode() + b"--" if match else None
        if closing is None or not body.rstrip(b"\r\n").endswith(closing):
            return "cut", f"multipart body of {len(body)} bytes without its closing delimiter: {body[-60:]!r}"
    problem = check(answer, stored)
    if problem and stored.mutant.data in body:  # the file as it was sent, which pydicom does not read either
        return "2xx", ""
    return ("bad", problem) if problem else ("2xx", "")


def store_all(server: Server, mutants: list[Mutant], result: Result) -> list[Stored]:
    """STOW-RS each mutant in a request of its own; the instances stored, under the UIDs the server gives."""
    stored: list[Stored] = []
    url = server.root + "/studies"
    started = time.perf_counter()
    with httpx.Client(timeout=TIMEOUT_SECONDS, headers=NO_COMPRESSION) as client:
        for mutant in mutants:
            try:
                response = client.post(url, content=multipart([mutant.data]), headers=stow_headers())
            except httpx.HTTPError as exc:
                result.stow["cut"] += 1
                note(result, mutant, "STOW-RS", 0, "cut", f"{type(exc).__name__}: {exc}")
                client.close()
                client = httpx.Client(timeout=TIMEOUT_SECONDS, headers=NO_COMPRESSION)
                continue
            found = []
            if 200 <= response.status_code < 300 and "json" in response.headers.get("content-type", ""):
                for item in response.json().get("00081199", {}).get("Value", []):
                    match = RETRIEVE_URL.search(item.get("00081190", {}).get("Value", [""])[0])
                    if match:
                        found.append(Stored(mutant, *match.groups()))
            if found:
                result.stow["stored"] += 1
                stored += found
            elif response.status_code >= 500:
                result.stow["5xx"] += 1
                note(result, mutant, "STOW-RS", response.status_code, "5xx", response.text[:SHOWN_BYTES])
            else:
                result.stow["refused"] += 1
    result.store_seconds = time.perf_counter() - started
    return stored


def read_all(server: Server, stored: list[Stored], result: Result, down_wait: float) -> None:
    """GET every read path of every stored instance and tally the answers. After a 5xx or a cut, the server is
    probed: if it is gone (crashed, or killed by the kernel's OOM killer), the read is noted as its death and the
    reads go on once it is back (a supervisor restarts it); if it is not back within ``down_wait`` seconds, the
    remaining reads are counted as not sent."""
    started = time.perf_counter()
    client = httpx.Client(timeout=TIMEOUT_SECONDS, headers=NO_COMPRESSION)
    requests = [(instance, *request) for instance in stored for request in read_requests(server, instance)]
    try:
        for number, (instance, path, url, accept) in enumerate(requests, 1):
            answer = fetch(client, url, {"accept": accept} if accept else {})
            outcome, detail = classify(answer, instance)
            result.outcomes.setdefault(instance.mutant.name, {})[path] = outcome
            if outcome != "2xx":
                note(result, instance.mutant, path, answer.status, outcome, detail)
            if outcome in ("5xx", "cut"):  # the server may have closed the connection: start afresh
                client.close()
                client = httpx.Client(timeout=TIMEOUT_SECONDS, headers=NO_COMPRESSION)
                if not is_up(server):
                    result.deaths.append(f"{instance.mutant.name} {path}")
                    print(f"{server.label}: gone after {instance.mutant.name} {path}", file=sys.stderr, flush=True)
                    if not wait_up(server, down_wait):
                        result.unread = len(requests) - number
                        break
            if number % 500 == 0:
                print(f"{server.label}: {number} of {len(requests)} reads", file=sys.stderr, flush=True)
    finally:
        client.close()
    result.read_seconds = time.perf_counter() - started


def is_up(server: Server) -> bool:
    """Whether the server answers at all (any status) within a few seconds."""
    try:
        httpx.get(server.root + "/studies?limit=1", timeout=PROBE_SECONDS, headers=NO_COMPRESSION)
    except httpx.TransportError:
        return False
    return True


def wait_up(server: Server, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if is_up(server):
            return True
        time.sleep(0.5)
    return False


def note(result: Result, mutant: Mutant, path: str, status: int, outcome: Outcome, detail: str) -> None:
    result.answers.append(
        {
            "mutant": mutant.name,
            "mutation": mutant.detail,
            "path": path,
            "status": status,
            "outcome": outcome,
            "detail": detail,
        }
    )


def run(server: Server, mutants: list[Mutant], down_wait: float) -> Result:
    result = Result(server)
    print(f"{server.label}: STOW-RS of {len(mutants)} mutants, one per request", file=sys.stderr, flush=True)
    stored = store_all(server, mutants, result)
    print(f"{server.label}: {len(stored)} stored; reading them back", file=sys.stderr, flush=True)
    read_all(server, stored, result, down_wait)
    return result


def server_table(result: Result) -> str:
    """The STOW-RS counts and one row per read path: 2xx (bad bodies of them), 4xx (404 of them), 5xx, cut."""
    stow = result.stow
    lines = [
        f"== {result.server.label}: {result.server.root} (WADO-URI {result.server.wado_uri})",
        f"STOW-RS: {sum(stow.values())} mutants, {stow['stored']} stored, {stow['refused']} refused, "
        f"{stow['5xx']} 5xx, {stow['cut']} cut ({result.store_seconds:.1f} s); reads: {result.read_seconds:.1f} s",
        f"{'read path':<22} {'2xx':>5} {'bad':>5} {'4xx':>5} {'404':>5} {'5xx':>5} {'cut':>5}",
    ]
    total: Counter[Outcome] = Counter()
    for path in PATHS:
        counts = result.counts(path)
        total += counts
        lines.append(row(path, counts))
    lines.append(row("total", total))
    if total["other"]:
        lines.append(f"({total['other']} answers neither 2xx, 4xx nor 5xx)")
    if result.deaths:
        lines.append(f"went down {len(result.deaths)} times, after: " + "; ".join(result.deaths))
    if result.unread:
        lines.append(f"{result.unread} reads not sent: the server did not come back")
    return "\n".join(lines)


def row(name: str, counts: Counter[Outcome]) -> str:
    figures = (
        counts["2xx"] + counts["bad"], counts["bad"], counts["4xx"] + counts["404"], counts["404"], counts["5xx"],
        counts["cut"],
    )  # fmt: skip
    return f"{name:<22}" + "".join(f" {figure:>5}" for figure in figures)


def summary(results: list[Result]) -> str:
    """5xx + cut (and bad 2xx bodies) per read path and server, side by side: first on the mutants that every server
    stored (the same files read on each), then on all that each server stored."""
    common = set.intersection(*(set(r.outcomes) for r in results))
    columns = [(r, r.server.label, common) for r in results]
    columns += [(r, f"{r.server.label}, all", set(r.outcomes)) for r in results]
    width = max(12, *(len(name) for _, name, _ in columns))
    totals = [Counter[Outcome]() for _ in columns]
    lines = [
        "== side by side: 5xx+cut (bad 2xx), on the mutants every server stored and on all each stored",
        f"{'read path':<22}" + "".join(f" {name:>{width}}" for _, name, _ in columns),
        f"{'instances read':<22}" + "".join(f" {len(mutants):>{width}}" for _, _, mutants in columns),
    ]
    for path in PATHS:
        cells = []
        for (result, _, mutants), total in zip(columns, totals, strict=True):
            counts = result.counts(path, mutants)
            total += counts
            cells.append(wrong(counts))
        lines.append(f"{path:<22}" + "".join(f" {cell:>{width}}" for cell in cells))
    lines.append(f"{'total':<22}" + "".join(f" {wrong(total):>{width}}" for total in totals))
    originals = []  # the unmutated files: what fails there is a missing codec, not a broken file
    for result, _, mutants in columns:
        names = {name for name in mutants if f":{ORIGINAL}:" in name}
        originals.append(wrong(sum((result.counts(path, names) for path in PATHS), Counter[Outcome]())))
    lines.append(f"{'of which originals':<22}" + "".join(f" {cell:>{width}}" for cell in originals))
    lines.append(f"{'went down':<22}" + "".join(f" {len(r.deaths):>{width}}" for r in results))
    return "\n".join(lines)


def wrong(counts: Counter[Outcome]) -> str:
    return f"{counts['5xx'] + counts['cut']} ({counts['bad']})"


def as_json(result: Result) -> dict[str, Any]:
    return {
        "root": result.server.root,
        "wado_uri": result.server.wado_uri,
        "stow": dict(result.stow),
        "store_seconds": round(result.store_seconds, 2),
        "read_seconds": round(result.read_seconds, 2),
        "reads": {path: dict(result.counts(path)) for path in PATHS},
        "stored": sorted(result.outcomes),
        "deaths": result.deaths,
        "unread": result.unread,
        "answers": result.answers,
    }


def parse_servers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Server]:
    pairs = [tuple(text.split("=", 1)) for text in args.servers]
    wado_uris = [tuple(text.split("=", 1)) for text in args.wado_uri]
    if any(len(pair) != 2 for pair in pairs + wado_uris):
        parser.error("give servers and --wado-uri as LABEL=URL")
    given = dict(wado_uris)
    servers = []
    for label, url in pairs:
        root = url.rstrip("/")
        default = root.removesuffix("/dicom-web") + "/wado" if root.endswith("/dicom-web") else root + "/wado"
        servers.append(Server(label, root, given.get(label, default)))
    if unknown := set(given) - {server.label for server in servers}:
        parser.error(f"--wado-uri for unknown servers: {', '.join(sorted(unknown))}")
    return servers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "servers", nargs="+", help="LABEL=URL of each DICOMweb root, e.g. ours=http://...:8080/dicomweb"
    )
    parser.add_argument("--wado-uri", action="append", default=[], help="LABEL=URL of a server's WADO-URI endpoint")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the corpus's seed (default {SEED}, as the test)")
    parser.add_argument(
        "--mutants-per-file",
        type=int,
        default=MUTANTS_PER_FILE,
        help=f"besides the original (default {MUTANTS_PER_FILE})",
    )
    parser.add_argument(
        "--down-wait", type=float, default=60.0, help="seconds to wait for a server that went down (default 60)"
    )
    parser.add_argument("--json", type=Path, help="save the counts and every answer but a good 2xx")
    args = parser.parse_args(argv)
    servers = parse_servers(parser, args)
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")  # broken files are what we read

    started = time.perf_counter()
    mutants = list(corpus(pixel_files(), args.mutants_per_file, args.seed))
    print(f"{len(mutants)} mutants made in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    results = [run(server, mutants, args.down_wait) for server in servers]
    print(f"seed {args.seed}, {args.mutants_per_file} mutants per file: {len(mutants)} mutants")
    for result in results:
        print(server_table(result) + "\n")
    print(summary(results))
    if args.json:
        document = {"seed": args.seed, "mutants_per_file": args.mutants_per_file, "mutants": len(mutants)}
        document["servers"] = {result.server.label: as_json(result) for result in results}
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
