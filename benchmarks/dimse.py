"""DIMSE benchmark of one DICOM server (``AET@HOST:PORT``): C-STORE, C-GET and C-MOVE throughput and memory with
DCMTK's tools, C-FIND latency with pynetdicom.

Synthetic CT instances (512x512, 16-bit, ~525 KB; ``stow.py``'s generator) are written to a temp folder with pydicom
before each scenario (not timed). Every scenario stores a new study with fresh UIDs:

| scenario | what |
| --- | --- |
| ``store-a1`` | ``--count`` (500) instances by DCMTK's ``storescu``, ONE association |
| ``store-a4`` | ``--count`` instances of another study in 4 parts, 4 ``storescu`` at once (4 associations) |
| ``get`` | C-GET of the ``store-a1`` study by DCMTK's ``getscu`` (Study Root, STUDY level), written to a temp folder |
| ``move`` | C-MOVE of it by DCMTK's ``movescu`` to a ``storescp`` this script starts (``--move-port``) |
| ``store-big``, ``get-big``, ``move-big`` | with ``--big``: the same with one study of ``--big-count`` (2,000, ~1 GB) |
| ``find`` | C-FIND at STUDY level over ``qido.py``'s archive (``--find-instances N``: ``qido.py --load N`` stored) |

A store counts as done when the server answers it: its count is checked afterwards with a C-FIND
(NumberOfStudyRelatedInstances). A retrieve counts the files that arrived. With ``--server-pid`` the RSS of that
process and its children is sampled every 50 ms (baseline, peak, growth) and its CPU time taken per scenario;
``--cpu-pid`` adds another process tree's CPU time (the embedded PostgreSQL is not a child of ``dicomweb serve``).

C-FIND sends each query ``--repeat`` times after ``--warmup`` unmeasured runs, one at a time over one association,
and times each from the request to its final status; the first response's latency is shown too. The parameters are
drawn from the stored part of ``qido.py``'s plan (same ``--seed`` and ``--scale``).

The calling AE title (``--aet``) needs the server's permission to find, get and move; the C-MOVE destination must be
known to it. ``--register-nodes URL`` registers both with this archive's ``PUT /api/dicom-nodes/{aet}``; Orthanc
takes them from its configuration (``orthanc.sh --dicom 4242 --modality AET@HOST:PORT``).

Examples::

    python benchmarks/dimse.py DICOMWEB@127.0.0.1:11112 --server-pid "$(pgrep -of 'dicomweb serve')" \\
        --register-nodes http://127.0.0.1:8080 --big
    python benchmarks/dimse.py DICOMWEB@127.0.0.1:11112 --scenarios find --find-instances 100000
    python benchmarks/dimse.py --compare ours.json orthanc.json
"""

from __future__ import annotations

import argparse
import calendar
import fnmatch
import json
import logging
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification  # type: ignore[attr-defined]
from pynetdicom.status import code_to_category

sys.path.insert(0, str(Path(__file__).parent))
import qido
from stow import CT_SIZE, MB, Result, ServerMonitor, UidSource, encode, make_dataset, new_series, noisy_pixels, phantom

DCMTK = Path("/usr/bin")  # DCMTK's tools, by path: the venv's bin has pynetdicom's storescu, findscu, echoscu
# DCMTK (3.6.2 and later) leaves Nagle's algorithm on unless TCP_NODELAY=1 (its FAQ #48). With it on, a message
# written in small pieces (a PDU header, then its body) waits for the peer's delayed ACK, ~40 ms on Linux: the
# clients here turn it off, so that only the server's own setting shows.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
CALLING_AET = "BENCH"
MOVE_AET = "BENCHSCP"
MIN_RUNS = 10  # measured runs of a C-FIND, whatever --budget says
MEMORY_LIMIT_MB = 150  # the server's RSS may grow by at most this much while it sends a --big study
TRANSFERS = ("store-a1", "store-a4", "get", "move")
BIG_TRANSFERS = ("store-big", "get-big", "move-big")
# What a workstation's study list asks for (the return keys of every C-FIND).
RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
    "StudyDescription", "ModalitiesInStudy", "ReferringPhysicianName", "StudyID", "StudyInstanceUID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)  # fmt: skip

