"""Where each frame's bytes are in a stored file, recorded at store time, and reading them back.

``frame_index`` gives the byte ranges of every frame: the range of a native frame, or the fragments of an
encapsulated one (from the Extended or Basic Offset Table, else one fragment per frame when the counts agree, PS3.5
§A.4). ``read_indexed`` then reads exactly those ranges with no parsing at all. Frames that are not plain byte ranges
(deflated, big endian words, 1-bit frames that start inside a byte, video, fragments that only JPEG markers tell
apart) get no index; ``frames.read_frames`` cuts those out of the file.

Locating the frames is also the store's check that the pixel data holds the frames its attributes describe. It reads
the 8-byte item headers, the offset tables and the 64-byte RLE headers, never a frame, and raises ``BrokenPixelData``
(the store refuses the instance with 0xC000, as no reader could serve its frames) for:

* Pixel Data encapsulated (undefined length) in a native transfer syntax, or not in an encapsulated one (PS3.5 §A.4);
* native pixel data shorter than Number of Frames x Rows x Columns x Samples per Pixel x Bits Allocated;
* item headers that do not parse up to the Sequence Delimitation Item, no fragment at all, or fewer fragments than
  frames (PS3.5 §A.4: a fragment holds data of one frame at most; video streams excepted, PS3.5 §8.2.5);
* a Basic or Extended Offset Table (PS3.5 §A.4, PS3.3 §C.7.6.3.1.8) that does not give one offset per frame, the
  first 0, increasing, each at an item tag; an Extended Offset Table with other than one fragment per frame, or a
  length in Extended Offset Table Lengths longer than its fragment;
* an RLE frame whose header (PS3.5 §G.5) does not give Samples per Pixel x bytes per sample segments (PS3.5 §G.2),
  the first at byte 64 and the others after it inside the frame;
* an Encapsulated Uncompressed fragment shorter than its native frame.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from .frames import (
    ENCAPSULATED_UNCOMPRESSED,
    ITEM,
    MEDIA_TYPES,
    NATIVE_TRANSFER_SYNTAXES,
    PIXEL_DATA_TAGS,
    UNDEFINED_LENGTH,
    VIDEO_TRANSFER_SYNTAXES,
    BrokenPixelData,
    Frame,
    bits_allocated_of,
    check_frame_numbers,
    fragment_items,
    frame_bits_of,
    frame_label,
    number_of_frames_of,
    swap_unit,
)

# Where a frame's bytes are in its file: one (offset, length) per fragment (one range for native pixel data).
FrameIndex = list[list[tuple[int, int]]]

NATIVE = NATIVE_TRANSFER_SYNTAXES | {DeflatedExplicitVRLittleEndian}
ENCAPSULATED = MEDIA_TYPES.keys() | {ENCAPSULATED_UNCOMPRESSED} | VIDEO_TRANSFER_SYNTAXES
RLE_HEADER = 64  # bytes: the number of segments and 15 segment offsets, each a 32-bit little endian UL (PS3.5 §G.5)
MAX_RLE_SEGMENTS = 15


def frame_index(file: BinaryIO, ds: Dataset) -> FrameIndex | None:
    """Byte ranges of every frame of the instance ``ds`` was read from (``file``), or None when its frames are not
    plain byte ranges; raises BrokenPixelData when the pixel data cannot hold the frames its attributes describe.

    ``ds`` must have been read with its pixel data deferred (``defer_size``), as the store does, so that the
    element's position is known without having read the value."""
    transfer_syntax_uid = str(ds.file_meta.get("TransferSyntaxUID", "") or "").strip()
    raw = next((ds.get_item(tag, keep_deferred=True) for tag in PIXEL_DATA_TAGS if tag in ds), None)
    if not isinstance(raw, RawDataElement) or raw.value_tell is None:
        return None
    count = number_of_frames_of(ds)
    encapsulated = raw.length == UNDEFINED_LENGTH
    if encapsulated and transfer_syntax_uid in NATIVE:
        raise BrokenPixelData(
            f"the pixel data is encapsulated (undefined length) but transfer syntax {transfer_syntax_uid} is native "
            "(PS3.5 A.4)"
        )
    if not encapsulated and raw.tag == Tag("PixelData") and transfer_syntax_uid in ENCAPSULATED:
        raise BrokenPixelData(
            f"the pixel data has a defined length but transfer syntax {transfer_syntax_uid} encapsulates it (PS3.5 A.4)"
        )
    if not encapsulated:
        return _native_index(ds, raw, count, transfer_syntax_uid)
    return _encapsulated_index(file, ds, raw.value_tell, count, transfer_syntax_uid)


