"""transcode.decode_rle: RLE frames decoded straight from their compressed bytes, equal to pydicom's decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.uid import RLELossless

from dicomweb.transcode import decode_rle

from .data import TEST_FILES

RLE_FILES = sorted(
    path
    for path in TEST_FILES.glob("*.dcm")
    if "rle" in path.name.lower()
    and pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == RLELossless
)


def test_the_pydicom_files_cover_what_the_decoder_takes() -> None:
    """Signed 16-bit, unsigned 32-bit multi-frame and colour (which it leaves to pydicom) are all among them."""
    names = {path.name for path in RLE_FILES}
    assert {"MR_small_RLE.dcm", "rtdose_rle.dcm", "SC_rgb_rle.dcm"} <= names


@pytest.mark.parametrize("path", RLE_FILES, ids=lambda p: p.name)
def test_every_frame_as_pydicom_decodes_it(path: Path) -> None:
    """Monochrome frames: the bytes of pydicom's pixel array in little endian. Colour frames: None (pydicom turns
    them into RGB by pixel, which the caller asks it for)."""
    ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames") or 1)
    for number, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=count)):
        decoded = decode_rle(frame, ds.Rows * ds.Columns, ds.BitsAllocated)
        if ds.SamplesPerPixel > 1:
            assert decoded is None
            continue
        pixels = pixel_array(path, index=number)
        assert decoded == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes(), (path.name, number)


def test_eight_bit_frames() -> None:
    """8-bit monochrome (none among pydicom's files): encoded by pydicom here, decoded back exactly."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (64, 48), dtype=np.uint8)
    ds = Dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored = 64, 48, 1, 8, 8
    ds.HighBit, ds.PixelRepresentation, ds.PhotometricInterpretation = 7, 0, "MONOCHROME2"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.PixelData = pixels.tobytes()
    ds.compress(RLELossless, encoding_plugin="pydicom")
    [frame] = generate_frames(ds.PixelData, number_of_frames=1)
    assert decode_rle(frame, 64 * 48, 8) == pixels.tobytes()


def test_what_it_does_not_take() -> None:
    """Bits Allocated 1 and a header whose segment count does not fit the bits: None, so pydicom decodes."""
    [frame] = generate_frames(pydicom.dcmread(TEST_FILES / "MR_small_RLE.dcm").PixelData, number_of_frames=1)
    assert decode_rle(frame, 64 * 64, 1) is None
    assert decode_rle(frame, 64 * 64, 8) is None  # two segments: 16 bits, not 8
