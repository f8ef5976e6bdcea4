"""WADO-RS retrieve benchmark: metadata, instances, whole study, frames, and metadata latency under transcoding.

Stores one study of ``--instances`` synthetic CT instances (512x512 16-bit, ~525 KB each, made by stow.py's
generator) through STOW-RS, then measures, against any DICOMweb server (ours or Orthanc's plugin):

- study and series metadata (p50/p95),
- single-instance retrieve, one client, ``transfer-syntax=*`` (instances/s, p50), by httpx and, when ``wrk`` is
  installed, by wrk with one connection (the server's rate without the Python client's cost),
- whole-study retrieve with ``transfer-syntax=*`` by curl (MB/s), and, when Debian's ``nginx`` is installed, the
  same body served by nginx as a static file with sendfile (the issue's reference), alternating with the server,
- ``frames/1`` of every instance with 8 concurrent clients (frames/s), by Python threads and, when ``wrk`` is
  installed (Debian's ``wrk``), by wrk, whose C client does not cap the rate as Python's does (about 600/s here),
- study metadata p50 while 4 clients retrieve the study transcoded to Implicit VR Little Endian (the event loop
  must stay free while the transcoding runs in worker threads).

Example::

    python benchmarks/wado.py http://127.0.0.1:8080/dicomweb
    python benchmarks/wado.py http://127.0.0.1:8042/dicom-web     # Orthanc, the same data

side_by_side.py runs these scenarios against two servers in turn, on the same data (compare_wado.sh).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).parent))
from stow import CT_SIZE, UidSource, make_instances, multipart_body

# Orthanc gzips answers when asked (httpx asks by default) and we never do: compare uncompressed transfers.
NO_COMPRESSION = {"Accept-Encoding": "identity"}
ALL_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
IMPLICIT = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call: Callable[[], httpx.Response], runs: int) -> list[float]:
    """Milliseconds per call; every response must be 200."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{response.request.url}: {response.status_code} {response.text[:200]}")
    return times


@dataclass(frozen=True)
class Figure:
    """One measurement: the number compared between servers, which way is better, and how it reads."""

    value: float
    text: str
    higher_is_better: bool = True


Scenario = tuple[str, Callable[[], Figure]]  # a name, and the measurement (run once or several times)


def latency(times: list[float]) -> Figure:
    p50 = statistics.median(times)
    return Figure(p50, f"p50 {p50:.1f} ms, p95 {percentile(times, 0.95):.1f} ms", higher_is_better=False)


def rate(count: int, elapsed: float, times: list[float], unit: str) -> Figure:
    return Figure(count / elapsed, f"{count / elapsed:.0f} {unit}/s, p50 {statistics.median(times):.1f} ms")


def make_study(count: int) -> list[bytes]:
    """``count`` CT instances of one new study (made once, stored on every server compared)."""
    return make_instances(count, CT_SIZE, UidSource(), np.random.default_rng(7))


def store_study(base: str, instances: list[bytes]) -> tuple[str, str, list[str]]:
    """STOW the instances in batches of 50; returns the study's, series' and instances' UIDs."""
    headers = [pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True) for data in instances]
    boundary = b"wado-bench-boundary"
    with httpx.Client(timeout=600, headers=NO_COMPRESSION) as client:
        for start in range(0, len(instances), 50):
            body = multipart_body(instances[start : start + 50], boundary)
            response = client.post(
                f"{base}/studies",
                content=body,
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary.decode()}'},
            )
            if response.status_code != 200:
                raise SystemExit(f"STOW failed: {response.status_code} {response.text[:300]}")
    return str(headers[0].StudyInstanceUID), str(headers[0].SeriesInstanceUID), [str(h.SOPInstanceUID) for h in headers]


