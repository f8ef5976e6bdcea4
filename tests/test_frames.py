"""frames.py: every frame of real files, byte for byte as pydicom cuts them, read without loading the pixel data."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels.utils import pack_bits, unpack_bits
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    MPEG4HP41,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomweb import frames as frames_module
from dicomweb.frames import (
    BrokenPixelData,
    Frame,
    FrameError,
    FrameNotFound,
    FramesNotExtractable,
    InvalidFrameList,
    NoPixelData,
    frame_count,
    parse_frame_list,
    read_frames,
)

from .data import CT, DEFLATED, JPEG_LS, MR, MR_BIG_ENDIAN, MR_IMPLICIT, MULTIFRAME_US, RT_DOSE, SR
from .data import JPEG2000 as JPEG2000_FILE
from .data import testdata as named_file

RT_DOSE_BIG_ENDIAN = named_file("rtdose_expb.dcm")  # the same 15 frames as RT_DOSE, explicit VR big endian
RT_DOSE_RLE = named_file("rtdose_rle.dcm")  # the same 15 frames, RLE, one fragment per frame
RGB_RLE_2_FRAMES = named_file("SC_rgb_rle_2frame.dcm")
RGB_ODD = named_file("SC_rgb_small_odd.dcm")  # 3 x 3 RGB: 27 bytes, an odd frame size
RGB_ODD_BIG_ENDIAN = named_file("SC_rgb_small_odd_big_endian.dcm")  # the same pixels, OW words swapped
BITMAP = named_file("liver_1frame.dcm")  # Bits Allocated 1
BITMAP_BIG_ENDIAN = named_file("liver_expb_1frame.dcm")
YBR_FULL_422 = named_file("SC_ybr_full_422_uncompressed.dcm")  # two samples stored per pixel, not three
JPEG_IMPLICIT_PIXEL_DATA = named_file("SC_rgb_jpeg.dcm")  # explicit VR file whose Pixel Data header has no VR
MR_TRUNCATED = named_file("MR_truncated.dcm")

Offsets = Literal["basic", "extended", "none"]


def all_frames(path: Path) -> list[Frame]:
    """Every frame of the file, through frames.py."""
    return read_frames(path, list(range(1, frame_count(path) + 1)))


def native_frames(path: Path) -> list[bytes]:
    """What pydicom holds as the file's pixel data, cut into frames by plain slicing."""
    ds = pydicom.dcmread(path)
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(int(ds.get("NumberOfFrames") or 1))]


def bits(data: bytes, count: int) -> list[int]:
    """The first ``count`` pixels of bit-packed data, as pydicom unpacks them."""
    unpacked = unpack_bits(data)
    assert isinstance(unpacked, np.ndarray)
    return list(unpacked[:count].tolist())


def pydicom_frames(path: Path) -> list[bytes]:
    """The file's encapsulated frames as pydicom splits them from the whole Pixel Data value."""
    ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames") or 1)
    extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths) if "ExtendedOffsetTable" in ds else None
    return list(generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=extended))[:count]