logging.getLogger("pynetdicom").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Peer:
    """The server under test."""

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """``AET@HOST:PORT``."""
        aet, _, address = text.partition("@")
        host, _, port = address.rpartition(":")
        if not aet or not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not AET@HOST:PORT")
        return cls(aet, host, int(port))

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


# --------------------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class StudyFiles:
    """One new study of CT instances written as Part 10 files, in one folder per association."""

    study_instance_uid: str
    folders: list[Path]
    instances: int
    payload_bytes: int


def write_study(root: Path, count: int, parts: int, uids: UidSource, rng: np.random.Generator) -> StudyFiles:
    """Generate ``count`` CT instances of one new study (``stow.py``'s) into ``parts`` folders under ``root``, one
    at a time (a ``--big`` study never is in memory whole)."""
    series = new_series(uids, rng)
    base = phantom(CT_SIZE)
    folders = [root / f"part{n}" for n in range(parts)]
    for folder in folders:
        folder.mkdir(parents=True)
    size = 0
    for i in range(count):
        data = encode(make_dataset(series, uids.new(), i + 1, CT_SIZE, noisy_pixels(base, rng)))
        (folders[i * parts // count] / f"{i + 1:05d}.dcm").write_bytes(data)
        size += len(data)
    return StudyFiles(series.study_uid, folders, count, size)


# ------------------------------------------------------------------------------------------------------------ DIMSE


def client_ae(aet: str, *contexts: str) -> AE:
    ae = AE(ae_title=aet)
    for context in contexts:
        ae.add_requested_context(context)
    return ae


@contextmanager
def association(
    peer: Peer, aet: str, *contexts: str, handlers: list[EventHandlerType] | None = None
) -> Iterator[Association]:
    """A pynetdicom association with the server (with these event handlers bound), released on exit."""
    assoc = client_ae(aet, *contexts).associate(peer.host, peer.port, ae_title=peer.aet, evt_handlers=handlers)
    if not assoc.is_established:
        raise SystemExit(f"no association with {peer} as {aet} (rejected, aborted or not listening)")
    # Nagle's algorithm off (pynetdicom leaves it on), as for the DCMTK tools: else a request's second PDU (the
    # identifier after the command) waits for the server's delayed ACK.
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield assoc
    finally:
        assoc.release()


def study_count(peer: Peer, aet: str, study_instance_uid: str) -> int | None:
    """NumberOfStudyRelatedInstances of a study by C-FIND (None: not found); a refused C-FIND ends the run."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_instance_uid
    query.NumberOfStudyRelatedInstances = None
    count = None
    with association(peer, aet, StudyRootQueryRetrieveInformationModelFind) as assoc:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            category = code_to_category(status.Status) if status else "aborted"
            if category == "Pending" and identifier is not None:
                value = identifier.get("NumberOfStudyRelatedInstances")
                count = int(value) if value not in (None, "") else None
            elif category != "Success":
                comment = status.get("ErrorComment", "") if status else ""
                raise SystemExit(f"C-FIND as {aet} on {peer}: {category} {comment} (is {aet} a node allowed to find?)")
    return count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_all(commands: list[list[str]], logs: Path, timeout: float) -> tuple[float, list[str]]:
    """Start every command at once and wait for all: (seconds until the last ended, an error per failed command)."""
    logs.mkdir(parents=True, exist_ok=True)
    started: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    t0 = time.perf_counter()
    for n, command in enumerate(commands):
        log = logs / f"{Path(command[0]).name}-{n}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV)
            started.append((process, Path(command[0]).name, log))
    errors: list[str] = []
    for process, tool, log in started:
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            errors.append(f"{tool} exit {code}: {' | '.join(tail)}")
    return time.perf_counter() - t0, errors


class StoreScp:
    """DCMTK's storescp as the C-MOVE destination, writing what it receives into a folder."""

    def __init__(self, aet: str, port: int, folder: Path, logs: Path) -> None:
        self.aet, self.port, self.folder = aet, port, folder
        folder.mkdir(parents=True)
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "storescp.log", "wb") as out:
            self.process = subprocess.Popen(
                [str(DCMTK / "storescp"), "-aet", aet, "-od", str(folder), str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=DCMTK_ENV,
            )
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if self.process.poll() is not None:
                raise SystemExit(f"storescp exited ({self.process.returncode}); see {logs / 'storescp.log'}")
            time.sleep(0.05)
        raise SystemExit(f"storescp does not listen on port {port}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def received(folder: Path) -> int:
    """How many files arrived in ``folder``; removes them."""
    files = [p for p in folder.iterdir() if p.is_file()]
    for path in files:
        path.unlink()
    return len(files)


# ---------------------------------------------------------------------------------------------------------- transfers


class Transfers:
    """Runs the C-STORE, C-GET and C-MOVE scenarios against one server, sampling its memory and CPU."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.peer: Peer = args.peer
        self.aet: str = args.aet
        self.work = work
        self.logs = Path(args.logs) if args.logs else work / "logs"  # the DCMTK tools' output, one file per run
        self.uids = UidSource()
        self.rng = np.random.default_rng(args.seed)
        self.monitor = ServerMonitor(args.server_pid) if args.server_pid else None
        self.cpu_monitors = [ServerMonitor(pid) for pid in args.cpu_pid]
        self.scp: StoreScp | None = None
        self.results: list[Result] = []

    def cpu(self) -> float:
        monitors = [m for m in (self.monitor, *self.cpu_monitors) if m is not None]
        return sum(m.cpu_seconds() for m in monitors)

    def measure(self, name: str, study: StudyFiles, associations: int, action: Callable[[], list[str]]) -> Result:
        """Time ``action`` (-> errors) with the server's RSS and CPU around it; no failure counted yet."""
        base = self.monitor.reset() if self.monitor else None
        cpu0 = self.cpu()
        t0 = time.perf_counter()
        errors = action()
        result = Result(name, study.instances, associations, 0, time.perf_counter() - t0, study.payload_bytes)
        result.errors = errors
        if self.monitor:
            result.rss_base = base
            result.rss_peak = max(self.monitor.peak, self.monitor.sample())
            result.server_cpu = self.cpu() - cpu0
        return result

    def done(self, result: Result, completed: int, what: str) -> None:
        """Count the instances that did not get through, print and keep the result."""
        result.failed = result.instances - completed
        if result.failed and not result.errors:
            result.errors.append(f"{completed} of {result.instances} instances {what}")
        self.results.append(result)
        status = f"{result.failed} FAILED: {result.errors[0]}" if result.failed else "ok"
        grow = ""
        if result.rss_peak is not None and result.rss_base is not None:
            grow = f", server RSS +{(result.rss_peak - result.rss_base) / MB:.0f} MB"
        took = f"{result.instances} instances in {result.seconds:.2f} s ({result.rate:.1f}/s)"
        print(f"  {result.scenario}: {took}{grow}, {status}", flush=True)

    def store(self, name: str, count: int, associations: int, timed: bool = True) -> StudyFiles:
        """Write a new study and send it with ``associations`` storescu at once."""
        study = write_study(self.work / name, count, associations, self.uids, self.rng)
        commands = [
            [str(DCMTK / "storescu"), "-aet", self.aet, "-aec", self.peer.aet, "+sd",
             self.peer.host, str(self.peer.port), str(folder)]
            for folder in study.folders
        ]  # fmt: skip

        def action() -> list[str]:
            return run_all(commands, self.logs / name, self.args.timeout)[1]

        result = self.measure(name, study, associations, action)
        # What was stored is counted after the storescu runs, out of the time.
        stored = study_count(self.peer, self.aet, study.study_instance_uid) or 0
        if timed:
            self.done(result, stored, "found stored")
        elif stored != study.instances:
            raise SystemExit(f"{name}: {stored} of {study.instances} instances found stored ({result.errors})")
        for folder in study.folders:
            shutil.rmtree(folder)
        return study

    def get(self, name: str, study: StudyFiles) -> None:
        """C-GET the study with getscu into a temp folder."""
        folder = self.work / name
        folder.mkdir()
        command = [
            str(DCMTK / "getscu"), "-S", "-aet", self.aet, "-aec", self.peer.aet, "-od", str(folder),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.study_instance_uid}",
            self.peer.host, str(self.peer.port),
        ]  # fmt: skip

        def action() -> list[str]:
            return run_all([command], self.logs / name, self.args.timeout)[1]

        self.done(self.measure(name, study, 1, action), received(folder), "received")
        shutil.rmtree(folder)

    def move(self, name: str, study: StudyFiles) -> None:
        """C-MOVE the study with movescu to the storescp destination."""
        if self.scp is None:
            port = self.args.move_port or free_port()
            self.scp = StoreScp(self.args.move_aet, port, self.work / "storescp", self.logs)
        scp = self.scp
        command = [
            str(DCMTK / "movescu"), "-S", "-aet", self.aet, "-aec", self.peer.aet, "-aem", scp.aet,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.study_instance_uid}",
            self.peer.host, str(self.peer.port),
        ]  # fmt: skip

        def action() -> list[str]:
            return run_all([command], self.logs / name, self.args.timeout)[1]

        self.done(self.measure(name, study, 1, action), received(scp.folder), "received")

    def run(self, names: Sequence[str]) -> None:
        """The selected scenarios in order; a retrieve needs its study, stored untimed when its store is not run."""
        if self.monitor:
            self.monitor.start()
        studies: dict[bool, StudyFiles] = {}  # by big or not
        try:
            for name in names:
                big = name.endswith("-big")
                count = self.args.big_count if big else self.args.count
                if name.startswith("store"):
                    study = self.store(name, count, 4 if name == "store-a4" else 1)
                    if name != "store-a4":
                        studies[big] = study
                    continue
                if big not in studies:
                    print(f"  ({name}: storing a study of {count} instances first, not timed)", flush=True)
                    studies[big] = self.store(f"setup-{count}", count, 1, timed=False)
                (self.get if name.startswith("get") else self.move)(name, studies[big])
        finally:
            if self.monitor:
                self.monitor.stop()
            if self.scp:
                self.scp.stop()


# -------------------------------------------------------------------------------------------------------------- C-FIND


@dataclass
class FindStats:
    """The measured runs of one query type."""

    name: str
    example: str
    latencies: list[float] = field(default_factory=list)  # seconds, to the final status
    first: list[float] = field(default_factory=list)  # seconds, to the first pending response (if any)
    results: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @staticmethod
    def percentile(values: Sequence[float], p: float) -> float:
        """The ``p``-th percentile in ms (nearest rank)."""
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "example": self.example,
            "n": len(self.latencies),
            "p50_ms": self.percentile(self.latencies, 50) if self.latencies else None,
            "p95_ms": self.percentile(self.latencies, 95) if self.latencies else None,
            "max_ms": max(self.latencies) * 1000 if self.latencies else None,
            "first_p50_ms": self.percentile(self.first, 50) if self.first else None,
            "results": self.results,
            "errors": self.errors[:5],
        }


