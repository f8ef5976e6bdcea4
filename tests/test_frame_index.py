"""dicomweb/frame_index.py: the byte ranges recorded at store time give the frames that reading the file gives, and
pixel data that cannot hold its frames is found broken without decoding a frame."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import MPEG4HP41, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from dicomweb.dicomjson import BULK_DATA_THRESHOLD
from dicomweb.frame_index import FrameIndex, frame_index, read_indexed
from dicomweb.frames import ENCAPSULATED_UNCOMPRESSED, BrokenPixelData, FrameError, FrameNotFound, read_frames

from .data import CT, DEFLATED, JPEG_LS, MR, MR_BIG_ENDIAN, MR_IMPLICIT, MULTIFRAME_US, ct_instance, readable_test_files
from .data import JPEG2000 as JPEG2000_FILE
from .test_frames import (
    RGB_RLE_2_FRAMES,
    RT_DOSE_RLE,
    Offsets,
    all_frames,
    encapsulated_instance,
    fake_jpeg,
    image,
)


def indexed(path: Path) -> FrameIndex | None:
    """The index the store records for the file (read as instance.read_instance reads it)."""
    ds = pydicom.dcmread(path, defer_size=BULK_DATA_THRESHOLD)
    with path.open("rb") as file:
        return frame_index(file, ds)


def value_tell(path: Path) -> int:
    """Where the pixel data value starts in the file."""
    raw = pydicom.dcmread(path, defer_size=BULK_DATA_THRESHOLD).get_item("PixelData", keep_deferred=True)
    assert isinstance(raw, RawDataElement) and raw.value_tell is not None
    return raw.value_tell


def edited(tmp_path: Path, source: Path, position: int, data: bytes) -> Path:
    """A copy of ``source`` with ``data`` written over its bytes at ``position``."""
    content = bytearray(source.read_bytes())
    content[position : position + len(data)] = data
    path = tmp_path / f"edited-{source.name}"
    path.write_bytes(bytes(content))
    return path


def broken(path: Path) -> str:
    """Why frame_index finds the pixel data broken."""
    with pytest.raises(BrokenPixelData) as caught:
        indexed(path)
    return str(caught.value)


INDEXABLE = [MR, MR_IMPLICIT, CT, MULTIFRAME_US, RGB_RLE_2_FRAMES, RT_DOSE_RLE, JPEG2000_FILE, JPEG_LS]


class TestFrameIndex:
    """Byte ranges recorded at store time give the very frames that reading the file gives."""

    @pytest.mark.parametrize("path", readable_test_files(), ids=lambda p: p.name)
    def test_every_readable_file(self, path: Path) -> None:
        """For every pydicom test file with an index: each frame read through it equals the file-parsing path."""
        try:
            index = indexed(path)
        except BrokenPixelData:  # the store refuses it (test_instance.py names those); reading finds it broken too
            with pytest.raises(FrameError):
                read_frames(path, [1])
            return
        if index is None:
            return
        count = len(index)
        numbers = sorted({1, 2, count // 2, count} & set(range(1, count + 1)))
        transfer_syntax_uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        try:
            expected = read_frames(path, numbers)
        except FrameError:  # a broken file (the store refuses those): the index must not hide it
            with pytest.raises(FrameError):
                read_indexed(path, index, transfer_syntax_uid, numbers)
            return
        assert read_indexed(path, index, transfer_syntax_uid, numbers) == expected

    @pytest.mark.parametrize("path", INDEXABLE, ids=lambda p: p.name)
    def test_common_files_are_indexed(self, path: Path) -> None:
        """Native little endian and the usual encapsulated files get an index with one entry per frame."""
        index = indexed(path)
        assert index is not None and len(index) == len(all_frames(path))

    @pytest.mark.parametrize("path", [DEFLATED, MR_BIG_ENDIAN], ids=lambda p: p.name)
    def test_not_plain_ranges(self, path: Path) -> None:
        """Deflated data and big endian words are not byte ranges of the file: no index (read the slow way)."""
        assert indexed(path) is None

    @pytest.mark.parametrize(
        ("offsets", "fragments_per_frame"),
        [("basic", 1), ("none", 1), ("extended", 1), ("basic", 3)],
    )
    def test_offset_tables(self, tmp_path: Path, offsets: Offsets, fragments_per_frame: int) -> None:
        """Several fragments per frame are several ranges; without an offset table only one fragment per frame
        can be told apart without reading the data."""
        expected = [fake_jpeg(number) for number in range(1, 21)]
        path = encapsulated_instance(tmp_path / "jpeg.dcm", expected, offsets, fragments_per_frame)
        index = indexed(path)
        assert index is not None and {len(ranges) for ranges in index} == {fragments_per_frame}
        found = read_indexed(path, index, JPEGBaseline8Bit, [20, 1, 7])
        assert [frame.data for frame in found] == [expected[19], expected[0], expected[6]]
        assert {frame.media_type for frame in found} == {"image/jpeg"}

    def test_fragments_told_apart_only_by_markers(self, tmp_path: Path) -> None:
        """Three fragments per frame and no offset table: no index."""
        path = encapsulated_instance(tmp_path / "jpeg.dcm", [fake_jpeg(n) for n in range(1, 5)], "none", 3)
        assert indexed(path) is None

    def test_frame_beyond_the_index(self) -> None:
        index = indexed(CT)
        assert index is not None
        with pytest.raises(FrameNotFound, match="has 1 frame"):
            read_indexed(CT, index, ExplicitVRLittleEndian, [2])


def rle_frame(segments: int = 1, offsets: tuple[int, ...] = (64,), size: int = 256) -> bytes:
    """An RLE frame whose header (PS3.5 §G.5) gives ``segments`` segments at ``offsets``; the rest is literal runs."""
    header = struct.pack("<16L", segments, *offsets, *([0] * (15 - len(offsets))))
    return header + (bytes([127]) + bytes(128)) * (size // 129 + 1)


class TestBrokenEncapsulatedPixelData:
    """Encapsulated pixel data (PS3.5 §A.4) whose item headers or offset tables cannot locate the frames."""

    def test_fragment_item_tag_garbled(self, tmp_path: Path) -> None:
        """The second fragment's item tag overwritten: the detail says at which byte the items stop parsing."""
        index = indexed(MULTIFRAME_US)
        assert index is not None
        position = index[1][0][0] - 8
        detail = broken(edited(tmp_path, MULTIFRAME_US, position, b"JUNK"))
        assert detail == (
            "the fragments of the encapsulated pixel data do not parse: "
            f"unexpected data at byte {position} of the file inside the encapsulated pixel data"
        )

    def test_fragment_length_past_the_end(self, tmp_path: Path) -> None:
        """A fragment length beyond the end of the file is never read (nor allocated)."""
        index = indexed(JPEG2000_FILE)
        assert index is not None
        path = edited(tmp_path, JPEG2000_FILE, index[0][0][0] - 4, struct.pack("<L", 0x7FFFFFF0))
        assert "do not parse: the file ends inside its pixel data" in broken(path)

    def test_no_basic_offset_table_item(self, tmp_path: Path) -> None:
        """The value must start with the Basic Offset Table item, empty or not."""
        path = edited(tmp_path, MULTIFRAME_US, value_tell(MULTIFRAME_US), b"\0\0\0\0")
        assert "does not start with a Basic Offset Table item" in broken(path)

    def test_basic_offset_beyond_the_value(self, tmp_path: Path) -> None:
        """The last of the 30 offsets points past the end of the pixel data."""
        position = value_tell(MULTIFRAME_US) + 8 + 29 * 4
        detail = broken(edited(tmp_path, MULTIFRAME_US, position, struct.pack("<L", 0xFFFFFF)))
        assert "the Basic Offset Table gives frame 30 offset 16777215" in detail
        assert "where no fragment starts" in detail

    def test_basic_offset_inside_a_fragment(self, tmp_path: Path) -> None:
        """An offset two bytes into a fragment is no item tag."""
        position = value_tell(MULTIFRAME_US) + 8 + 4
        (offset,) = struct.unpack("<L", MULTIFRAME_US.read_bytes()[position : position + 4])
        detail = broken(edited(tmp_path, MULTIFRAME_US, position, struct.pack("<L", offset + 2)))
        assert f"frame 2 offset {offset + 2}" in detail and "where no fragment starts" in detail

    def test_basic_offsets_not_increasing(self, tmp_path: Path) -> None:
        """Frames 2 and 3 swapped in the table."""
        position = value_tell(MULTIFRAME_US) + 8 + 4
        second, third = struct.unpack("<2L", MULTIFRAME_US.read_bytes()[position : position + 8])
        detail = broken(edited(tmp_path, MULTIFRAME_US, position, struct.pack("<2L", third, second)))
        assert detail == f"the Basic Offset Table gives frame 3 offset {second}, not after frame 2's"

    def test_first_basic_offset_not_zero(self, tmp_path: Path) -> None:
        """The first frame starts at the first fragment: offset 0."""
        path = edited(tmp_path, MULTIFRAME_US, value_tell(MULTIFRAME_US) + 8, struct.pack("<L", 4))
        assert broken(path) == "the Basic Offset Table gives frame 1 offset 4, not 0"

    def test_basic_offsets_for_another_number_of_frames(self, tmp_path: Path) -> None:
        """20 offsets, Number of Frames 19."""
        frames = [fake_jpeg(n) for n in range(1, 21)]
        path = encapsulated_instance(tmp_path / "jpeg.dcm", frames, "basic", number_of_frames=19)
        assert broken(path) == "the Basic Offset Table has 20 offsets for 19 frames"

    def test_fewer_fragments_than_frames(self, tmp_path: Path) -> None:
        """20 fragments cannot hold 21 frames: a fragment holds data of one frame at most."""
        frames = [fake_jpeg(n) for n in range(1, 21)]
        path = encapsulated_instance(tmp_path / "jpeg.dcm", frames, "none", number_of_frames=21)
        assert broken(path).startswith("the encapsulated pixel data holds 20 fragments for 21 frames")

    def test_no_fragment(self, tmp_path: Path) -> None:
        """An empty Basic Offset Table item and then the Sequence Delimitation Item: no frame at all."""
        ds = image(JPEGBaseline8Bit, None)
        ds.PixelData = struct.pack("<HHL", 0xFFFE, 0xE000, 0)
        ds["PixelData"].is_undefined_length = True
        path = tmp_path / "empty.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        assert broken(path) == "the encapsulated pixel data holds no fragment"

    def test_extended_offset_inside_a_fragment(self, tmp_path: Path) -> None:
        """An Extended Offset Table (PS3.3 §C.7.6.3.1.8) offset that misses its item tag."""
        ds = image(JPEGBaseline8Bit, 3)
        pixel_data, offsets, lengths = encapsulate_extended([fake_jpeg(n) for n in range(1, 4)])
        values = list(struct.unpack("<3Q", offsets))
        ds.PixelData, ds.ExtendedOffsetTable = pixel_data, struct.pack("<3Q", values[0], values[1] + 2, values[2])
        ds.ExtendedOffsetTableLengths = lengths
        ds["PixelData"].is_undefined_length = True
        path = tmp_path / "extended.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        assert "the Extended Offset Table gives frame 2 offset" in broken(path)

    def test_extended_length_longer_than_its_fragment(self, tmp_path: Path) -> None:
        """pydicom reads each frame as long as Extended Offset Table Lengths says: not past its fragment."""
        ds = image(JPEGBaseline8Bit, 3)
        ds.PixelData, ds.ExtendedOffsetTable, lengths = encapsulate_extended([fake_jpeg(n) for n in range(1, 4)])
        ds.ExtendedOffsetTableLengths = struct.pack("<3Q", 2000, 2000, 2100)
        ds["PixelData"].is_undefined_length = True
        path = tmp_path / "extended.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        assert broken(path) == "the Extended Offset Table Lengths gives frame 3 2100 bytes, its fragment has 2000"

    def test_extended_offsets_with_several_fragments_per_frame(self, tmp_path: Path) -> None:
        """An Extended Offset Table is only allowed where each frame is one fragment."""
        ds = image(JPEGBaseline8Bit, 2)
        ds.PixelData = encapsulate([fake_jpeg(1), fake_jpeg(2)], fragments_per_frame=2, has_bot=False)
        fragment = 8 + 1000  # each 2000-byte frame is two 1000-byte fragments
        ds.ExtendedOffsetTable = struct.pack("<2Q", 0, 2 * fragment)
        ds["PixelData"].is_undefined_length = True
        path = tmp_path / "extended.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        assert "needs one fragment per frame" in broken(path)

    def test_extended_offset_table_not_64_bit(self, tmp_path: Path) -> None:
        """The Extended Offset Table is OV: 8 bytes per frame."""
        ds = image(JPEGBaseline8Bit, 1)
        ds.PixelData, _, _ = encapsulate_extended([fake_jpeg(1)])
        ds.ExtendedOffsetTable = bytes(4)
        ds["PixelData"].is_undefined_length = True
        path = tmp_path / "extended.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        assert broken(path) == "ExtendedOffsetTable is not a list of 64-bit offsets (4 bytes)"

    def test_video_fragments_are_parsed(self, tmp_path: Path) -> None:
        """A video stream gets no index, but its item headers must parse like any others."""
        path = encapsulated_instance(tmp_path / "video.dcm", [bytes(3000)] * 2, "none", transfer_syntax_uid=MPEG4HP41)
        assert indexed(path) is None
        assert "do not parse" in broken(edited(tmp_path, path, value_tell(path) + 8, b"JUNK"))

    def test_private_syntax_is_not_judged_by_frames(self, tmp_path: Path) -> None:
        """A private transfer syntax may pack frames as it likes: no index, but not refused."""
        frames = [fake_jpeg(n) for n in range(1, 3)]
        path = encapsulated_instance(
            tmp_path / "private.dcm", frames, "none", transfer_syntax_uid="1.2.3.4.5.6", number_of_frames=3
        )
        assert indexed(path) is None