def image(transfer_syntax_uid: str, number_of_frames: int | None, **attributes: object) -> Dataset:
    """A Secondary Capture data set (no pixel data yet) with fresh UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 16, 16, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def fake_jpeg(number: int, size: int = 2000) -> bytes:
    """A frame that looks like a JPEG codestream (SOI ... EOI) and has no other 0xFF byte, so no false EOI."""
    body = (f"frame {number:05d};".encode() * (size // 12 + 1))[: size - 4]
    return b"\xff\xd8" + body + b"\xff\xd9"


def encapsulated_instance(
    path: Path,
    frames: list[bytes],
    offsets: Offsets = "basic",
    fragments_per_frame: int = 1,
    transfer_syntax_uid: str = JPEGBaseline8Bit,
    number_of_frames: int | None = None,
) -> Path:
    """A PS3.10 file whose encapsulated pixel data holds ``frames``, with the given kind of offset table."""
    # pydicom refuses to write a transfer syntax newer than itself (JPEG XL): write a private one, then swap it.
    unknown = not UID(transfer_syntax_uid).is_transfer_syntax and not UID(transfer_syntax_uid).is_private
    placeholder = "1.2.3." + "4" * (len(transfer_syntax_uid) - 6)
    count = len(frames) if number_of_frames is None else number_of_frames
    ds = image(placeholder if unknown else transfer_syntax_uid, count)
    if offsets == "extended":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        ds.PixelData = encapsulate(frames, fragments_per_frame=fragments_per_frame, has_bot=offsets == "basic")
    ds["PixelData"].is_undefined_length = True  # also for syntaxes pydicom does not know
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    if unknown:
        path.write_bytes(path.read_bytes().replace(placeholder.encode(), transfer_syntax_uid.encode(), 1))
    return path


class TestParseFrameList:
    @pytest.mark.parametrize(
        ("text", "numbers"),
        [("1", [1]), ("1,3,5", [1, 3, 5]), ("5,1,3", [5, 1, 3]), ("2, 4", [2, 4]), (" 7 ", [7]), ("010", [10])],
    )
    def test_valid(self, text: str, numbers: list[int]) -> None:
        """Comma-separated positive integers, in any order; spaces around a number are tolerated."""
        assert parse_frame_list(text) == numbers

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("0", "start at 1"),
            ("000", "start at 1"),
            ("-1", "'-1' in '-1' is not a frame number"),
            ("+1", "is not a frame number"),
            ("a", "'a' in 'a' is not a frame number"),
            ("1.5", "is not a frame number"),
            ("", "an empty entry"),
            ("1,,2", "an empty entry in '1,,2'"),
            ("1,", "an empty entry"),
            ("1 2", "is not a frame number"),
            ("١", "is not a frame number"),  # an Arabic-Indic digit: int() would take it
            ("1,2,1", "frame 1 is listed more than once"),
            ("2147483648", "too large"),
            ("9" * 5000, "too large"),
        ],
    )
    def test_invalid(self, text: str, message: str) -> None:
        """Anything else is refused with a message that names the offending entry."""
        with pytest.raises(InvalidFrameList, match=message):
            parse_frame_list(text)

    def test_errors_are_value_errors(self) -> None:
        """Callers can treat every frame error as a ValueError."""
        assert issubclass(InvalidFrameList, ValueError)
        assert issubclass(FrameNotFound, FrameError) and issubclass(NoPixelData, FrameError)


class TestFrameCount:
    @pytest.mark.parametrize(("path", "count"), [(RT_DOSE, 15), (MULTIFRAME_US, 30), (CT, 1), (RGB_ODD, 1)])
    def test_number_of_frames(self, path: Path, count: int) -> None:
        """Number of Frames, or 1 when the attribute is absent."""
        assert frame_count(path) == count

    def test_no_pixel_data(self) -> None:
        """An instance without pixel data (an SR) has no frames to count."""
        with pytest.raises(NoPixelData):
            frame_count(SR)


class TestNativeFrames:
    @pytest.mark.parametrize("path", [RT_DOSE, CT, MR, MR_IMPLICIT, RGB_ODD, BITMAP], ids=lambda p: p.name)
    def test_little_endian(self, path: Path) -> None:
        """Each frame is its slice of the Pixel Data value."""
        frames = all_frames(path)
        assert [frame.data for frame in frames] == native_frames(path)
        assert {(frame.media_type, frame.transfer_syntax_uid) for frame in frames} == {
            ("application/octet-stream", ExplicitVRLittleEndian)
        }

    @pytest.mark.parametrize(
        ("big_endian", "little_endian"),
        [
            (RT_DOSE_BIG_ENDIAN, RT_DOSE),
            (RGB_ODD_BIG_ENDIAN, RGB_ODD),
            (MR_BIG_ENDIAN, MR),
            (BITMAP_BIG_ENDIAN, BITMAP),
        ],
        ids=lambda p: p.name,
    )
    def test_big_endian_frames_are_little_endian(self, big_endian: Path, little_endian: Path) -> None:
        """Frames of a big endian file equal the little endian file's (32-bit, 16-bit, 8-bit OW, 1-bit OB)."""
        frames = all_frames(big_endian)
        assert [frame.data for frame in frames] == native_frames(little_endian)
        assert frames[0].transfer_syntax_uid == ExplicitVRLittleEndian

    def test_frames_in_requested_order(self) -> None:
        """Frames come back in the order asked for, not the file's."""
        expected = native_frames(RT_DOSE)
        assert [frame.data for frame in read_frames(RT_DOSE, [15, 1, 8])] == [expected[14], expected[0], expected[7]]

    def test_ybr_full_422(self) -> None:
        """YBR_FULL_422 stores two samples per pixel (PS3.3 §C.7.6.3.1.2): a 100 x 100 frame is 20000 bytes."""
        (frame,) = read_frames(YBR_FULL_422, [1])
        assert frame.data == pydicom.dcmread(YBR_FULL_422).PixelData[:20000]
        assert len(frame.data) == 20000

    def test_deflated(self) -> None:
        """A deflated file's frame comes from the inflated pixel data."""
        (frame,) = read_frames(DEFLATED, [1])
        assert frame.data == pydicom.dcmread(DEFLATED).PixelData
        assert frame.transfer_syntax_uid == ExplicitVRLittleEndian

    def test_float_pixel_data(self, tmp_path: Path) -> None:
        """Float Pixel Data (7FE0,0008) frames are cut like Pixel Data, 32 bits a value."""
        values = np.arange(3 * 4 * 4, dtype="<f4").reshape(3, 4, 4)
        ds = image(ExplicitVRLittleEndian, 3, Rows=4, Columns=4, BitsAllocated=32)
        del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
        ds.FloatPixelData = values.tobytes()
        ds.save_as(tmp_path / "float.dcm", enforce_file_format=True)
        assert [frame.data for frame in all_frames(tmp_path / "float.dcm")] == [v.tobytes() for v in values]


