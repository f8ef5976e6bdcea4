"""dicomweb/frame_index.py: the byte ranges recorded at store time give the frames that reading the file gives."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from dicomweb.dicomjson import BULK_DATA_THRESHOLD
from dicomweb.frame_index import FrameIndex, frame_index, read_indexed
from dicomweb.frames import FrameError, FrameNotFound, read_frames

from .data import CT, DEFLATED, JPEG_LS, MR, MR_BIG_ENDIAN, MR_IMPLICIT, MULTIFRAME_US, readable_test_files
from .data import JPEG2000 as JPEG2000_FILE
from .test_frames import RGB_RLE_2_FRAMES, RT_DOSE_RLE, Offsets, all_frames, encapsulated_instance, fake_jpeg


def indexed(path: Path) -> FrameIndex | None:
    """The index the store records for the file (read as instance.read_instance reads it)."""
    ds = pydicom.dcmread(path, defer_size=BULK_DATA_THRESHOLD)
    with path.open("rb") as file:
        return frame_index(file, ds)


INDEXABLE = [MR, MR_IMPLICIT, CT, MULTIFRAME_US, RGB_RLE_2_FRAMES, RT_DOSE_RLE, JPEG2000_FILE, JPEG_LS]


class TestFrameIndex:
    """Byte ranges recorded at store time give the very frames that reading the file gives."""

    @pytest.mark.parametrize("path", readable_test_files(), ids=lambda p: p.name)
    def test_every_readable_file(self, path: Path) -> None:
        """For every pydicom test file with an index: each frame read through it equals the file-parsing path."""
        index = indexed(path)
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