def scenarios(base: str, instances: list[bytes], runs: int = 20, seconds: float = 5.0) -> list[Scenario]:
    """Store the study on the server at ``base`` (not timed); the measurements of retrieving it."""
    started = time.perf_counter()
    study, series, sops = store_study(base, instances)
    print(f"{base}: stored {len(sops)} instances in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    client = httpx.Client(timeout=600, headers=NO_COMPRESSION)
    study_metadata = f"{base}/studies/{study}/metadata"
    series_metadata = f"{base}/studies/{study}/series/{series}/metadata"
    instance_urls = [f"{base}/studies/{study}/series/{series}/instances/{sop}" for sop in sops]
    frame_urls = [f"{url}/frames/1" for url in instance_urls]

    def metadata(url: str) -> Figure:
        client.get(url, headers={"Accept": "application/dicom+json"})
        return latency(timed(iter_call(client, [url] * runs, "application/dicom+json"), runs))

    def single_instances() -> Figure:
        start = time.perf_counter()
        times = timed(iter_call(client, instance_urls, ALL_AS_STORED), len(instance_urls))
        return rate(len(times), time.perf_counter() - start, times, "instances")

    def whole_study() -> Figure:
        study_url = f"{base}/studies/{study}"
        rates = [curl_rate(study_url, ALL_AS_STORED) for _ in range(RUNS)]  # one transfer is noisy: median of several
        reference = nginx_reference(study_url, rates) if shutil.which("nginx") else None
        median = statistics.median(rates)
        if reference is None:
            return Figure(median, f"median {median:.0f} MB/s, best {max(rates):.0f}")
        return Figure(median, f"median {median:.0f} MB/s: {median / reference:.0%} of nginx's {reference:.0f} MB/s")

    def metadata_under_transcodes() -> Figure:
        stop = threading.Event()
        statuses: set[int] = set()

        def transcode_load() -> None:
            with httpx.Client(timeout=600, headers=NO_COMPRESSION) as load:
                while not stop.is_set():
                    statuses.add(
                        load.get(f"{base}/studies/{study}/series/{series}", headers={"Accept": IMPLICIT}).status_code
                    )

        loaders = [threading.Thread(target=transcode_load) for _ in range(4)]
        for thread in loaders:
            thread.start()
        time.sleep(1.0)
        try:
            figure = latency(timed(iter_call(client, [study_metadata] * runs, "application/dicom+json"), runs))
        finally:
            stop.set()
            for thread in loaders:
                thread.join()
        return replace(figure, text=f"{figure.text} (transcode statuses {sorted(statuses)})")

    measured: list[Scenario] = [
        ("study metadata", lambda: metadata(study_metadata)),
        ("series metadata", lambda: metadata(series_metadata)),
        ("single instance, 1 client", single_instances),
    ]
    if shutil.which("wrk"):  # the same requests from a C client, one at a time: the server's rate, not Python's
        measured.append(
            ("single instance, wrk, 1 connection", lambda: wrk_rate(instance_urls, ALL_AS_STORED, 1, 4, "instances"))
        )
    measured += [
        ("whole study (curl)", whole_study),
        ("frames/1, 8 clients", lambda: rate(*concurrent_gets(frame_urls, FRAME_ACCEPT, 8, seconds), "frames")),
    ]
    if shutil.which("wrk"):
        measured.append(
            ("frames/1, 8 connections (wrk)", lambda: wrk_rate(frame_urls, FRAME_ACCEPT, 8, seconds, "frames"))
        )
    measured.append(("study metadata under 4 transcodes", metadata_under_transcodes))
    return measured


def run(measured: list[Scenario]) -> None:
    """Each measurement once, printed as it comes."""
    width = max(len(name) for name, _ in measured)
    for name, measure in measured:
        print(f"{name:<{width}}  {measure().text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--instances", type=int, default=500, help="CT instances in the study (default 500)")
    parser.add_argument("--runs", type=int, default=20, help="repetitions of each latency measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the concurrent frame scenario")
    args = parser.parse_args(argv)
    run(scenarios(args.base_url.rstrip("/"), make_study(args.instances), args.runs, args.seconds))
    return 0


RUNS = 7  # whole-study transfers per server


def curl_rate(url: str, accept: str | None = None) -> float:
    """MB/s of one GET by curl, its body thrown away."""
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]
    if accept is not None:
        command += ["-H", f"Accept: {accept}"]
    size, seconds = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    return int(size) / 1e6 / float(seconds)