class TestBitPackedFrames:
    """Bits Allocated 1: frames follow each other bit by bit (PS3.5 §8.1.1), so most start inside a byte."""

    def test_frames_not_on_byte_boundaries(self, tmp_path: Path) -> None:
        """Each 3 x 5 frame (15 bits) comes back starting at bit 0, its pixels as pydicom unpacks them."""
        pixels = (np.arange(5 * 15).reshape(5, 3, 5) * 7 % 3 == 0).astype(np.uint8)
        ds = image(ExplicitVRLittleEndian, 5, Rows=3, Columns=5, BitsAllocated=1, BitsStored=1, HighBit=0)
        ds.PixelData = pack_bits(pixels)  # 75 bits in 10 bytes
        ds.save_as(tmp_path / "bits.dcm", enforce_file_format=True)
        assert pydicom.dcmread(tmp_path / "bits.dcm").pixel_array.tolist() == pixels.tolist()
        frames = all_frames(tmp_path / "bits.dcm")
        for frame, expected in zip(frames, pixels, strict=True):
            assert len(frame.data) == 2
            assert bits(frame.data, 16) == [*expected.ravel().tolist(), 0]  # the unused last bit is zero

    def test_big_endian_ow(self, tmp_path: Path) -> None:
        """In big endian OW the packed bits are 16-bit words (PS3.5 §7.3): swapped, they give the same frames.

        pydicom's pixel_array reads 1-bit OW big endian data as a byte stream instead, so it is not the reference.
        """
        pixels = (np.arange(5 * 15).reshape(5, 3, 5) % 4 == 1).astype(np.uint8)
        files = {}
        for transfer_syntax_uid in (ExplicitVRLittleEndian, ExplicitVRBigEndian):
            ds = image(transfer_syntax_uid, 5, Rows=3, Columns=5, BitsAllocated=1, BitsStored=1, HighBit=0)
            packed = pack_bits(pixels)
            if transfer_syntax_uid == ExplicitVRBigEndian:
                packed = np.frombuffer(packed, "<u2").astype(">u2").tobytes()
            ds.PixelData = packed
            ds["PixelData"].VR = "OW"
            files[transfer_syntax_uid] = tmp_path / f"{transfer_syntax_uid}.dcm"
            ds.save_as(files[transfer_syntax_uid], enforce_file_format=True)
        big_endian = all_frames(files[ExplicitVRBigEndian])
        assert big_endian == all_frames(files[ExplicitVRLittleEndian])
        assert [bits(frame.data, 15) for frame in big_endian] == pixels.reshape(5, 15).tolist()


