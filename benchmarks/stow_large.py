"""STOW-RS of ONE large instance: how long the answer takes once the body has been sent.

A multi-frame CT (512 x 512, 16-bit noise, ``--mb`` MB of frames) is written with pydicom to a temp file (not timed),
then POSTed to ``BASE_URL/studies`` over a raw socket as ``multipart/related; type="application/dicom"``, read from
the file in 1 MiB chunks, at full speed or at ``--rate`` MB/s (a client behind a network of that speed). Reported
per request: ``send s`` (first byte to last byte sent), ``latency s`` (last byte sent to the response's first byte:
what the server still does once it has everything, e.g. an upload to S3 that only starts then) and ``total s``; with
``--server-pid``, the server's resident set size before the request and how much it grew at its peak (the process
and its children, sampled every 50 ms). Each request sends the instance under new UIDs.

Example::

    python benchmarks/stow_large.py http://127.0.0.1:8080/dicomweb --mb 300 --repeat 3 --server-pid $PID
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MB = 1_000_000
SIZE = 512  # rows and columns of a frame
CHUNK = 1 << 20  # bytes per send
BOUNDARY = b"stow-large-boundary"


def write_instance(path: Path, frames: np.ndarray) -> None:
    """A multi-frame CT with new UIDs, its frames ``frames``, as a PS3.10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "STOW-LARGE"
    ds.PatientName = "Large^Instance"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = SIZE
    ds.NumberOfFrames = len(frames)
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)


class RssSampler:
    """The peak RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        rss = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return rss

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> tuple[int, int]:
        """The RSS before the request and its peak during it."""
        self._stop.set()
        self._thread.join()
        return self.base, self.peak


def stow(base_url: str, path: Path, rate: float | None) -> tuple[int, float, float, float]:
    """POST the file as one part; (status, send seconds, latency seconds, total seconds)."""
    url = urlsplit(base_url)
    head = b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n"
    tail = b"\r\n--" + BOUNDARY + b"--\r\n"
    length = len(head) + path.stat().st_size + len(tail)
    request = (
        f"POST {url.path}/studies HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\nContent-Length: {length}\r\n"
        f'Content-Type: multipart/related; type="application/dicom"; boundary={BOUNDARY.decode()}\r\n'
        "Accept: application/dicom+json\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port or 80), timeout=600) as sock, path.open("rb") as file:
        start = time.perf_counter()
        sock.sendall(request + head)
        sent = 0
        while chunk := file.read(CHUNK):
            sock.sendall(chunk)
            sent += len(chunk)
            if rate:  # pace the body: never ahead of rate MB/s
                ahead = start + sent / (rate * MB) - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
        sock.sendall(tail)
        last_byte = time.perf_counter()
        first = sock.recv(1 << 16)
        answered = time.perf_counter()
        while sock.recv(1 << 16):
            pass
    status = int(first.split(b" ", 2)[1])
    return status, last_byte - start, answered - last_byte, answered - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", metavar="BASE_URL", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--mb", type=int, default=300, help="MB of pixel data in the instance (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="requests, each under new UIDs (default 3)")
    parser.add_argument("--rate", type=float, default=None, help="send at most this many MB/s (default: full speed)")
    parser.add_argument("--server-pid", type=int, default=None, help="server PID to sample RSS (with children) from")
    args = parser.parse_args(argv)

    frame_bytes = SIZE * SIZE * 2
    count = max(1, args.mb * MB // frame_bytes)
    rng = np.random.default_rng(18)
    frames = rng.integers(0, 4096, size=(count, SIZE, SIZE), dtype=np.uint16)
    rate = f"{args.rate:g} MB/s" if args.rate else "full speed"
    print(f"one instance of {count} frames ({count * frame_bytes / MB:.0f} MB) per request, sent at {rate}")
    print(f"{'request':>7} {'status':>6} {'send s':>7} {'latency s':>9} {'total s':>8} {'RSS MB':>7} {'peak +MB':>8}")
    latencies, totals = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.dcm"
        for number in range(1, args.repeat + 1):
            write_instance(path, frames)
            os.sync()
            sampler = RssSampler(args.server_pid) if args.server_pid else None
            status, send, latency, total = stow(args.base_url, path, args.rate)
            base, peak = sampler.stop() if sampler else (0, 0)
            memory = f"{base / MB:>7.0f} {(peak - base) / MB:>8.0f}" if sampler else f"{'-':>7} {'-':>8}"
            print(f"{number:>7} {status:>6} {send:>7.2f} {latency:>9.2f} {total:>8.2f} {memory}")
            latencies.append(latency)
            totals.append(total)
    print(f"median latency {statistics.median(latencies):.2f} s, median total {statistics.median(totals):.2f} s")


if __name__ == "__main__":
    main()