def study_query(**keys: str) -> Dataset:
    """A STUDY level identifier: the matching ``keys`` and every return key, UTF-8 declared when a value needs it."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(query, keyword, None)
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    if not all(value.isascii() for value in keys.values()):
        query.SpecificCharacterSet = "ISO_IR 192"
    return query


def month(rng: random.Random) -> str:
    """A StudyDate range of one month in the plan's years."""
    year, number = rng.randrange(qido.FIRST_DAY.year, qido.LAST_DAY.year + 1), rng.randrange(1, 13)
    if (year, number) > (qido.LAST_DAY.year, qido.LAST_DAY.month):
        year -= 1
    last = calendar.monthrange(year, number)[1]
    return f"{year}{number:02d}01-{year}{number:02d}{last:02d}"


def find_table(queries: qido.Queries) -> list[tuple[str, Callable[[random.Random], Dataset]]]:
    """The C-FIND query types (qido.py's study list filters), each a function of a random generator."""
    plan = queries.plan

    def fragment(rng: random.Random) -> Dataset:
        family = queries.some_family(rng)
        n = min(len(family), rng.choice((3, 4)))
        at = rng.randrange(len(family) - n + 1)
        return study_query(PatientName=f"*{family[at : at + n]}*")

    def patient_id(rng: random.Random) -> Dataset:
        return study_query(PatientID=plan.patient(rng.randrange(queries.patients)).patient_id)

    return [
        ("PatientName=*frag*", fragment),
        ("PatientName=prefix*", lambda rng: study_query(PatientName=f"{queries.some_family(rng)[:4]}*")),
        ("PatientID", patient_id),
        ("StudyDate one month", lambda rng: study_query(StudyDate=month(rng))),
        ("AccessionNumber", lambda rng: study_query(AccessionNumber=queries.some_study(rng).accession)),
        ("ModalitiesInStudy=MR", lambda rng: study_query(ModalitiesInStudy="MR")),
        ("ModalitiesInStudy=MR, one month", lambda rng: study_query(ModalitiesInStudy="MR", StudyDate=month(rng))),
    ]


