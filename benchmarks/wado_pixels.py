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

side_by_side.py runs these scenarios against two servers in turn, on the same data (compare_wado.sh).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

sys.path.insert(0, str(Path(__file__).parent))
from stow import CT_SIZE, UidSource, content_type, make_instances, multipart_body
from wado import (
    NO_COMPRESSION,
    Figure,
    Scenario,
    concurrent_gets,
    iter_call,
    latency,
    rate,
    run,
    timed,
    wrk_rate,
)

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


@dataclass(frozen=True)
class PixelData:
    """What the scenarios store (made once, the same on every server compared)."""

    multiframe: bytes  # the 200-frame JPEG instance
    native: list[bytes]  # CT instances, Explicit VR Little Endian
    compressed: dict[str, list[bytes]]  # the same pixels per compressed transfer syntax pydicom can encode here


def make_data(count: int) -> PixelData:
    uids, rng = UidSource(), np.random.default_rng(11)
    multiframe = multiframe_jpeg(uids, rng)
    native = make_instances(count, CT_SIZE, uids, rng)
    encoded = {syntax: compressed(native, syntax, uids) for syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless)}
    return PixelData(multiframe, native, {syntax: data for syntax, data in encoded.items() if data is not None})


def scenarios(base: str, data: PixelData, runs: int = 50, clients: int = 4, seconds: float = 8.0) -> list[Scenario]:
    """Store the data on the server at ``base`` (not timed); the measurements. Each rate is measured with
    ``clients`` Python clients, then (when Debian's ``wrk`` is installed) with as many wrk connections: Python's
    client caps the rate at about 600/s here, wrk's C client does not."""
    stow(base, [data.multiframe, *data.native, *(instance for group in data.compressed.values() for instance in group)])
    client = httpx.Client(timeout=600, headers=NO_COMPRESSION)
    middle = f"{url_of(base, data.multiframe)}/frames/{FRAMES // 2}"

    def middle_frame() -> Figure:
        client.get(middle, headers={"Accept": AS_STORED_FRAME})
        return latency(timed(iter_call(client, [middle] * runs, AS_STORED_FRAME), runs))

    def by_python(urls: list[str], accept: str, unit: str) -> Callable[[], Figure]:
        def measure() -> Figure:
            warm_up(urls, accept, clients)
            return rate(*concurrent_gets(urls, accept, clients, seconds), unit)

        return measure

    def by_wrk(urls: list[str], accept: str, unit: str) -> Callable[[], Figure]:
        return lambda: wrk_rate(urls, accept, clients, seconds, unit)

    measured: list[Scenario] = [(f"frame {FRAMES // 2} of {FRAMES} (JPEG)", middle_frame)]
    pairs = [
        (f"{pydicom.uid.UID(syntax).name} -> native", [f"{url_of(base, i)}/frames/1" for i in instances], DECODED_FRAME)
        for syntax, instances in data.compressed.items()
    ]
    pairs.append(("rendered image/jpeg", [f"{url_of(base, i)}/rendered" for i in data.native], "image/jpeg"))
    for name, urls, accept in pairs:
        unit = "images" if accept == "image/jpeg" else "frames"
        measured.append((f"{name}, {clients} clients", by_python(urls, accept, unit)))
        if shutil.which("wrk"):
            measured.append((f"{name}, {clients} connections (wrk)", by_wrk(urls, accept, unit)))
    return measured


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--count", type=int, default=40, help="CT instances per transfer syntax (default 40)")
    parser.add_argument("--runs", type=int, default=50, help="requests for the multi-frame latency")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the rates (default 4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each rate measurement")
    args = parser.parse_args(argv)
    run(scenarios(args.base_url.rstrip("/"), make_data(args.count), args.runs, args.clients, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
