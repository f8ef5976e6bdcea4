"""STOW-RS throughput and memory benchmark for a DICOMweb server.

Synthetic CT instances (512x512, 16-bit, ~520 KB) and small instances (64x64, ~9 KB) are generated in memory
with pydicom before each scenario (not timed), then POSTed to ``BASE_URL/studies`` as
``multipart/related; type="application/dicom"``, one instance per request or in batches, by 1, 4 and 8
concurrent clients. Every scenario uses a new study and fresh UIDs, so nothing is a duplicate.

With ``--server-pid`` the resident set size of the server (the process and all its children) is sampled every
50 ms and the baseline, peak and increase are reported per scenario, together with the server's CPU time.

``--big`` adds the memory scenario: ONE request carrying 2,000 CT instances (~1 GB), streamed from a generator
that encodes each part on the fly from a template dataset with new UIDs, so the client never holds the body.

Example::

    python benchmarks/stow.py http://127.0.0.1:8080/dicomweb --server-pid $(pgrep -f 'dicomweb serve') --big
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TextIO

import httpx
import numpy as np
import psutil
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

MB = 1_000_000
CT_SIZE = 512
SMALL_SIZE = 64
DEFAULT_CLIENTS = (1, 4, 8)
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root; generate_uid() appends digits to 64 characters
FIRST_NAMES = ("ANNA", "BERND", "CLARA", "DAVID", "EMMA", "FELIX", "GRETA", "HUGO", "IDA", "JONAS")
LAST_NAMES = ("MUELLER", "SCHMIDT", "DUBOIS", "ROSSI", "GARCIA", "NOWAK", "JANSEN", "SILVA", "KOWALSKI", "BERG")
BODY_PARTS = (("CHEST", "CT THORAX W/O CONTRAST"), ("ABDOMEN", "CT ABDOMEN PELVIS W CONTRAST"), ("HEAD", "CT HEAD"))


# --------------------------------------------------------------------------------------------------- data generation


class UidSource:
    """Makes unique 64-character UIDs with ``generate_uid``, deterministic for a given nonce and counter."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(16)
        self.counter = 0

    def new(self) -> str:
        """Return a fresh UID (always 64 characters, so encoded sizes do not depend on it)."""
        self.counter += 1
        return str(generate_uid(UID_PREFIX, entropy_srcs=[self.nonce, str(self.counter)]))