def describe(query: Dataset) -> str:
    """The matching keys of an identifier."""
    return "&".join(f"{e.keyword}={e.value}" for e in query if e.value not in (None, "") and e.keyword in RETURN_KEYS)


def run_finds(peer: Peer, aet: str, queries: qido.Queries, args: argparse.Namespace) -> list[FindStats]:
    """Each query type ``--warmup`` times unmeasured, then ``--repeat`` times (fewer, at least MIN_RUNS, once its
    runs took ``--budget`` seconds: a query answering every MR study takes seconds), one at a time on one
    association."""
    out: list[FindStats] = []
    model = StudyRootQueryRetrieveInformationModelFind
    with association(peer, aet, model) as assoc:
        for name, make in find_table(queries):
            # The measured runs draw from their own generator: every server gets the same queries.
            rng, warmup_rng = random.Random(f"{args.seed}/dimse/{name}"), random.Random(f"{args.seed}/warmup/{name}")
            stats = FindStats(name, describe(make(random.Random(0))))
            warmup, runs = args.warmup, 0
            while runs < args.repeat and (runs < MIN_RUNS or sum(stats.latencies) < args.budget):
                query = make(warmup_rng if warmup else rng)
                matches, first, final = 0, None, None
                t0 = time.perf_counter()
                for status, _ in assoc.send_c_find(query, model):
                    category = code_to_category(status.Status) if status else "aborted"
                    if category == "Pending":
                        matches += 1
                        first = first if first is not None else time.perf_counter() - t0
                        continue
                    final = category
                elapsed = time.perf_counter() - t0
                if final != "Success":
                    stats.errors.append(f"{describe(query)}: {final or 'no final status'}")
                    if not assoc.is_established:
                        raise SystemExit(f"C-FIND: the association ended ({stats.errors[-1]})")
                    runs += 1
                    continue
                if warmup:
                    warmup = 0 if elapsed > args.budget / 20 else warmup - 1  # a slow query: warm enough
                    continue
                runs += 1
                stats.latencies.append(elapsed)
                stats.results.append(matches)
                if first is not None:
                    stats.first.append(first)
            p50 = stats.percentile(stats.latencies, 50) if stats.latencies else 0.0
            errors = f" ({len(stats.errors)} errors: {stats.errors[0]})" if stats.errors else ""
            print(f"  {name}: p50 {p50:.1f} ms{errors}", flush=True)
            out.append(stats)
    return out


