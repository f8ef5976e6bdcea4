"""Every codec on a plain install: the pixel codecs are default dependencies, and one instance of every transfer
syntax that has a sample is stored, converted to Explicit VR Little Endian and rendered by a real server.

The samples are pydicom's own test files (one per transfer syntax, under new UIDs); JPEG Lossless Process 14 is the
Selection Value 1 sample relabelled (SV1 is one of Process 14's predictors, PS3.5 §A.4.1); Encapsulated Uncompressed
samples are native ones with each frame in a fragment of its own. Syntaxes without any decoder in pydicom (video,
JPEG 2000 multi-component) are stored and retrieved as stored, and refused with a clear 406 for a conversion or a
rendered image. HTJ2K has a decoder (OpenJPEG) but no sample here: nothing in reach encodes it.
"""

from __future__ import annotations

import io
import re
from importlib.metadata import requires
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, UID, JPEGLossless, generate_uid

from .conftest import LiveServer
from .data import TEST_FILES, multipart, stow_headers

CODECS = {"pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls", "simplejpeg"}

# One sample per transfer syntax: (transfer syntax UID, pydicom test file).
SAMPLES = [
    ("1.2.840.10008.1.2", "MR_small_implicit.dcm"),
    ("1.2.840.10008.1.2.1", "CT_small.dcm"),
    ("1.2.840.10008.1.2.2", "MR_small_bigendian.dcm"),
    ("1.2.840.10008.1.2.1.99", "image_dfl.dcm"),
    ("1.2.840.10008.1.2.4.50", "SC_rgb_jpeg_dcmtk.dcm"),
    ("1.2.840.10008.1.2.4.51", "JPGExtended.dcm"),  # 12 bits
    ("1.2.840.10008.1.2.4.57", "SC_rgb_jpeg_gdcm.dcm"),  # relabelled, see the module docstring
    ("1.2.840.10008.1.2.4.70", "SC_rgb_jpeg_gdcm.dcm"),
    ("1.2.840.10008.1.2.4.80", "MR_small_jpeg_ls_lossless.dcm"),
    ("1.2.840.10008.1.2.4.81", "JPEGLSNearLossless_16.dcm"),
    ("1.2.840.10008.1.2.4.90", "MR_small_jp2klossless.dcm"),
    ("1.2.840.10008.1.2.4.91", "JPEG2000.dcm"),
    ("1.2.840.10008.1.2.5", "MR_small_RLE.dcm"),
    ("1.2.840.10008.1.2.1.98", "SC_rgb_small_odd.dcm"),  # made encapsulated, see encapsulated_uncompressed
    ("1.2.840.10008.1.2.1.98", "SC_rgb_rle_2frame.dcm"),
    ("1.2.840.10008.1.2.1.98", "MR_small.dcm"),
]


def test_codecs_are_default_dependencies() -> None:
    """`pip install .` brings every codec: none of them hides behind an extra."""
    unconditional = {re.split(r"[\s;<>=!~\[]", r)[0].lower() for r in requires("dicomweb") or [] if ";" not in r}
    assert CODECS <= unconditional


def encapsulated_uncompressed(ds: pydicom.Dataset) -> None:
    """Native pixel data made Encapsulated Uncompressed: one fragment per frame, each padded to an even length."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    count = int(ds.get("NumberOfFrames") or 1)
    size = len(ds.PixelData) // count
    ds.PixelData = encapsulate([ds.PixelData[n * size : (n + 1) * size] for n in range(count)])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"


def renamed(source: Path, transfer_syntax_uid: str) -> tuple[pydicom.Dataset, bytes]:
    """The sample under new UIDs, labelled ``transfer_syntax_uid``: (its data set, its file bytes)."""
    ds = pydicom.dcmread(source)
    if transfer_syntax_uid == "1.2.840.10008.1.2.1.98":
        encapsulated_uncompressed(ds)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return ds, buffer.getvalue()


def store(server: LiveServer, data: bytes) -> None:
    response = httpx.post(server.dicomweb + "/studies", content=multipart([data]), headers=stow_headers())
    assert response.status_code == 200, response.text


def url(server: LiveServer, ds: pydicom.Dataset, tail: str = "") -> str:
    return (
        f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}{tail}"
    )


@pytest.mark.parametrize(("transfer_syntax_uid", "name"), SAMPLES, ids=[f"{uid}-{name}" for uid, name in SAMPLES])
def test_every_transfer_syntax_converts_and_renders(
    session_server: LiveServer, transfer_syntax_uid: str, name: str
) -> None:
    """Stored as sent; Explicit VR Little Endian (the default) holds the same pixels pydicom decodes from the sample;
    rendered is a JPEG of the sample's size; frame 1 as native pixels has the frame's size."""
    ds, data = renamed(TEST_FILES / name, transfer_syntax_uid)
    store(session_server, data)
    response = httpx.get(url(session_server, ds), headers={"Accept": "application/dicom"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.1")
    converted = pydicom.dcmread(io.BytesIO(response.content))
    assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    np.testing.assert_array_equal(converted.pixel_array, pydicom.dcmread(TEST_FILES / name).pixel_array)

    rendered = httpx.get(url(session_server, ds, "/rendered"), timeout=60)
    assert rendered.status_code == 200, rendered.text
    image = Image.open(io.BytesIO(rendered.content))
    assert image.format == "JPEG" and image.size == (ds.Columns, ds.Rows)

    frame = httpx.get(url(session_server, ds, "/frames/1"), headers={"Accept": "application/octet-stream"}, timeout=60)
    assert frame.status_code == 200, frame.text
    samples = int(ds.get("SamplesPerPixel", 1))
    assert len(frame.content) == ds.Rows * ds.Columns * samples * (ds.BitsAllocated // 8)


def test_a_syntax_without_decoder_is_stored_and_refused_clearly(session_server: LiveServer) -> None:
    """An MPEG-2 instance (pydicom has no video decoder): stored, sent as stored, and a clear 406 for Explicit VR
    Little Endian and for a rendered image."""
    ds, _ = renamed(TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm", MPEG2MPML)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(1000)])  # an MPEG-2 sequence header, then nothing
    buffer = io.BytesIO()
    ds.save_as(buffer)
    store(session_server, buffer.getvalue())
    as_stored = httpx.get(url(session_server, ds), headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert as_stored.status_code == 200 and as_stored.content == buffer.getvalue()
    for response in (
        httpx.get(url(session_server, ds), headers={"Accept": "application/dicom"}),
        httpx.get(url(session_server, ds, "/rendered")),
    ):
        assert response.status_code == 406, response.text
        assert "MPEG2" in response.json()["detail"].replace("-", "")


def test_jpeg_lossless_process_14_is_the_selection_value_1_sample() -> None:
    """The relabelled sample is a real Process 14 stream (its SOF3 marker), so .57 is tested with a fitting file."""
    ds = pydicom.dcmread(TEST_FILES / "SC_rgb_jpeg_gdcm.dcm")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70" and JPEGLossless == "1.2.840.10008.1.2.4.57"
    assert b"\xff\xc3" in ds.PixelData  # Start Of Frame, lossless (Process 14)
