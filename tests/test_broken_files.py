"""A corpus of broken files (issue 13): seeded mutants of every pydicom test file with pixel data (tests/mutations.py),
each sent by STOW-RS to a live server and, when stored, read back through every read path: the instance as stored
and transcoded, its series and study, frames, rendered and thumbnail resources, metadata and its bulk data, and
WADO-URI. A broken file may be refused (at store or at read time, with a 4xx in the one error shape), but never
answered with a 5xx or a body cut short: a multipart body ends with its closing delimiter, a DICOM part parses.

All failures are collected and reported together, each with the mutant's name (``from_name`` in
tests/mutations.py makes it again), the URL, the status and what was wrong, and the exception the server logged.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image

from .conftest import LiveServer, shared_server
from .data import multipart, readable_test_files, stow_headers
from .mutations import ORIGINAL, Mutant, corpus

SEED = 13
MUTANTS_PER_FILE = 3  # besides the original: 380 files, of which about 160 are stored; 30-50 s on two cores
MAX_BULKDATA = 4  # BulkDataURIs fetched per instance
# pydicom test files that are broken as they come: STOW-RS may refuse them (every other original is stored)
UNSTORABLE = {
    "MR_truncated.dcm": "cut short inside its pixel data",
    "meta_missing_tsyntax.dcm": "no SOP Class UID, and Pixel Data without Rows",
    "nested_priv_SQ.dcm": "no SOP Class UID, and Pixel Data without Rows",
    "badVR.dcm": "Number of Frames '1A', not an IS",
}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DICOM = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'
RETRIEVE_URL = re.compile(r"/studies/([^/]+)/series/([^/]+)/instances/([^/]+)$")


def pixel_files() -> list[Path]:
    """The pydicom test files that pydicom reads and that have pixel data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [p for p in readable_test_files() if any(k in pydicom.dcmread(p) for k in PIXEL_KEYWORDS)]


class ServerLog(logging.Handler):
    """The log records of the server (it runs in this process), to name the exception behind a failure."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.named: set[int] = set()
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.records.append(record)

    def mark(self) -> int:
        with self.guard:
            return len(self.records)

    def exception_since(self, mark: int) -> str | None:
        """The first exception logged since ``mark`` and not named before: its type, message and where it was
        raised. (uvicorn logs an exception again after the 500 went out, that is during the next request.)"""
        with self.guard:
            records = self.records[mark:]
        for record in records:
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None and id(exc) not in self.named:
                self.named.add(id(exc))  # the records keep the exception alive: its id stays its own
                return describe(exc)
        return None


REMOTE_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def describe(exc: BaseException) -> str:
    """``Type: message`` at the innermost frame of the server (dicomweb/) and the innermost frame of all; for an
    exception from the CPU process pool, the frames of the worker's traceback."""
    remote = exc.__cause__
    if type(remote).__name__ == "_RemoteTraceback":  # concurrent.futures.process
        frames = [(file, name, int(line)) for file, line, name in REMOTE_FRAME.findall(str(remote))]
    else:
        frames = [(f.filename, f.name, f.lineno or 0) for f in traceback.extract_tb(exc.__traceback__)]
    ours = [f for f in frames if "/dicomweb/" in f[0]]
    shown = ours[-1:] + [f for f in frames[-1:] if not ours or f != ours[-1]]
    where = [f"{short_path(file)}:{name}:{line}" for file, name, line in shown]
    message = str(exc).replace("\n", " ")[:300]
    return f"{type(exc).__name__}: {message} at {' <- '.join(reversed(where))}"


def short_path(file: str) -> str:
    """dicomweb/wado.py, pydicom/encaps.py: from the package on."""
    if "/dicomweb/" in file:
        return "dicomweb/" + file.rsplit("/dicomweb/", 1)[1]
    return file.rsplit("site-packages/", 1)[-1]