class TestEncapsulatedFrames:
    @pytest.mark.parametrize(
        ("path", "media_type"),
        [
            (MULTIFRAME_US, "image/jpeg"),  # 30 frames
            (RGB_RLE_2_FRAMES, "image/dicom-rle"),
            (RT_DOSE_RLE, "image/dicom-rle"),  # 15 frames
            (JPEG2000_FILE, "image/jp2"),
            (JPEG_LS, "image/jls"),
            (JPEG_IMPLICIT_PIXEL_DATA, "image/jpeg"),
        ],
        ids=lambda value: value.name if isinstance(value, Path) else value,
    )
    def test_real_files(self, path: Path, media_type: str) -> None:
        """Every frame equals pydicom's, labelled with the file's transfer syntax and its media type."""
        frames = all_frames(path)
        assert [frame.data for frame in frames] == pydicom_frames(path)
        transfer_syntax_uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert {(frame.media_type, frame.transfer_syntax_uid) for frame in frames} == {
            (media_type, transfer_syntax_uid)
        }

    @pytest.mark.parametrize(
        ("offsets", "fragments_per_frame"),
        [("basic", 1), ("none", 1), ("extended", 1), ("basic", 3), ("none", 3)],
    )
    def test_offset_tables(self, tmp_path: Path, offsets: Offsets, fragments_per_frame: int) -> None:
        """Basic, Extended or no offset table, one or several fragments per frame: the same frames."""
        expected = [fake_jpeg(number) for number in range(1, 21)]
        path = encapsulated_instance(tmp_path / "jpeg.dcm", expected, offsets, fragments_per_frame)
        assert [frame.data for frame in all_frames(path)] == expected
        assert [frame.data for frame in read_frames(path, [20, 2, 11])] == [expected[19], expected[1], expected[10]]

    def test_single_frame_in_fragments(self, tmp_path: Path) -> None:
        """A single frame split over several fragments without an offset table is all of them (PS3.5 §A.4)."""
        expected = fake_jpeg(1, 10_000)
        path = encapsulated_instance(tmp_path / "one.dcm", [expected], "none", 4)
        ds = pydicom.dcmread(path)
        del ds.NumberOfFrames
        ds.save_as(path)
        assert [frame.data for frame in all_frames(path)] == [expected]

    def test_wrong_basic_offset_table(self, tmp_path: Path) -> None:
        """A Basic Offset Table that points into a fragment is ignored in favour of the fragments themselves."""
        expected = [fake_jpeg(number, 100) for number in range(1, 4)]
        path = encapsulated_instance(tmp_path / "jpeg.dcm", expected)
        data = path.read_bytes()
        table = b"\x00\x00\x00\x00" + (108).to_bytes(4, "little") + (216).to_bytes(4, "little")
        wrong = b"\x00\x00\x00\x00" + (50).to_bytes(4, "little") + (216).to_bytes(4, "little")
        assert data.count(table) == 1
        path.write_bytes(data.replace(table, wrong))
        assert [frame.data for frame in all_frames(path)] == expected

    @pytest.mark.parametrize(
        ("transfer_syntax_uid", "media_type"),
        [
            (JPEGBaseline8Bit, "image/jpeg"),
            (JPEGExtended12Bit, "image/jpeg"),
            (JPEGLossless, "image/jpeg"),
            (JPEGLosslessSV1, "image/jpeg"),
            (JPEGLSLossless, "image/jls"),
            (JPEGLSNearLossless, "image/jls"),
            (JPEG2000Lossless, "image/jp2"),
            (JPEG2000, "image/jp2"),
            (HTJ2KLossless, "image/jphc"),
            (HTJ2KLosslessRPCL, "image/jphc"),
            (HTJ2K, "image/jphc"),
            (RLELossless, "image/dicom-rle"),
            ("1.2.840.10008.1.2.4.110", "image/jxl"),
            ("1.2.3.4.5.6", "application/octet-stream"),  # a private transfer syntax
        ],
    )
    def test_media_types(self, tmp_path: Path, transfer_syntax_uid: str, media_type: str) -> None:
        """The media type follows the transfer syntax (PS3.18 §8.7.3); the part is labelled with the syntax."""
        path = encapsulated_instance(tmp_path / "f.dcm", [fake_jpeg(1)], transfer_syntax_uid=transfer_syntax_uid)
        assert read_frames(path, [1]) == [Frame(fake_jpeg(1), media_type, transfer_syntax_uid)]

    def test_encapsulated_uncompressed(self, tmp_path: Path) -> None:
        """Encapsulated Uncompressed frames are native little endian bytes: octet-stream, Explicit VR LE."""
        expected = [bytes([number]) * 256 for number in range(1, 4)]
        path = encapsulated_instance(tmp_path / "f.dcm", expected, transfer_syntax_uid="1.2.840.10008.1.2.1.98")
        assert all_frames(path) == [
            Frame(data, "application/octet-stream", ExplicitVRLittleEndian) for data in expected
        ]

    def test_video(self, tmp_path: Path) -> None:
        """An MPEG-4 stream holds all frames in one stream: no single frame can be cut out."""
        path = encapsulated_instance(tmp_path / "video.dcm", [fake_jpeg(1)] * 2, "none", transfer_syntax_uid=MPEG4HP41)
        with pytest.raises(FramesNotExtractable, match="video"):
            read_frames(path, [1])


