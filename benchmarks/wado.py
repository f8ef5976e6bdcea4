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
"""

from __future__ import annotations

import argparse
import concurrent.futures
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


def store_study(base: str, count: int) -> tuple[str, str, list[str]]:
    """STOW a new study of ``count`` CT instances in batches of 50; returns its UIDs."""
    instances = make_instances(count, CT_SIZE, UidSource(), np.random.default_rng(7))

    first = pydicom.dcmread(__import__("io").BytesIO(instances[0]), stop_before_pixels=True)
    sops = [
        str(pydicom.dcmread(__import__("io").BytesIO(i), stop_before_pixels=True).SOPInstanceUID) for i in instances
    ]
    boundary = b"wado-bench-boundary"
    with httpx.Client(timeout=600, headers=NO_COMPRESSION) as client:
        for start in range(0, count, 50):
            body = multipart_body(instances[start : start + 50], boundary)
            response = client.post(
                f"{base}/studies",
                content=body,
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary.decode()}'},
            )
            if response.status_code != 200:
                raise SystemExit(f"STOW failed: {response.status_code} {response.text[:300]}")
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID), sops


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--instances", type=int, default=500, help="CT instances in the study (default 500)")
    parser.add_argument("--runs", type=int, default=20, help="repetitions of each latency measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the concurrent frame scenario")
    args = parser.parse_args(argv)
    base = args.base_url.rstrip("/")

    started = time.perf_counter()
    study, series, sops = store_study(base, args.instances)
    print(f"stored {len(sops)} instances in {time.perf_counter() - started:.1f} s (study {study})")
    client = httpx.Client(timeout=600, headers=NO_COMPRESSION)
    results: list[tuple[str, str]] = []

    study_metadata = f"{base}/studies/{study}/metadata"
    series_metadata = f"{base}/studies/{study}/series/{series}/metadata"
    client.get(study_metadata)
    for name, url in (("study metadata", study_metadata), ("series metadata", series_metadata)):
        times = timed(iter_call(client, [url] * args.runs, "application/dicom+json"), args.runs)
        results.append((name, f"p50 {statistics.median(times):.1f} ms, p95 {percentile(times, 0.95):.1f} ms"))

    def instance_url(sop: str) -> str:
        return f"{base}/studies/{study}/series/{series}/instances/{sop}"

    start = time.perf_counter()
    times = timed(iter_call(client, [instance_url(s) for s in sops], ALL_AS_STORED), len(sops))
    elapsed = time.perf_counter() - start
    results.append(
        ("single instance, 1 client", f"{len(sops) / elapsed:.0f} instances/s, p50 {statistics.median(times):.1f} ms")
    )

    if shutil.which("wrk"):  # the same requests from a C client, one at a time: the server's rate, not Python's
        urls = [instance_url(s) for s in sops]
        results.append(("single instance, wrk, 1 connection", wrk_rate(urls, ALL_AS_STORED, 1, 4, "instances")))

    study_url = f"{base}/studies/{study}"
    rates = [curl_rate(study_url, ALL_AS_STORED) for _ in range(RUNS)]  # one transfer is noisy: median of several
    results.append(("whole study (curl, 7 runs)", f"median {statistics.median(rates):.0f} MB/s, best {max(rates):.0f}"))
    if shutil.which("nginx"):
        results.append(("whole study, nginx (same body)", nginx_reference(study_url, rates)))

    frame_urls = [f"{instance_url(s)}/frames/1" for s in sops]
    count, elapsed, frame_times = concurrent_gets(frame_urls, FRAME_ACCEPT, clients=8, seconds=args.seconds)
    results.append(
        ("frames/1, 8 clients", f"{count / elapsed:.0f} frames/s, p50 {statistics.median(frame_times):.1f} ms")
    )
    if shutil.which("wrk"):
        results.append(("frames/1, 8 connections (wrk)", wrk_rate(frame_urls, FRAME_ACCEPT, 8, args.seconds, "frames")))

    stop = threading.Event()
    transcodes: list[int] = []

    def transcode_load() -> None:
        with httpx.Client(timeout=600, headers=NO_COMPRESSION) as load:
            while not stop.is_set():
                response = load.get(f"{base}/studies/{study}/series/{series}", headers={"Accept": IMPLICIT})
                transcodes.append(response.status_code)

    loaders = [threading.Thread(target=transcode_load) for _ in range(4)]
    for thread in loaders:
        thread.start()
    time.sleep(1.0)
    times = timed(iter_call(client, [study_metadata] * args.runs, "application/dicom+json"), args.runs)
    stop.set()
    for thread in loaders:
        thread.join()
    results.append(
        (
            "study metadata under 4 transcodes",
            f"p50 {statistics.median(times):.1f} ms (transcode statuses {set(transcodes)})",
        )
    )

    width = max(len(name) for name, _ in results)
    for name, figure in results:
        print(f"{name:<{width}}  {figure}")
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


def nginx_reference(study_url: str, rates: list[float]) -> str:
    """The study's multipart body, as the server sent it, served by nginx as a static file (sendfile on): its
    median rate over RUNS transfers, alternating with as many more of the server's own, and the ratio."""
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
    ratio = statistics.median(rates) / statistics.median(reference)
    return f"median {statistics.median(reference):.0f} MB/s; the server's median of {len(rates)}: {ratio:.0%} of it"


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


def wrk_rate(urls: list[str], accept: str, connections: int, seconds: float, unit: str) -> str:
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
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    p50 = re.search(r"50%\s+([\d.]+\w+)", run.stdout)
    if rate is None or p50 is None:
        raise SystemExit(f"wrk: {run.stdout} {run.stderr}")
    return f"{float(rate.group(1)):.0f} {unit}/s, p50 {p50.group(1)}"


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