# ------------------------------------------------------------------------------------------------------------- reports


def grow_mb(r: dict[str, Any]) -> float | None:
    return None if r["rss_peak"] is None or r["rss_base"] is None else (r["rss_peak"] - r["rss_base"]) / MB


def mb(value: float | None, digits: int = 0) -> str:
    """A figure or '-'."""
    return "-" if value is None else f"{value:.{digits}f}"


def print_transfers(rows: Sequence[dict[str, Any]]) -> None:
    header = (
        f"{'scenario':<10} {'inst':>5} {'assoc':>5} {'fail':>5} {'seconds':>8} {'inst/s':>8} {'MB/s':>7} "
        f"{'RSS MB':>7} {'peak MB':>8} {'+MB':>6} {'srv CPU s':>9} {'ms/inst':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        base = None if r["rss_base"] is None else r["rss_base"] / MB
        peak = None if r["rss_peak"] is None else r["rss_peak"] / MB
        cpu = r["server_cpu"]
        per_instance = None if cpu is None else cpu / r["instances"] * 1000
        lines.append(
            f"{r['scenario']:<10} {r['instances']:>5} {r['requests']:>5} {r['failed']:>5} {r['seconds']:>8.2f} "
            f"{r['rate']:>8.1f} {r['mbps']:>7.1f} {mb(base):>7} {mb(peak):>8} {mb(grow_mb(r)):>6} "
            f"{mb(cpu, 1):>9} {mb(per_instance, 2):>8}"
        )
    print("\n".join(lines))
    for r in rows:
        grow = grow_mb(r)
        if r["scenario"] in ("get-big", "move-big") and grow is not None:
            verdict = "within" if grow < MEMORY_LIMIT_MB else "ABOVE"
            print(f"{r['scenario']}: server RSS +{grow:.0f} MB while sending {r['instances']} instances: {verdict} "
                  f"the {MEMORY_LIMIT_MB} MB bound")  # fmt: skip
    for r in rows:
        for error in r["errors"][:3]:
            print(f"{r['scenario']}: {error}")


def print_finds(rows: Sequence[dict[str, Any]]) -> None:
    header = (
        f"{'query':<32} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'1st p50':>8} "
        f"{'results (min/median/max)':>24}  example"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if not r["n"]:
            lines.append(f"{r['name']:<32} {0:>4} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>24}  {r['example']}")
            continue
        results = f"{min(r['results'])}/{statistics.median(r['results']):g}/{max(r['results'])}"
        first = "-" if r["first_p50_ms"] is None else f"{r['first_p50_ms']:.1f}"
        lines.append(
            f"{r['name']:<32} {r['n']:>4} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} {first:>8} "
            f"{results:>24}  {r['example']}"
        )
    print("\n".join(lines))


def ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if not ours or not theirs else f"{ours / theirs:.2f}"


def print_comparison(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Side by side: rates (ratio > 1: the first server is faster), memory growth, CPU; C-FIND p50/p95."""
    la, lb = a["label"], b["label"]
    theirs = {r["scenario"]: r for r in b.get("transfers", [])}
    rows = [(r, theirs[r["scenario"]]) for r in a.get("transfers", []) if r["scenario"] in theirs]
    if rows:
        print(
            f"{'scenario':<10} {la + ' inst/s':>15} {lb + ' inst/s':>15} {'ratio':>6} {la + ' MB/s':>13} "
            f"{lb + ' MB/s':>13} {la + ' +MB':>10} {lb + ' +MB':>10} {la + ' CPU s':>11} {lb + ' CPU s':>11}"
        )
        for x, y in rows:
            print(
                f"{x['scenario']:<10} {x['rate']:>15.1f} {y['rate']:>15.1f} {ratio(x['rate'], y['rate']):>6} "
                f"{x['mbps']:>13.1f} {y['mbps']:>13.1f} {mb(grow_mb(x)):>10} {mb(grow_mb(y)):>10} "
                f"{mb(x['server_cpu'], 1):>11} {mb(y['server_cpu'], 1):>11}"
            )
    theirs_q = {r["name"]: r for r in b.get("queries", [])}
    qrows = [(r, theirs_q[r["name"]]) for r in a.get("queries", []) if r["name"] in theirs_q]
    if qrows:
        print()
        print(f"{'query':<32} {la + ' p50':>12} {la + ' p95':>12} {lb + ' p50':>12} {lb + ' p95':>12} "
              f"{'p95 ' + lb + '/' + la:>14} {'results ' + la:>12} {'results ' + lb:>12}")  # fmt: skip

        for x, y in qrows:
            res = [f"{statistics.median(r['results']):g}" if r["results"] else "-" for r in (x, y)]
            print(
                f"{x['name']:<32} {mb(x['p50_ms'], 1):>12} {mb(x['p95_ms'], 1):>12} {mb(y['p50_ms'], 1):>12} "
                f"{mb(y['p95_ms'], 1):>12} {ratio(y['p95_ms'], x['p95_ms']):>14} {res[0]:>12} {res[1]:>12}"
            )


# ------------------------------------------------------------------------------------------------------------- main


def register_nodes(url: str, peer: Peer, aet: str, move_aet: str, move_port: int) -> None:
    """This archive's DICOM nodes: the calling AE title may find, get and move, the destination is known."""
    nodes = {
        aet: {"host": "127.0.0.1", "port": 104, "permissions": ["store", "find", "get", "move"]},  # never called
        move_aet: {"host": "127.0.0.1", "port": move_port, "permissions": ["store"]},
    }
    with httpx.Client(base_url=url.rstrip("/"), timeout=30) as client:
        for node, body in nodes.items():
            response = client.put(f"/api/dicom-nodes/{node}", json=body)
            if response.status_code in (404, 405):
                print(f"register: {url} has no PUT /api/dicom-nodes ({response.status_code}): register the nodes "
                      f"another way")  # fmt: skip
                return
            response.raise_for_status()
    print(f"register: {aet} (store, find, get, move) and {move_aet} (127.0.0.1:{move_port}) on {peer.aet}")


def selected(patterns: str, big: bool) -> list[str]:
    names = [*TRANSFERS, *(BIG_TRANSFERS if big else ()), "find"]
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in wanted)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", metavar="AET@HOST:PORT", nargs="?", type=Peer.parse, help="the server under test")
    parser.add_argument("--label", default=None, help="the server's name in the tables and JSON (default: its AET)")
    parser.add_argument(
        "--scenarios",
        default="*",
        help=f"comma-separated names or globs of {', '.join([*TRANSFERS, *BIG_TRANSFERS, 'find'])} (default all)",
    )
    parser.add_argument("--count", type=int, default=500, help="CT instances of the store/get/move study (500)")
    parser.add_argument("--big", action="store_true", help="also store, get and move a study of --big-count")
    parser.add_argument("--big-count", type=int, default=2000, help="CT instances of the --big study (2000)")
    parser.add_argument("--aet", default=CALLING_AET, help=f"calling AE title (default {CALLING_AET})")
    parser.add_argument("--move-aet", default=MOVE_AET, help=f"AE title of the C-MOVE destination (default {MOVE_AET})")
    parser.add_argument("--move-port", type=int, default=0, help="port of the C-MOVE destination (default: a free one)")
    parser.add_argument(
        "--register-nodes", metavar="URL", default=None, help="register --aet and --move-aet at URL/api/dicom-nodes"
    )
    parser.add_argument("--server-pid", type=int, default=None, help="server PID to sample RSS and CPU (with children)")
    parser.add_argument(
        "--cpu-pid", type=int, action="append", default=[], help="add this process tree's CPU time (repeatable)"
    )
    parser.add_argument("--find-instances", type=int, default=None, help="instances qido.py --load stored (for find)")
    parser.add_argument("--scale", type=float, default=None, help="qido.py's --scale (default: N / 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="qido.py's --seed, and of the CT pixel noise (default 1)")
    parser.add_argument("--repeat", type=int, default=50, help="measured runs of each C-FIND (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs of each C-FIND first (default 3)")
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help=f"seconds of measured runs after which a C-FIND stops repeating (at least {MIN_RUNS} runs; default 60)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a DCMTK run may take (default 1800)")
    parser.add_argument("--logs", default=None, help="keep the DCMTK tools' output in this folder")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON to this file")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A.json", "B.json"), help="print two runs' --json side by side and exit"
    )
    args = parser.parse_args(argv)
    if not args.compare and args.peer is None:
        parser.error("give the server as AET@HOST:PORT (or --compare A.json B.json)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected scenarios and print the tables; exits 1 if any instance or query failed."""
    args = parse_args(argv)
    if args.compare:
        runs = [json.loads(Path(p).read_text()) for p in args.compare]
        print_comparison(*runs)
        return 0
    peer: Peer = args.peer
    names = selected(args.scenarios, args.big)
    if "find" in names and args.find_instances is None:
        if args.scenarios != "*":
            print("find needs --find-instances N (what qido.py --load N stored)")
            return 2
        names.remove("find")
    if not names:
        print(f"no scenario matches {args.scenarios!r}")
        return 2
    label = args.label or peer.aet
    report: dict[str, Any] = {"label": label, "peer": str(peer), "argv": sys.argv[1:], "date": f"{datetime.now():%F}"}

    with association(peer, args.aet, Verification) as assoc:
        status = assoc.send_c_echo()
        if not status or code_to_category(status.Status) != "Success":
            raise SystemExit(f"C-ECHO to {peer} failed")
    move_port = args.move_port or free_port()
    args.move_port = move_port
    if args.register_nodes:
        register_nodes(args.register_nodes, peer, args.aet, args.move_aet, move_port)

    failed = False
    transfers = [n for n in names if n != "find"]
    if transfers:
        with tempfile.TemporaryDirectory(prefix="dimse-bench-") as work:
            bench = Transfers(args, Path(work))
            print(f"{label} ({peer}): {', '.join(transfers)}; files in {work}")
            bench.run(transfers)
        rows = [{**asdict(r), "rate": r.rate, "mbps": r.mbps, "latencies": None} for r in bench.results]
        report["transfers"] = rows
        print()
        print_transfers(rows)
        failed = any(r.failed for r in bench.results)

    if "find" in names:
        scale = args.scale if args.scale is not None else args.find_instances / qido.FULL_INSTANCES
        plan = qido.Plan(args.seed, args.find_instances, scale)
        queries = qido.Queries(plan, args.find_instances)
        last = plan.study(queries.studies - 1)
        if study_count(peer, args.aet, last.uid) != last.count:
            print(f"find: study {last.number} of the plan (seed {args.seed}, scale {scale:g}) is not stored whole: "
                  f"load it first with qido.py --load {args.find_instances}")  # fmt: skip
            return 2
        print(
            f"{label}: C-FIND over {queries.studies:,} stored studies of {queries.patients:,} patients, "
            f"{args.repeat} runs each (fewer past {args.budget:g} s)"
        )
        rows = [s.summary() for s in run_finds(peer, args.aet, queries, args)]
        report["queries"] = rows
        report["find_instances"] = args.find_instances
        print()
        print_finds(rows)
        failed = failed or any(r["errors"] for r in rows)

    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