class TestEncapsulation:
    """Pixel Data is encapsulated exactly when the transfer syntax compresses it (PS3.5 §A.4)."""

    def test_encapsulated_in_a_native_syntax(self, tmp_path: Path) -> None:
        """Fragments under Explicit VR Little Endian (written under a stand-in syntax of the same length, swapped)."""
        placeholder = "1.2.3." + "4" * (len(ExplicitVRLittleEndian) - 6)
        ds = image(placeholder, None)
        ds.PixelData = encapsulate([fake_jpeg(1)])
        ds["PixelData"].is_undefined_length = True
        path = tmp_path / "fragments.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        path.write_bytes(path.read_bytes().replace(placeholder.encode(), ExplicitVRLittleEndian.encode(), 1))
        assert broken(path) == (
            "the pixel data is encapsulated (undefined length) but transfer syntax 1.2.840.10008.1.2.1 is native "
            "(PS3.5 A.4)"
        )

    def test_native_in_an_encapsulated_syntax(self, tmp_path: Path) -> None:
        """A plain value under JPEG Baseline (written with a stand-in syntax of the same length, then swapped)."""
        placeholder = "1.2.3." + "4" * (len(JPEGBaseline8Bit) - 6)
        ds = image(placeholder, None)
        ds.PixelData = bytes(16 * 16)
        path = tmp_path / "plain.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        path.write_bytes(path.read_bytes().replace(placeholder.encode(), JPEGBaseline8Bit.encode(), 1))
        assert "has a defined length but transfer syntax 1.2.840.10008.1.2.4.50 encapsulates it" in broken(path)


