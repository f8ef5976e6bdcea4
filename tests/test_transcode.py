"""transcode: RLE frames decoded straight from their compressed bytes, equal to pydicom's decoding; whole instances
converted to Explicit VR Little Endian, and what cannot be decoded told apart as CannotDecode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.uid import RLELossless

from dicomweb.transcode import CannotDecode, decode_frames, decode_rle, decoding, transcode

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


class TestTranscode:
    """Whole instances to Explicit VR Little Endian, and the failures a caller must turn into a clear answer."""

    def test_a_file_with_implicit_elements_in_an_explicit_data_set(self) -> None:
        """SC_rgb_jpeg.dcm says explicit VR but its elements are implicit (pydicom reads both): each converted
        element gets its VR from the dictionary, and the pixels are pydicom's."""
        converted = pydicom.dcmread(io.BytesIO(transcode(TEST_FILES / "SC_rgb_jpeg.dcm", "1.2.840.10008.1.2.1")))
        original = pydicom.dcmread(TEST_FILES / "SC_rgb_jpeg.dcm")
        assert converted.ImageType == original.ImageType
        np.testing.assert_array_equal(converted.pixel_array, original.pixel_array)

    def test_command_elements_are_dropped_from_the_converted_copy(self, tmp_path: Path) -> None:
        """A (0000,0902) Error Comment in a data set (PS3.5 §7.1 has no place for it) would make dcmwrite refuse the
        whole copy; it is left out and the rest is converted."""
        data = (TEST_FILES / "MR_small_RLE.dcm").read_bytes()  # explicit VR little endian data set
        meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # after File Meta Information Group Length
        comment = b"left over from DIMSE"
        element = b"\x00\x00\x02\x09LO" + len(comment).to_bytes(2, "little") + comment  # (0000,0902) sorts first
        path = tmp_path / "with-command.dcm"
        path.write_bytes(data[:meta_end] + element + data[meta_end:])
        assert 0x00000902 in pydicom.dcmread(path)
        converted = pydicom.dcmread(io.BytesIO(transcode(path, "1.2.840.10008.1.2.1")))
        assert 0x00000902 not in converted
        np.testing.assert_array_equal(converted.pixel_array, pydicom.dcmread(TEST_FILES / "MR_small.dcm").pixel_array)

    def test_pixel_data_that_does_not_decode_is_cannot_decode(self) -> None:
        """pydicom's JPEG-lossy.dcm (12-bit JPEG with a misplaced marker, which no plugin decodes): CannotDecode with
        the decoder's reason, for the instance and for its frame."""
        with pytest.raises(CannotDecode, match="misplaced marker"):
            transcode(TEST_FILES / "JPEG-lossy.dcm", "1.2.840.10008.1.2.1")
        [frame] = decode_frames(TEST_FILES / "JPEG-lossy.dcm", [1])
        assert isinstance(frame, CannotDecode) and "frame 1 cannot be decoded" in str(frame)


class PanicException(BaseException):
    """What pyo3 raises when a codec written in Rust (pylibjpeg-rle) panics: a BaseException of this name."""


class TestDecoding:
    """decoding(): which failures are the decoder's."""

    @pytest.mark.parametrize("failure", [ValueError("bad"), RuntimeError("bad"), PanicException("bad")])
    def test_a_decoder_failure_becomes_cannot_decode(self, failure: BaseException) -> None:
        with pytest.raises(CannotDecode, match="frame 3 cannot be decoded: bad"):
            with decoding("frame 3"):
                raise failure

    @pytest.mark.parametrize("failure", [FileNotFoundError("gone"), KeyboardInterrupt(), SystemExit(1)])
    def test_the_rest_passes_as_it_is(self, failure: BaseException) -> None:
        with pytest.raises(type(failure)):
            with decoding("frame 3"):
                raise failure