NGINX_CONFIG = """
daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {work};
  server {{ listen 127.0.0.1:{port}; root {work}; }} }}
"""


def nginx_reference(study_url: str, rates: list[float]) -> float:
    """The study's multipart body, as the server sent it, served by nginx as a static file (sendfile on): its
    median rate (MB/s) over RUNS transfers, alternating with as many more of the server's own, added to ``rates``."""
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["curl", "-s", "-o", f"{work}/study", "-H", f"Accept: {ALL_AS_STORED}", study_url], check=True)
        port = 18090
        Path(work, "nginx.conf").write_text(NGINX_CONFIG.format(work=work, port=port))
        nginx = subprocess.Popen(["nginx", "-c", f"{work}/nginx.conf"], stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            reference = []
            for _ in range(RUNS):
                reference.append(curl_rate(f"http://127.0.0.1:{port}/study"))
                rates.append(curl_rate(study_url, ALL_AS_STORED))
        finally:
            nginx.terminate()
            nginx.wait()
    return statistics.median(reference)


WRK_SCRIPT = """
local paths, n = {}, 0
for line in io.lines(os.getenv("FRAME_PATHS")) do paths[#paths + 1] = line end
request = function()
  n = n % #paths + 1
  return wrk.format("GET", paths[n], {["Accept"] = os.getenv("FRAME_ACCEPT"), ["Accept-Encoding"] = "identity"})
end
response = function(status, headers, body)
  if status ~= 200 then io.stderr:write("status " .. status .. "\\n"); os.exit(1) end
end
"""


def wrk_rate(urls: list[str], accept: str, connections: int, seconds: float, unit: str) -> Figure:
    """wrk on up to 2 threads with ``connections`` keep-alive connections, round robin over the URLs."""
    with tempfile.TemporaryDirectory() as work:
        paths, script = Path(work) / "paths.txt", Path(work) / "frames.lua"
        parsed = [httpx.URL(url) for url in urls]
        paths.write_text("\n".join(u.raw_path.decode() for u in parsed) + "\n")
        script.write_text(WRK_SCRIPT)
        origin = f"{parsed[0].scheme}://{parsed[0].netloc.decode()}"
        run = subprocess.run(
            ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script),
             origin],
            env={**os.environ, "FRAME_PATHS": str(paths), "FRAME_ACCEPT": accept},
            capture_output=True, text=True,
        )  # fmt: skip
    per_second = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    p50 = re.search(r"50%\s+([\d.]+\w+)", run.stdout)
    if run.returncode != 0 or per_second is None or p50 is None:  # the script exits 1 on a status other than 200
        raise SystemExit(f"wrk: {(run.stderr.strip() or run.stdout).splitlines()[0]}")
    return Figure(float(per_second.group(1)), f"{float(per_second.group(1)):.0f} {unit}/s, p50 {p50.group(1)} (wrk)")


def iter_call(client: httpx.Client, urls: list[str], accept: str) -> Callable[[], httpx.Response]:
    pending = iter(urls)
    return lambda: client.get(next(pending), headers={"Accept": accept})


def concurrent_gets(urls: list[str], accept: str, clients: int, seconds: float) -> tuple[int, float, list[float]]:
    """GET the URLs round robin from ``clients`` threads for ``seconds``; (requests, elapsed, ms each)."""
    deadline = time.perf_counter() + seconds
    times: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> int:
        done = 0
        with httpx.Client(timeout=60, headers=NO_COMPRESSION) as client:
            index = offset
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = client.get(urls[index % len(urls)], headers={"Accept": accept})
                if response.status_code != 200:
                    raise SystemExit(f"{response.request.url}: {response.status_code}")
                with lock:
                    times.append((time.perf_counter() - start) * 1000)
                done += 1
                index += clients
        return done

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(worker, range(clients)))
    return total, time.perf_counter() - start, times


if __name__ == "__main__":
    raise SystemExit(main())