class TestNativeLength:
    """Native pixel data must hold Number of Frames x Rows x Columns x Samples per Pixel x Bits Allocated bits."""

    def test_too_short(self, tmp_path: Path) -> None:
        """A 64 x 64 16-bit frame needs 8192 bytes."""
        path = tmp_path / "short.dcm"
        path.write_bytes(ct_instance(PixelData=bytes(8000)))
        assert broken(path) == (
            "the pixel data is 8000 bytes long, but 1 frame of Rows x Columns x SamplesPerPixel x BitsAllocated = "
            "65536 bits need 8192 bytes"
        )

    def test_more_frames_than_bytes(self, tmp_path: Path) -> None:
        """Number of Frames 2 over one frame's bytes."""
        path = tmp_path / "two.dcm"
        path.write_bytes(ct_instance(NumberOfFrames=2))
        assert "8192 bytes long, but 2 frames" in broken(path)

    def test_padding_is_allowed(self, tmp_path: Path) -> None:
        """More bytes than the frames need (odd-length padding, trailing bytes) are not refused."""
        path = tmp_path / "long.dcm"
        path.write_bytes(ct_instance(PixelData=bytes(8192 + 128)))
        assert indexed(path) == [[(value_tell(path), 8192)]]


class TestRLEHeader:
    """Each RLE frame's 64-byte header (PS3.5 §G.5) is read, never its segments."""

    def frame_start(self, path: Path, number: int) -> int:
        index = indexed(path)
        assert index is not None
        return index[number - 1][0][0]

    def test_segment_count(self, tmp_path: Path) -> None:
        """rtdose_rle.dcm is 32-bit: four segments per frame (PS3.5 §G.2); frame 3 says three."""
        path = edited(tmp_path, RT_DOSE_RLE, self.frame_start(RT_DOSE_RLE, 3), struct.pack("<L", 3))
        assert broken(path) == (
            "RLE frame 3 has 3 segments, but SamplesPerPixel 1 x BitsAllocated 32 make 4 (PS3.5 G.2)"
        )

    def test_first_segment_not_after_the_header(self, tmp_path: Path) -> None:
        """The first segment starts at byte 64, right after the header."""
        path = edited(tmp_path, RT_DOSE_RLE, self.frame_start(RT_DOSE_RLE, 2) + 4, struct.pack("<L", 60))
        assert broken(path).startswith("RLE frame 2's segment offsets [60, ")

    @pytest.mark.parametrize(
        ("frame", "expected"),
        [
            (rle_frame(1, (64,)), None),
            (rle_frame(2, (64, 128)), "has 2 segments, but SamplesPerPixel 1 x BitsAllocated 8 make 1"),
            (rle_frame(1, (64,), size=0)[:40], "is 40 bytes, less than its 64-byte header"),
            (rle_frame(16, (64,)), "has 16 segments"),
        ],
        ids=["valid", "two-segments", "shorter-than-header", "sixteen"],
    )
    def test_headers(self, tmp_path: Path, frame: bytes, expected: str | None) -> None:
        """One 16 x 16 8-bit frame: one segment at 64, inside the frame."""
        path = encapsulated_instance(tmp_path / "rle.dcm", [frame], transfer_syntax_uid=RLELossless)
        if expected is None:
            assert indexed(path) is not None
        else:
            assert expected in broken(path)

    def test_segment_beyond_the_frame(self, tmp_path: Path) -> None:
        """Three 8-bit samples: three segments, the last past the frame's end."""
        frame = rle_frame(3, (64, 100, 100_000))
        path = tmp_path / "rgb.dcm"
        ds = image(RLELossless, None, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=1)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].is_undefined_length = True
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        assert broken(path).startswith("RLE frame 1's segment offsets [64, 100, 100000] do not start at 64")