@dataclass(frozen=True)
class Stored:
    """A mutant the server stored, and the UIDs it stored it under."""

    mutant: Mutant
    study: str
    series: str
    sop: str

    @property
    def instance(self) -> str:
        return f"studies/{self.study}/series/{self.series}/instances/{self.sop}"


@dataclass
class Failure:
    """A wrong answer: to which mutant (name and what was done to it), for which request, and why."""

    mutant: Mutant
    url: str
    status: int | None  # None: no complete answer
    problem: str
    cause: str | None

    def __str__(self) -> str:
        status = "cut" if self.status is None else str(self.status)
        text = f"{self.mutant.name} ({self.mutant.detail}) {self.url} -> {status}: {self.problem}"
        return text + (f"\n      server: {self.cause}" if self.cause else "")


@dataclass
class Corpus:
    """The module's server, the mutants sent to it, those stored, and what went wrong while storing."""

    server: LiveServer
    log: ServerLog
    mutants: list[Mutant]
    stored: list[Stored]
    store_failures: list[Failure] = field(default_factory=list)


@pytest.fixture(scope="module")
def broken(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    log = ServerLog()
    root = logging.getLogger()
    root.addHandler(log)
    try:
        with shared_server(postgres_url, tmp_path_factory.mktemp("broken")) as server:
            mutants = list(corpus(pixel_files(), MUTANTS_PER_FILE, SEED))
            found = Corpus(server, log, mutants, [])
            for mutant in mutants:
                store(found, mutant)
            yield found
    finally:
        root.removeHandler(log)


def store(found: Corpus, mutant: Mutant) -> None:
    """STOW one mutant on a connection of its own; note where it was stored, or why the answer is wrong."""
    url = found.server.dicomweb + "/studies"
    mark = found.log.mark()
    try:
        response = httpx.post(url, content=multipart([mutant.data]), headers=stow_headers(), timeout=60)
    except httpx.HTTPError as exc:
        found.store_failures.append(Failure(mutant, "POST /studies", None, repr(exc), cause(found, mark)))
        return
    status = response.status_code
    if status >= 500:
        problem = f"server error: {response.text[:200]}"
        found.store_failures.append(Failure(mutant, "POST /studies", status, problem, cause(found, mark)))
        return
    if status == 409:  # none stored: the Store Instances Response says why (PS3.18 §10.5.3)
        return
    if status >= 400:
        problem = error_shape(Answer(status, response.headers, response.content, None))
        if problem:
            found.store_failures.append(Failure(mutant, "POST /studies", status, problem, None))
        return
    for item in response.json().get("00081199", {}).get("Value", []):
        match = RETRIEVE_URL.search(item["00081190"]["Value"][0])
        assert match, item
        found.stored.append(Stored(mutant, *match.groups()))


def cause(found: Corpus, mark: int, expected: bool = True) -> str | None:
    """The server's exception for the request that began at ``mark``: logged before the 500 or the cut, or, by
    uvicorn only, just after; waited for a moment when a 5xx or a cut makes one ``expected``."""
    for _ in range(20 if expected else 1):
        exception = found.log.exception_since(mark)
        if exception is not None:
            return exception
        time.sleep(0.01)
    return None


@dataclass
class Answer:
    """A response read to its end, or what interrupted it."""

    status: int
    headers: httpx.Headers
    body: bytes
    cut: str | None  # the exception that ended the body early, or the Content-Length shortfall


class Reader:
    """GETs resources of stored mutants and collects every wrong answer as a Failure."""

    def __init__(self, found: Corpus) -> None:
        self.found = found
        self.client = httpx.Client(timeout=60)
        self.failures: list[Failure] = []
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def get(self, stored: Stored, path: str, accept: str | None = None) -> Answer | None:
        """GET ``path`` (under the DICOMweb root, or an absolute URL) and check the answer; None if it failed."""
        url = path if path.startswith("http") else f"{self.found.server.dicomweb}/{path}"
        shown = "GET " + shorten(url, stored) + (f" [Accept: {accept}]" if accept else "")
        headers = {"accept": accept} if accept else {}
        mark = self.found.log.mark()
        self.requests += 1
        answer = fetch(self.client, url, headers)
        problems = check(answer, stored)
        if problems:
            status = None if answer.cut else answer.status
            server_error = status is None or status >= 500
            reason = cause(self.found, mark, expected=server_error)
            self.failures.append(Failure(stored.mutant, shown, status, problems, reason))
            if server_error:  # the server may have closed the connection after its answer: start afresh
                self.client.close()
                self.client = httpx.Client(timeout=60)
            return None
        return answer


def fetch(client: httpx.Client, url: str, headers: dict[str, str]) -> Answer:
    """Stream the whole body: a connection cut mid-body raises while reading, a short body shows against
    Content-Length. (The server compresses nothing: the raw bytes are the body.)"""
    try:
        with client.stream("GET", url, headers=headers) as response:
            chunks: list[bytes] = []
            cut = None
            try:
                for chunk in response.iter_raw():
                    chunks.append(chunk)
            except httpx.HTTPError as exc:
                cut = f"body cut after {sum(map(len, chunks))} bytes: {type(exc).__name__}: {exc}"
            body = b"".join(chunks)
            declared = response.headers.get("content-length")
            if cut is None and declared is not None and int(declared) != len(body):
                cut = f"Content-Length {declared} but {len(body)} bytes"
            return Answer(response.status_code, response.headers, body, cut)
    except httpx.HTTPError as exc:  # not even a status line
        return Answer(0, httpx.Headers(), b"", f"no answer: {type(exc).__name__}: {exc}")


def shorten(url: str, stored: Stored) -> str:
    """The URL with the root and the mutant's UIDs abbreviated, for the failure list."""
    path = url.split("/dicomweb", 1)[-1]
    for uid, name in ((stored.sop, "{I}"), (stored.series, "{E}"), (stored.study, "{S}")):
        path = path.replace(uid, name)
    return path


def check(answer: Answer, stored: Stored) -> str:
    """What is wrong with the answer: a cut body, a 5xx, a 4xx not in the error shape, a 2xx body that is not what
    its Content-Type says (multipart framing, DICOM parts that do not parse, an image that does not decode)."""
    if answer.cut:
        return answer.cut
    if answer.status >= 500:
        return f"server error: {answer.body[:200]!r}"
    content_type = answer.headers.get("content-type", "")
    if answer.status >= 400:
        return error_shape(answer)
    if answer.status == 204 or not answer.body:
        return "" if answer.status == 204 else f"{answer.status} with an empty body"
    try:
        if content_type.startswith("multipart/related"):
            return multipart_problems(answer.body, content_type, stored)
        return part_problems(content_type, answer.body, stored, rendered=True)  # rendered, thumbnail, WADO-URI
    except Exception as exc:  # the body is not what it claims to be
        return f"{content_type} body does not parse: {type(exc).__name__}: {exc}"


def error_shape(answer: Answer) -> str:
    """PS3.18 leaves the body of an error open; ours is always {"status", "error", "detail"} (errors.py)."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return f"error body is not JSON ({answer.headers.get('content-type')}): {answer.body[:200]!r}"
    if not isinstance(body, dict) or not {"status", "error", "detail"} <= set(body):
        return f"error body not in the error shape: {answer.body[:200]!r}"
    if body["status"] != answer.status:
        return f"error body says status {body['status']}"
    return ""


BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?')


def multipart_problems(body: bytes, content_type: str, stored: Stored) -> str:
    """RFC 2046 §5.1.1: parts separated by CRLF--boundary, the body closed by --boundary--; each part's head has a
    Content-Type and its content parses as that type."""
    match = BOUNDARY.search(content_type)
    if match is None:
        return f"no boundary in {content_type}"
    delimiter = b"--" + match.group(1).encode()
    trimmed = body.rstrip(b"\r\n")
    if not trimmed.endswith(delimiter + b"--"):
        return f"multipart body of {len(body)} bytes does not end with its closing delimiter: {body[-60:]!r}"
    inner = trimmed[: -len(delimiter) - 2]
    if not inner:
        return ""  # no parts
    if not inner.startswith(delimiter) or not inner.endswith(b"\r\n"):
        return f"multipart body does not start with its delimiter: {body[:60]!r}"
    sections = inner[len(delimiter) : -2].split(b"\r\n" + delimiter)
    problems = []
    for number, section in enumerate(sections, 1):
        head, separator, content = section.partition(b"\r\n\r\n")
        if not separator or not head.startswith(b"\r\n"):
            problems.append(f"part {number} has no head")
            continue
        lines = head.decode("latin-1").strip().split("\r\n")
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        if "content-type" not in fields:
            problems.append(f"part {number} has no Content-Type")
            continue
        problem = part_problems(fields["content-type"], content, stored)
        if problem:
            problems.append(f"part {number}: {problem}")
    return "; ".join(problems)


def part_problems(content_type: str, content: bytes, stored: Stored, rendered: bool = False) -> str:
    """A DICOM file that pydicom reads, of the instance asked for and in the transfer syntax the Content-Type
    names; a ``rendered`` image that decodes; JSON that parses. Other types are opaque bytes, and so are the
    frames of compressed pixel data (image/jpeg, image/jls...: a broken file's bitstream, as stored)."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/dicom":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a broken file returned as stored may well warn
            try:
                ds = pydicom.dcmread(io.BytesIO(content))
                sop, syntax = ds.SOPInstanceUID, ds.file_meta.get("TransferSyntaxUID")
            except Exception as exc:
                return f"application/dicom that pydicom does not read: {type(exc).__name__}: {exc}"
        if sop != stored.sop:
            return f"instance {sop}, not the one asked for"
        named = re.search(r'transfer-syntax="?([0-9.]+)', content_type)
        if named and named.group(1) != syntax:
            return f"Content-Type names transfer syntax {named.group(1)}, the file's meta {syntax}"
        return ""
    if media_type.startswith("image/") and rendered:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
        return ""
    if media_type.endswith("json"):
        json.loads(content)
    return ""


def bulkdata_uris(value: Any) -> Iterator[str]:
    """Every BulkDataURI in a DICOM JSON value, depth first."""
    if isinstance(value, dict):
        if isinstance(value.get("BulkDataURI"), str):
            yield value["BulkDataURI"]
        for child in value.values():
            yield from bulkdata_uris(child)
    elif isinstance(value, list):
        for child in value:
            yield from bulkdata_uris(child)


def number_of_frames(mutant: Mutant) -> int:
    """Number of Frames as the mutant says (1 when absent or not a number)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return max(1, int(pydicom.dcmread(io.BytesIO(mutant.data), stop_before_pixels=True).NumberOfFrames))
        except Exception:
            return 1


def report(failures: list[Failure], requests: int) -> str:
    """Every failure, one or two lines each, for the assertion message."""
    lines = [f"{len(failures)} wrong answers of {requests} requests:"]
    return "\n".join(lines + [f"  {failure}" for failure in failures])


@pytest.fixture
def reader(broken: Corpus) -> Iterator[Reader]:
    reader = Reader(broken)
    yield reader
    reader.close()


class TestStore:
    """STOW-RS of every mutant: stored or refused, never a 5xx."""

    def test_store(self, broken: Corpus) -> None:
        """Each mutant in a request of its own; the originals are stored, but for the few broken in themselves."""
        assert not broken.store_failures, report(broken.store_failures, len(broken.mutants))
        stored = {s.mutant.name for s in broken.stored}
        originals = {m.name.split(":")[0] for m in broken.mutants if m.name.endswith(f":{ORIGINAL}:{SEED}")}
        unstored = {name for name in originals if f"{name}:{ORIGINAL}:{SEED}" not in stored}
        assert unstored <= set(UNSTORABLE), unstored - set(UNSTORABLE)
        assert len(stored) > len(originals)  # and some mutants, to read back


class TestRetrieve:
    """WADO-RS instances, series and studies, as stored and transcoded (PS3.18 §10.4)."""

    def test_instances(self, broken: Corpus, reader: Reader) -> None:
        """Each stored mutant as stored and in the default syntax, single part and multipart, and its series and
        study (which hold it alone)."""
        for stored in broken.stored:
            series = f"studies/{stored.study}/series/{stored.series}"
            reader.get(stored, stored.instance, DICOM + "; transfer-syntax=*")
            reader.get(stored, stored.instance)
            reader.get(stored, stored.instance, "application/dicom")
            reader.get(stored, stored.instance, "application/dicom; transfer-syntax=*")
            reader.get(stored, series)
            reader.get(stored, f"studies/{stored.study}")
        assert not reader.failures, report(reader.failures, reader.requests)

    def test_frames(self, broken: Corpus, reader: Reader) -> None:
        """Frame 1, frames 1 and 2 of a multi-frame instance and its last frame (as Number of Frames says), in the
        default syntax and as stored."""
        for stored in broken.stored:
            frames = number_of_frames(stored.mutant)
            lists = ["1", "1,2"] if frames > 1 else ["1"]
            for frame_list in lists:
                path = f"{stored.instance}/frames/{frame_list}"
                reader.get(stored, path)
                reader.get(stored, path, OCTETS)
                reader.get(stored, path, OCTETS + "; transfer-syntax=*")
            if frames > 2:
                reader.get(stored, f"{stored.instance}/frames/{frames}")
        assert not reader.failures, report(reader.failures, reader.requests)


class TestRendered:
    """Rendered and thumbnail resources of instances, frames, series and studies (PS3.18 §10.4.1.1.3-4)."""

    def test_rendered(self, broken: Corpus, reader: Reader) -> None:
        """Each resource in the default media type: an image that decodes, or a 4xx in the error shape."""
        for stored in broken.stored:
            series = f"studies/{stored.study}/series/{stored.series}"
            for resource in (stored.instance, f"{stored.instance}/frames/1", series, f"studies/{stored.study}"):
                reader.get(stored, resource + "/rendered")
                reader.get(stored, resource + "/thumbnail")
        assert not reader.failures, report(reader.failures, reader.requests)


class TestMetadata:
    """Metadata of instances and series, and the bulk data its BulkDataURIs name (PS3.18 §10.4.1.1.2, §10.4.1.1.5)."""

    def test_metadata(self, broken: Corpus, reader: Reader) -> None:
        """DICOM JSON that parses; each BulkDataURI (the first few) answers."""
        for stored in broken.stored:
            metadata = reader.get(stored, stored.instance + "/metadata")
            reader.get(stored, f"studies/{stored.study}/series/{stored.series}/metadata")
            uris = list(bulkdata_uris(json.loads(metadata.body))) if metadata else []
            for uri in uris[:MAX_BULKDATA]:
                reader.get(stored, uri)
        assert not reader.failures, report(reader.failures, reader.requests)


class TestWadoUri:
    """WADO-URI (PS3.18 §9): the instance as a file (default syntax and as stored) and rendered (the default)."""

    def test_wado_uri(self, broken: Corpus, reader: Reader) -> None:
        """application/dicom, application/dicom with transferSyntax=* (Cornerstone's wadouri:), and image/jpeg."""
        for stored in broken.stored:
            query = f"wado?requestType=WADO&studyUID={stored.study}&seriesUID={stored.series}&objectUID={stored.sop}"
            reader.get(stored, query + "&contentType=application/dicom")
            reader.get(stored, query + "&contentType=application/dicom&transferSyntax=*")
            reader.get(stored, query)
        assert not reader.failures, report(reader.failures, reader.requests)