def _native_index(ds: Dataset, raw: RawDataElement, count: int, transfer_syntax_uid: str) -> FrameIndex | None:
    frame_bits = frame_bits_of(ds)
    needed = -(-count * frame_bits // 8)
    if raw.length < needed:
        if transfer_syntax_uid not in NATIVE:
            return None  # a private transfer syntax: its pixel data may well be compressed
        raise BrokenPixelData(
            f"the pixel data is {raw.length} bytes long, but {count} frame{'s' if count != 1 else ''} of "
            f"Rows x Columns x SamplesPerPixel x BitsAllocated = {frame_bits} bits need {needed} bytes"
        )
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        return None  # the value is in the deflate stream, not at a place in the file
    if ds.original_encoding[1] is False and swap_unit(str(raw.VR or ""), bits_allocated_of(ds)) != 1:
        return None  # big endian words: swapped when served
    if frame_bits % 8:
        return None  # 1-bit frames that start inside a byte
    size = frame_bits // 8
    return [[(raw.value_tell + n * size, size)] for n in range(count)]


def _encapsulated_index(
    file: BinaryIO, ds: Dataset, value_tell: int, count: int, transfer_syntax_uid: str
) -> FrameIndex | None:
    first_fragment, basic, extended, lengths = _offset_tables(file, ds, value_tell)
    try:
        items = fragment_items(file, first_fragment)
    except BrokenPixelData as exc:
        raise BrokenPixelData(f"the fragments of the encapsulated pixel data do not parse: {exc}") from None
    if not items:
        raise BrokenPixelData("the encapsulated pixel data holds no fragment")
    if transfer_syntax_uid in VIDEO_TRANSFER_SYNTAXES:
        return None  # one stream, cut into fragments anywhere (PS3.5 §8.2.5): its frames are not byte ranges
    try:
        frames = _frames(items, count, first_fragment, basic, extended, lengths)
    except BrokenPixelData:
        if transfer_syntax_uid in ENCAPSULATED:
            raise
        return None  # a private transfer syntax need not keep to one frame per fragment
    if frames is None:
        return None
    if transfer_syntax_uid == RLELossless:
        _check_rle(file, ds, frames)
    if transfer_syntax_uid == ENCAPSULATED_UNCOMPRESSED:
        return _uncompressed_frames(ds, frames)
    return frames


def _frames(
    items: list[tuple[int, int]],
    count: int,
    first_fragment: int,
    basic: list[int],
    extended: list[int] | None,
    lengths: list[int] | None,
) -> FrameIndex | None:
    """The fragments of each frame, from the offset tables once checked, else one fragment per frame when the counts
    agree; None when only JPEG markers could tell the frames apart."""
    if len(items) < count:
        raise BrokenPixelData(
            f"the encapsulated pixel data holds {len(items)} fragment{'s' if len(items) != 1 else ''} for {count} "
            "frames, and a fragment holds data of one frame at most (PS3.5 A.4)"
        )
    starts = {position for position, _ in items}
    if basic:
        _check_offsets("Basic Offset Table", basic, count, first_fragment, starts)
    if extended is not None:
        _check_offsets("Extended Offset Table", extended, count, first_fragment, starts)
        _check_extended(lengths, items, count)
    offsets = extended or basic  # the Extended Offset Table first, as pydicom and frames.py read them
    if offsets:
        frame_starts = {first_fragment + offset for offset in offsets}
        frames: FrameIndex = []
        for position, length in items:
            if position in frame_starts:
                frames.append([])
            frames[-1].append((position + 8, length))
        return frames
    if count == 1:
        return [[(position + 8, length) for position, length in items]]
    if len(items) == count:
        return [[(position + 8, length)] for position, length in items]
    return None


def _uncompressed_frames(ds: Dataset, frames: FrameIndex) -> FrameIndex | None:
    """Encapsulated Uncompressed: a native frame in a fragment of its own, padded to an even length; indexed without
    the padding, as ``frames.read_frames`` cuts it."""
    frame_bits = frame_bits_of(ds)
    if frame_bits % 8 or any(len(ranges) != 1 for ranges in frames):
        return None
    size = frame_bits // 8
    for number, [(_, length)] in enumerate(frames, start=1):
        if length < size:
            raise BrokenPixelData(
                f"Encapsulated Uncompressed frame {number} is {length} bytes, but Rows x Columns x SamplesPerPixel x "
                f"BitsAllocated make {size}"
            )
    return [[(ranges[0][0], size)] for ranges in frames]


def _offset_tables(
    file: BinaryIO, ds: Dataset, value_tell: int
) -> tuple[int, list[int], list[int] | None, list[int] | None]:
    """Where the first fragment's item tag is; the Basic Offset Table; the Extended Offset Table and its Lengths
    (None when absent). All offsets count from the first fragment's item tag."""
    tag, length = _item_header(_read(file, value_tell, 8))
    if tag != ITEM or length == UNDEFINED_LENGTH or length % 4:
        raise BrokenPixelData("the encapsulated pixel data does not start with a Basic Offset Table item (PS3.5 A.4)")
    basic = list(struct.unpack(f"<{length // 4}L", _read(file, value_tell + 8, length)))
    extended = _very_longs(file, ds, "ExtendedOffsetTable")
    return value_tell + 8 + length, basic, extended, _very_longs(file, ds, "ExtendedOffsetTableLengths")


def _very_longs(file: BinaryIO, ds: Dataset, keyword: str) -> list[int] | None:
    """The 64-bit values of an OV element (PS3.5 §6.2), None when it is absent."""
    element = ds.get_item(Tag(keyword), keep_deferred=True)
    if element is None:
        return None
    value = element.value
    if value is None and isinstance(element, RawDataElement) and element.value_tell is not None:
        value = _read(file, element.value_tell, element.length)  # deferred: read it from the file
    value = value or b""
    if not isinstance(value, bytes) or len(value) % 8:
        raise BrokenPixelData(f"{keyword} is not a list of 64-bit offsets ({len(value)} bytes)")
    return list(struct.unpack(f"<{len(value) // 8}Q", value))


def _check_offsets(name: str, offsets: list[int], count: int, first_fragment: int, starts: set[int]) -> None:
    """PS3.5 §A.4: one offset per frame, of the first byte of the item tag of its first fragment, counted from the
    first fragment's item tag (so the first is 0)."""
    if len(offsets) != count:
        raise BrokenPixelData(f"the {name} has {len(offsets)} offsets for {count} frames")
    if offsets[0] != 0:
        raise BrokenPixelData(f"the {name} gives frame 1 offset {offsets[0]}, not 0")
    for number, (previous, offset) in enumerate(pairwise(offsets), start=2):
        if offset <= previous:
            raise BrokenPixelData(f"the {name} gives frame {number} offset {offset}, not after frame {number - 1}'s")
    for number, offset in enumerate(offsets, start=1):
        if first_fragment + offset not in starts:
            raise BrokenPixelData(
                f"the {name} gives frame {number} offset {offset}, byte {first_fragment + offset} of the file, "
                "where no fragment starts"
            )


def _check_extended(lengths: list[int] | None, items: list[tuple[int, int]], count: int) -> None:
    """PS3.3 §C.7.6.3.1.8: an Extended Offset Table only where each frame is one fragment; pydicom reads each frame
    as the Extended Offset Table Lengths say."""
    if len(items) != count:
        raise BrokenPixelData(
            f"the Extended Offset Table needs one fragment per frame (PS3.3 C.7.6.3.1.8); there are {len(items)} "
            f"fragments for {count} frames"
        )
    if lengths is None:
        return
    if len(lengths) != count:
        raise BrokenPixelData(f"the Extended Offset Table Lengths has {len(lengths)} lengths for {count} frames")
    for number, (length, (_, fragment_length)) in enumerate(zip(lengths, items, strict=True), start=1):
        if length > fragment_length:
            raise BrokenPixelData(
                f"the Extended Offset Table Lengths gives frame {number} {length} bytes, its fragment has "
                f"{fragment_length}"
            )


def _check_rle(file: BinaryIO, ds: Dataset, frames: FrameIndex) -> None:
    """Each RLE frame starts with a header (PS3.5 §G.5) of one segment per byte of each sample (PS3.5 §G.2)."""
    samples = ds.get("SamplesPerPixel")
    bits_allocated = bits_allocated_of(ds)
    if not isinstance(samples, int) or samples < 1:
        raise BrokenPixelData(f"SamplesPerPixel is {samples!r}; RLE segments cannot be counted")
    segments_needed = samples * -(-bits_allocated // 8)
    if segments_needed > MAX_RLE_SEGMENTS:
        raise BrokenPixelData(
            f"SamplesPerPixel {samples} x BitsAllocated {bits_allocated} make {segments_needed} RLE segments, "
            f"more than the {MAX_RLE_SEGMENTS} an RLE header holds (PS3.5 G.5)"
        )
    for number, ranges in enumerate(frames, start=1):
        size = sum(length for _, length in ranges)
        if size < RLE_HEADER:
            raise BrokenPixelData(f"RLE frame {number} is {size} bytes, less than its {RLE_HEADER}-byte header")
        header = b""
        for offset, length in ranges:
            file.seek(offset)  # no _read: a few bytes, and the buffered reader keeps its buffer for the next frame
            header += file.read(min(length, RLE_HEADER - len(header)))
            if len(header) == RLE_HEADER:
                break
        if len(header) < RLE_HEADER:
            raise BrokenPixelData("the file ends inside its pixel data")
        segments, *offsets = struct.unpack(f"<{RLE_HEADER // 4}L", header)
        if segments != segments_needed:
            raise BrokenPixelData(
                f"RLE frame {number} has {segments} segments, but SamplesPerPixel {samples} x BitsAllocated "
                f"{bits_allocated} make {segments_needed} (PS3.5 G.2)"
            )
        starts = offsets[:segments]
        if starts[0] != RLE_HEADER or any(b <= a for a, b in pairwise(starts)) or starts[-1] >= size:
            raise BrokenPixelData(
                f"RLE frame {number}'s segment offsets {starts} do not start at {RLE_HEADER} and increase inside "
                f"its {size} bytes (PS3.5 G.5)"
            )


def _item_header(header: bytes) -> tuple[int, int]:
    group, element, length = struct.unpack("<HHL", header)
    return group << 16 | element, length


def _read(file: BinaryIO, position: int, size: int) -> bytes:
    """Exactly ``size`` bytes at ``position``; a length past the end of the file is never allocated."""
    if position + size > file.seek(0, os.SEEK_END):
        raise BrokenPixelData("the file ends inside its pixel data")
    file.seek(position)
    return file.read(size)


def read_indexed(
    source: Path | Callable[[Sequence[tuple[int, int]]], list[bytes]],
    index: FrameIndex,
    transfer_syntax_uid: str,
    numbers: list[int],
) -> list[Frame]:
    """The frames numbered ``numbers`` read at the byte ranges the store recorded (``frame_index``), from a file or
    by a reader of ranges (``Storage.read_ranges_now`` of the stored file: preads of a file, ranged GETs of an
    object)."""
    check_frame_numbers(numbers, len(index))
    media_type, syntax = frame_label(transfer_syntax_uid)
    wanted = [(int(offset), int(length)) for number in numbers for offset, length in index[number - 1]]
    parts = iter(_pread_all(source, wanted) if isinstance(source, Path) else source(wanted))
    found: list[Frame] = []
    for number in numbers:
        ranges = index[number - 1]
        data = b"".join(next(parts) for _ in ranges)
        if len(data) != sum(length for _, length in ranges):
            raise BrokenPixelData("the file ends inside its pixel data")
        found.append(Frame(data, media_type, syntax))
    return found


def _pread_all(path: Path, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    with path.open("rb") as file:
        descriptor = file.fileno()
        return [os.pread(descriptor, length, offset) for offset, length in ranges]