class TestErrors:
    @pytest.mark.parametrize("number", [0, -1, 16, 1000])
    def test_frame_out_of_range(self, number: int) -> None:
        """A frame number outside 1..Number of Frames names the number and the count."""
        with pytest.raises(FrameNotFound, match=rf"^frame {number} does not exist: the instance has 15 frames"):
            read_frames(RT_DOSE, [1, number])

    def test_single_frame_out_of_range(self) -> None:
        """Without Number of Frames an instance has one frame."""
        with pytest.raises(FrameNotFound, match="frame 2 does not exist: the instance has 1 frame "):
            read_frames(CT, [2])

    def test_no_pixel_data(self) -> None:
        """An instance without pixel data has no frames."""
        with pytest.raises(NoPixelData, match="no pixel data"):
            read_frames(SR, [1])

    def test_truncated_native_pixel_data(self) -> None:
        """A file cut inside its pixel data is a broken file, not a short frame."""
        with pytest.raises(BrokenPixelData, match="ends inside"):
            read_frames(MR_TRUNCATED, [1])

    def test_fewer_fragments_than_frames(self, tmp_path: Path) -> None:
        """Without an offset table, fewer fragments than frames cannot be split into frames."""
        path = encapsulated_instance(tmp_path / "f.dcm", [fake_jpeg(1), fake_jpeg(2)], "none", number_of_frames=3)
        with pytest.raises(BrokenPixelData):
            read_frames(path, [3])

    def test_native_pixel_data_too_short(self, tmp_path: Path) -> None:
        """Native pixel data shorter than Number of Frames promises."""
        ds = image(ExplicitVRLittleEndian, 3)
        ds.PixelData = bytes(16 * 16 * 2)
        ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
        assert len(read_frames(tmp_path / "short.dcm", [2])[0].data) == 256
        with pytest.raises(BrokenPixelData, match="too short for frame 3"):
            read_frames(tmp_path / "short.dcm", [3])


class TestReadsOnlyWhatItNeeds:
    def test_pixel_element_found_without_pydicom_stopping_there(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Should pydicom leave the file elsewhere after stop_before_pixels, the element is located another way."""
        real_dcmread: Callable[..., Dataset] = pydicom.dcmread

        def dcmread(file: object, **kwargs: object) -> Dataset:
            ds = real_dcmread(file, **kwargs)
            if kwargs.get("stop_before_pixels") and hasattr(file, "seek"):
                file.seek(0)
            return ds

        monkeypatch.setattr(frames_module, "dcmread", dcmread)
        assert [frame.data for frame in all_frames(RT_DOSE_BIG_ENDIAN)] == native_frames(RT_DOSE)
        assert [frame.data for frame in all_frames(MULTIFRAME_US)] == pydicom_frames(MULTIFRAME_US)

    @pytest.mark.parametrize("offsets", ["basic", "none"])
    def test_memory_for_one_frame(self, tmp_path: Path, offsets: Offsets) -> None:
        """Reading one frame of a 200-frame, 20 MB instance allocates little more than that frame."""
        frame_size = 100_000
        expected = [fake_jpeg(number, frame_size) for number in range(1, 201)]
        path = encapsulated_instance(tmp_path / "big.dcm", expected, offsets)
        tracemalloc.start()
        try:
            (frame,) = read_frames(path, [100])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert frame.data == expected[99]
        assert peak < 5 * frame_size