class TestEncapsulatedUncompressed:
    """Encapsulated Uncompressed: one native frame per fragment, padded to an even length."""

    def uncompressed(self, path: Path, frames: list[bytes]) -> Path:
        """Two 3 x 3 RGB frames (27 bytes each) as Encapsulated Uncompressed fragments."""
        placeholder = "1.2.3." + "4" * (len(ENCAPSULATED_UNCOMPRESSED) - 6)
        ds = image(placeholder, len(frames), Rows=3, Columns=3, SamplesPerPixel=3)
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].is_undefined_length = True
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
        path.write_bytes(path.read_bytes().replace(placeholder.encode(), ENCAPSULATED_UNCOMPRESSED.encode(), 1))
        return path

    def test_padding_is_not_indexed(self, tmp_path: Path) -> None:
        """Each 27-byte frame sits in a 28-byte fragment: the index holds the 27 bytes, as read_frames gives them."""
        expected = [bytes(range(27)), bytes(range(100, 127))]
        path = self.uncompressed(tmp_path / "rgb.dcm", expected)
        index = indexed(path)
        assert index is not None and [length for [(_, length)] in index] == [27, 27]
        assert [frame.data for frame in read_indexed(path, index, ENCAPSULATED_UNCOMPRESSED, [1, 2])] == expected

    def test_fragment_shorter_than_its_frame(self, tmp_path: Path) -> None:
        """A 20-byte fragment cannot hold a 27-byte frame."""
        path = self.uncompressed(tmp_path / "rgb.dcm", [bytes(27), bytes(20)])
        assert broken(path) == (
            "Encapsulated Uncompressed frame 2 is 20 bytes, but Rows x Columns x SamplesPerPixel x BitsAllocated "
            "make 27"
        )
