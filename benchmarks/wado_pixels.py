"""WADO-RS pixel benchmark: work on compressed pixel data, against any DICOMweb server (ours or Orthanc's plugin).

Stores, through STOW-RS (data made here, not timed):

- one 200-frame JPEG baseline multi-frame instance (512x512, 8-bit, each frame encoded by Pillow), and measures a
  frame from its middle (``frames/100``, ``transfer-syntax=*``): p50 of ``--runs`` requests;
- ``--count`` CT instances (512x512, 16-bit, stow.py's generator) as RLE Lossless and as JPEG 2000 Lossless (encoded
  by pydicom and its plugins; JPEG-LS too when pydicom can encode it here), and measures ``frames/1`` decoded to
  native pixels (``Accept: multipart/related; type=application/octet-stream``, no transfer-syntax), frames/s with
  ``--clients`` clients (and as many wrk connections when wrk is installed);
- the same CT instances uncompressed, and measures ``.../rendered`` as ``image/jpeg``, images/s, the same two ways.

Example::

    python benchmarks/wado_pixels.py http://127.0.0.1:8080/dicomweb
    python benchmarks/wado_pixels.py http://127.0.0.1:8042/dicom-web     # Orthanc, the same data
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

sys.path.insert(0, str(Path(__file__).parent))
from stow import CT_SIZE, UidSource, content_type, make_instances, multipart_body
from wado import NO_COMPRESSION, concurrent_gets, iter_call, percentile, timed, wrk_rate

AS_STORED_FRAME = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DECODED_FRAME = "multipart/related; type=application/octet-stream"
FRAMES = 200


def stow(base: str, instances: list[bytes]) -> None:
    boundary = b"wado-pixels-boundary"
    with httpx.Client(timeout=600, headers=NO_COMPRESSION) as client:
        for start in range(0, len(instances), 25):
            body = multipart_body(instances[start : start + 25], boundary)
            response = client.post(f"{base}/studies", content=body, headers={"Content-Type": content_type(boundary)})
            if response.status_code != 200:
                raise SystemExit(f"STOW failed: {response.status_code} {response.text[:300]}")


def url_of(base: str, data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def multiframe_jpeg(uids: UidSource, rng: np.random.Generator) -> bytes:
    """A 200-frame 512x512 8-bit JPEG baseline instance: one CT-like slice per frame, each a JPEG of its own."""
    [template] = make_instances(1, CT_SIZE, uids, rng)
    ds = pydicom.dcmread(io.BytesIO(template))
    pixels = ds.pixel_array.astype(np.float64)
    frames = []
    for number in range(FRAMES):
        shifted = np.roll(pixels, number * 2, axis=1)
        scaled = np.clip((shifted - shifted.min()) / (np.ptp(shifted) or 1) * 255, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(scaled, "L").save(buffer, "JPEG", quality=90)
        frames.append(buffer.getvalue())
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = FRAMES
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(uids.new())
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def compressed(instances: list[bytes], syntax: str, uids: UidSource) -> list[bytes] | None:
    """The instances in ``syntax`` (new series and SOP Instance UIDs); None when pydicom cannot encode it here."""
    series = uids.new()
    out = []
    for data in instances:
        ds = pydicom.dcmread(io.BytesIO(data))
        try:
            ds.compress(syntax)
        except Exception as exc:  # no encoder installed for it
            print(f"(skipping {pydicom.uid.UID(syntax).name}: {exc})")
            return None
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(uids.new())
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def warm_up(urls: list[str], accept: str, clients: int) -> None:
    """A second of requests before measuring: a server that starts its decoding processes on first use (ours)
    pays that once, not in the measured rate."""
    concurrent_gets(urls, accept, clients, 1.0)


def rate(urls: list[str], accept: str, clients: int, seconds: float, unit: str) -> str:
    """Requests/s and p50 with ``clients`` Python clients, then (when Debian's ``wrk`` is installed) with as many wrk
    connections: Python's client caps the rate at about 600/s here, wrk's C client does not."""
    count, elapsed, times = concurrent_gets(urls, accept, clients, seconds)
    figure = f"{count / elapsed:.0f} {unit}/s, p50 {statistics.median(times):.1f} ms"
    if shutil.which("wrk"):
        figure += f"; wrk {wrk_rate(urls, accept, clients, seconds, unit)}"
    return figure


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--count", type=int, default=40, help="CT instances per transfer syntax (default 40)")
    parser.add_argument("--runs", type=int, default=50, help="requests for the multi-frame latency")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the rates (default 4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each rate measurement")
    args = parser.parse_args(argv)
    base = args.base_url.rstrip("/")
    uids, rng = UidSource(), np.random.default_rng(11)
    results: list[tuple[str, str]] = []

    multiframe = multiframe_jpeg(uids, rng)
    stow(base, [multiframe])
    client = httpx.Client(timeout=600, headers=NO_COMPRESSION)
    middle = f"{url_of(base, multiframe)}/frames/{FRAMES // 2}"
    client.get(middle, headers={"Accept": AS_STORED_FRAME})
    times = timed(iter_call(client, [middle] * args.runs, AS_STORED_FRAME), args.runs)
    results.append(
        (
            f"frame {FRAMES // 2} of {FRAMES} (JPEG)",
            f"p50 {statistics.median(times):.1f} ms, p95 {percentile(times, 0.95):.1f} ms",
        )
    )

    native = make_instances(args.count, CT_SIZE, uids, rng)
    for syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        instances = compressed(native, syntax, uids)
        if instances is None:
            continue
        stow(base, instances)
        urls = [f"{url_of(base, data)}/frames/1" for data in instances]
        name = f"{pydicom.uid.UID(syntax).name} -> native, {args.clients} clients"
        try:
            warm_up(urls, DECODED_FRAME, args.clients)
            results.append((name, rate(urls, DECODED_FRAME, args.clients, args.seconds, "frames")))
        except SystemExit as failed:  # the server cannot decode it: say so, measure the rest
            results.append((name, f"not served: {str(failed.code).rsplit(': ', 1)[-1]}"))

    stow(base, native)
    urls = [f"{url_of(base, data)}/rendered" for data in native]
    warm_up(urls, "image/jpeg", args.clients)
    results.append(
        (f"rendered image/jpeg, {args.clients} clients", rate(urls, "image/jpeg", args.clients, args.seconds, "images"))
    )

    width = max(len(name) for name, _ in results)
    for name, figure in results:
        print(f"{name:<{width}}  {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