@dataclass(frozen=True)
class SeriesInfo:
    """Patient, study and series attributes shared by the instances of one scenario."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_uid: str
    series_uid: str
    frame_uid: str
    accession: str
    study_id: str
    study_date: str
    study_time: str
    body_part: str
    description: str


def new_series(uids: UidSource, rng: np.random.Generator) -> SeriesInfo:
    """Invent a patient with a new study holding one new CT series."""
    when = datetime(2024, 1, 1) + timedelta(minutes=int(rng.integers(0, 2 * 365 * 24 * 60)))
    birth = datetime(1940, 1, 1) + timedelta(days=int(rng.integers(0, 60 * 365)))
    body_part, description = BODY_PARTS[int(rng.integers(len(BODY_PARTS)))]
    return SeriesInfo(
        patient_name=f"{LAST_NAMES[int(rng.integers(10))]}^{FIRST_NAMES[int(rng.integers(10))]}",
        patient_id=f"PID{int(rng.integers(10**7, 10**8))}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=("F", "M")[int(rng.integers(2))],
        study_uid=uids.new(),
        series_uid=uids.new(),
        frame_uid=uids.new(),
        accession=f"ACC{int(rng.integers(10**8, 10**9))}",
        study_id=str(int(rng.integers(1, 10**5))),
        study_date=when.strftime("%Y%m%d"),
        study_time=when.strftime("%H%M%S"),
        body_part=body_part,
        description=description,
    )


def phantom(size: int) -> np.ndarray:
    """A body-like ellipse of soft tissue (stored value 1064, i.e. 40 HU) in air, as uint16."""
    y, x = np.ogrid[:size, :size]
    c = (size - 1) / 2
    inside = ((x - c) / (0.45 * size)) ** 2 + ((y - c) / (0.35 * size)) ** 2 <= 1.0
    return np.where(inside, 1064, 24).astype(np.uint16)


def noisy_pixels(base: np.ndarray, rng: np.random.Generator) -> bytes:
    """Return the phantom plus random noise as little-endian 16-bit pixel data."""
    noise = rng.integers(0, 96, size=base.shape, dtype=np.uint16)
    return (base + noise).astype("<u2").tobytes()


def make_dataset(series: SeriesInfo, sop_uid: str, number: int, size: int, pixels: bytes) -> Dataset:
    """Build one CT Image Storage instance, with File Meta Information, in Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = series.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = series.study_time
    ds.AccessionNumber = series.accession
    ds.Modality = "CT"
    ds.Manufacturer = "BENCH MEDICAL"
    ds.InstitutionName = "STOW BENCHMARK HOSPITAL"
    ds.ReferringPhysicianName = "WELBY^MARCUS"
    ds.StudyDescription = series.description
    ds.SeriesDescription = f"{series.body_part} 1.0mm"
    ds.ManufacturerModelName = "SYNTH-CT 64"
    ds.PatientName = series.patient_name
    ds.PatientID = series.patient_id
    ds.PatientBirthDate = series.birth_date
    ds.PatientSex = series.sex
    ds.BodyPartExamined = series.body_part
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = series.study_id
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = number
    ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-number:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = series.frame_uid
    ds.SliceLocation = f"{-number:.1f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.PixelSpacing = [f"{500 / size:.4f}", f"{500 / size:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = pixels
    return ds


def encode(ds: Dataset) -> bytes:
    """Serialise a dataset as a DICOM Part 10 file (preamble, File Meta Information, data set)."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_instances(count: int, size: int, uids: UidSource, rng: np.random.Generator) -> list[bytes]:
    """Generate ``count`` encoded instances of one new study/series with random-ish pixel data."""
    series = new_series(uids, rng)
    base = phantom(size)
    return [encode(make_dataset(series, uids.new(), i + 1, size, noisy_pixels(base, rng))) for i in range(count)]


# ----------------------------------------------------------------------------------------------------------- multipart


def part_head(boundary: bytes) -> bytes:
    """The delimiter and headers that precede each part of the multipart body."""
    return b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n"


def multipart_body(parts: Sequence[bytes], boundary: bytes) -> bytes:
    """Join DICOM files into one multipart/related body (one copy, via ``bytes.join``)."""
    head = part_head(boundary)
    chunks: list[bytes] = []
    for part in parts:
        chunks += (head, part, b"\r\n")
    chunks.append(b"--" + boundary + b"--\r\n")
    return b"".join(chunks)


def content_type(boundary: bytes) -> str:
    """The STOW-RS request Content-Type for ``boundary``."""
    return f'multipart/related; type="application/dicom"; boundary={boundary.decode()}'


# ------------------------------------------------------------------------------------------------------ RSS sampling


class ServerMonitor:
    """Samples the RSS of a process tree every ``interval`` seconds in a background thread, tracking the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.client_base = 0
        self.client_peak = 0
        self._me = psutil.Process()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        """Current RSS in bytes of the server process and all its children."""
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process tree so far."""
        total = 0.0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> int:
        """Take one sample now, update the peaks and return the server RSS."""
        rss = self.rss()
        mine = self._me.memory_info().rss
        with self._lock:
            self.peak = max(self.peak, rss)
            self.client_peak = max(self.client_peak, mine)
        return rss

    def reset(self) -> int:
        """Start a new measurement window; returns the baseline RSS."""
        rss = self.rss()
        with self._lock:
            self.peak = rss
            self.client_base = self.client_peak = self._me.memory_info().rss
        return rss

    def start(self) -> None:
        """Start the sampler thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampler thread."""
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------------------------ running


@dataclass
class Result:
    """Outcome of one scenario."""

    scenario: str
    instances: int
    requests: int
    failed: int
    seconds: float
    payload_bytes: int
    latencies: list[float] = field(default_factory=list, repr=False)
    rss_base: int | None = None
    rss_peak: int | None = None
    server_cpu: float | None = None
    client_base: int | None = None
    client_peak: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Instances stored per second (failures excluded)."""
        return (self.instances - self.failed) / self.seconds if self.seconds else 0.0

    @property
    def mbps(self) -> float:
        """Stored payload (DICOM bytes, failed instances excluded pro rata) per second, in MB/s."""
        if not self.seconds or not self.instances:
            return 0.0
        return self.payload_bytes * (self.instances - self.failed) / self.instances / MB / self.seconds


def failed_in(response: httpx.Response, sent: int) -> tuple[int, str | None]:
    """Count the instances a STOW-RS response reports as failed; any status but 200 fails the whole request."""
    if response.status_code != 200:
        return sent, f"HTTP {response.status_code}: {response.text[:200]!r}"
    if "json" not in response.headers.get("content-type", ""):
        return 0, None
    try:
        body = response.json()
    except ValueError:
        return 0, None
    failed = body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else []
    return len(failed), (f"{len(failed)} instances in FailedSOPSequence" if failed else None)


class Stow:
    """Shared settings for sending STOW-RS requests."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/studies"
        self.headers = {"Accept": "application/dicom+json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = httpx.Timeout(timeout, connect=10.0)

    def client(self) -> httpx.Client:
        """A keep-alive client for one thread."""
        return httpx.Client(headers=self.headers, timeout=self.timeout)

    def run(self, name: str, bodies: list[tuple[bytes, int, int]], clients: int) -> Result:
        """POST every ``(body, instances, payload bytes)`` with ``clients`` concurrent threads, each keep-alive."""
        result = Result(name, sum(b[1] for b in bodies), len(bodies), 0, 0.0, sum(b[2] for b in bodies))
        boundary_ct = content_type(BOUNDARY)
        lock = threading.Lock()
        next_index = iter(range(len(bodies)))
        barrier = threading.Barrier(clients + 1)

        def worker() -> None:
            with self.client() as client:
                barrier.wait()
                while True:
                    with lock:
                        i = next(next_index, None)
                    if i is None:
                        return
                    body, count, _ = bodies[i]
                    t0 = time.perf_counter()
                    try:
                        response = client.post(self.url, content=body, headers={"Content-Type": boundary_ct})
                        failed, error = failed_in(response, count)
                    except httpx.HTTPError as exc:
                        failed, error = count, f"{type(exc).__name__}: {exc}"
                    elapsed = time.perf_counter() - t0
                    with lock:
                        result.latencies.append(elapsed)
                        result.failed += failed
                        if error and len(result.errors) < 5:
                            result.errors.append(error)

        threads = [threading.Thread(target=worker, name=f"client-{n}") for n in range(clients)]
        for thread in threads:
            thread.start()
        barrier.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        result.seconds = time.perf_counter() - t0
        return result


BOUNDARY = b"stow-bench-" + secrets.token_hex(12).encode()


def requests_for(instances: list[bytes], batch: int) -> list[tuple[bytes, int, int]]:
    """Group instances into prebuilt multipart bodies of ``batch`` instances each."""
    out: list[tuple[bytes, int, int]] = []
    for i in range(0, len(instances), batch):
        chunk = instances[i : i + batch]
        out.append((multipart_body(chunk, BOUNDARY), len(chunk), sum(map(len, chunk))))
    return out


class BigBody:
    """A ~1 GB multipart body generated part by part from a template dataset; never held whole in memory."""

    def __init__(self, count: int, uids: UidSource, rng: np.random.Generator) -> None:
        self.count = count
        self.uids = uids
        self.series = new_series(uids, rng)
        self.template = make_dataset(self.series, uids.new(), 1, CT_SIZE, noisy_pixels(phantom(CT_SIZE), rng))
        self.head = part_head(BOUNDARY)
        self.tail = b"--" + BOUNDARY + b"--\r\n"
        self.payload_bytes = 0
        self.length = len(self.tail) + sum(len(self.head) + len(self.part(i)) + 2 for i in range(count))

    def part(self, i: int) -> bytes:
        """Encode instance ``i``: the template with its own SOP Instance UID, number and slice position."""
        uid = str(generate_uid(UID_PREFIX, entropy_srcs=[self.uids.nonce, "big", str(i)]))
        ds = self.template
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-(i + 1) * 0.5:.1f}"]
        ds.SliceLocation = f"{-(i + 1) * 0.5:.1f}"
        return encode(ds)

    def __iter__(self) -> Iterator[bytes]:
        self.payload_bytes = 0
        for i in range(self.count):
            data = self.part(i)
            self.payload_bytes += len(data)
            yield b"".join((self.head, data, b"\r\n"))
        yield self.tail


def run_big(stow: Stow, count: int, uids: UidSource, rng: np.random.Generator, chunked: bool) -> Result:
    """Send ONE streamed request with ``count`` CT instances."""
    body = BigBody(count, uids, rng)
    headers = {"Content-Type": content_type(BOUNDARY)}
    if not chunked:
        headers["Content-Length"] = str(body.length)
    result = Result(f"big-{count}", count, 1, 0, 0.0, 0)
    with stow.client() as client:
        t0 = time.perf_counter()
        try:
            response = client.post(stow.url, content=iter(body), headers=headers)
            result.failed, error = failed_in(response, count)
        except httpx.HTTPError as exc:
            result.failed, error = count, f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - t0
    result.latencies.append(result.seconds)
    result.payload_bytes = body.payload_bytes
    if error:
        result.errors.append(error)
    return result


# ------------------------------------------------------------------------------------------------------------ reports


def mb(value: int | None) -> str:
    """Format a byte count in MB, or '-'."""
    return "-" if value is None else f"{value / MB:.0f}"


def print_table(results: Sequence[Result], file: TextIO = sys.stdout) -> None:
    """Print one row per scenario."""
    header = (
        f"{'scenario':<18} {'inst':>6} {'fail':>5} {'seconds':>8} {'inst/s':>8} {'MB/s':>7} {'p50 ms':>8} "
        f"{'RSS MB':>7} {'peak MB':>8} {'+MB':>6} {'srv CPU s':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        grow = None if r.rss_peak is None or r.rss_base is None else r.rss_peak - r.rss_base
        cpu = "-" if r.server_cpu is None else f"{r.server_cpu:.1f}"
        p50 = statistics.median(r.latencies) * 1000 if r.latencies else 0.0
        lines.append(
            f"{r.scenario:<18} {r.instances:>6} {r.failed:>5} {r.seconds:>8.2f} {r.rate:>8.1f} {r.mbps:>7.1f} "
            f"{p50:>8.1f} {mb(r.rss_base):>7} {mb(r.rss_peak):>8} {mb(grow):>6} {cpu:>9}"
        )
    print("\n".join(lines), file=file)


# --------------------------------------------------------------------------------------------------------------- main


def scenario_names(clients: Sequence[int], batch: int) -> list[str]:
    """All regular scenario names in run order."""
    return [f"{kind}-{mode}-c{n}" for kind in ("ct", "small") for mode in ("single", f"batch{batch}") for n in clients]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", metavar="BASE_URL", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--count", type=int, default=200, help="CT instances per scenario (default 200)")
    parser.add_argument(
        "--small-count", type=int, default=None, help="small instances per scenario (default 5 x --count)"
    )
    parser.add_argument("--batch", type=int, default=50, help="instances per request in batch scenarios (default 50)")
    parser.add_argument(
        "--clients", default=",".join(map(str, DEFAULT_CLIENTS)), help="concurrency levels (default 1,4,8)"
    )
    parser.add_argument(
        "--scenarios",
        default="*",
        help="comma-separated names or globs, e.g. 'ct-*,small-single-c1' (default all; 'none' with --big)",
    )
    parser.add_argument("--big", action="store_true", help="also run ONE streamed request of --big-count CT instances")
    parser.add_argument("--big-count", type=int, default=2000, help="CT instances in the --big request (default 2000)")
    parser.add_argument("--chunked", action="store_true", help="stream --big with chunked encoding, no Content-Length")
    parser.add_argument("--server-pid", type=int, default=None, help="server PID to sample RSS (with children) from")
    parser.add_argument("--token", default=None, help="bearer token sent as 'Authorization: Bearer TOKEN'")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="seed for pixel data and patient attributes")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected scenarios and print the table; exits 1 if any instance failed."""
    args = parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    small_count = args.small_count if args.small_count is not None else 5 * args.count
    patterns = [p.strip() for p in args.scenarios.split(",") if p.strip()]
    names = [n for n in scenario_names(clients, args.batch) if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not names and not args.big:
        print(f"no scenario matches {args.scenarios!r}; known: {', '.join(scenario_names(clients, args.batch))}")
        return 2

    stow = Stow(args.base_url, args.token, args.timeout)
    uids = UidSource()
    rng = np.random.default_rng(args.seed)
    monitor = ServerMonitor(args.server_pid) if args.server_pid else None
    if monitor:
        monitor.start()
    results: list[Result] = []

    def measure(run: Result, cpu0: float) -> None:
        if monitor:
            run.rss_peak = max(monitor.peak, monitor.sample())
            run.client_base, run.client_peak = monitor.client_base, monitor.client_peak
            run.server_cpu = monitor.cpu_seconds() - cpu0
        results.append(run)
        status = f"{run.failed} FAILED: {run.errors[0]}" if run.failed else "ok"
        print(f"  {run.scenario}: {run.instances} instances in {run.seconds:.2f} s ({run.rate:.1f}/s) {status}")

    try:
        for name in names:
            kind, mode, conc = name.split("-")
            size, count = (CT_SIZE, args.count) if kind == "ct" else (SMALL_SIZE, small_count)
            instances = make_instances(count, size, uids, rng)
            bodies = requests_for(instances, 1 if mode == "single" else args.batch)
            del instances
            base = monitor.reset() if monitor else None
            cpu0 = monitor.cpu_seconds() if monitor else 0.0
            run = stow.run(name, bodies, int(conc[1:]))
            del bodies
            run.rss_base = base
            measure(run, cpu0)
        if args.big:
            print(f"  big: streaming {args.big_count} CT instances in one request ...")
            base = monitor.reset() if monitor else None
            cpu0 = monitor.cpu_seconds() if monitor else 0.0
            run = run_big(stow, args.big_count, uids, rng, args.chunked)
            run.rss_base = base
            measure(run, cpu0)
    finally:
        if monitor:
            monitor.stop()

    print()
    print_table(results)
    big = [r for r in results if r.scenario.startswith("big-")]
    for r in big:
        if r.client_peak is not None:
            print(
                f"{r.scenario}: {r.payload_bytes / MB:.0f} MB sent in one streamed request; "
                f"client (this process) RSS {mb(r.client_base)} MB, peak {mb(r.client_peak)} MB"
            )
    if args.json_path:
        with open(args.json_path, "w") as fh:
            rows = [{**asdict(r), "rate": r.rate, "mbps": r.mbps, "latencies": None} for r in results]
            json.dump({"base_url": args.base_url, "argv": sys.argv[1:], "results": rows}, fh, indent=2)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
