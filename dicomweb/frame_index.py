"""Where each frame's bytes are in a stored file, recorded at store time, and reading them back.

``frame_index`` gives the byte ranges of every frame: the range of a native frame, or the fragments of an
encapsulated one (from the Basic or Extended Offset Table, else one fragment per frame when the counts agree, PS3.5
§A.4). ``read_indexed`` then reads exactly those ranges with no parsing at all. Frames that are not plain byte ranges
(deflated, big endian words, 1-bit frames that start inside a byte, video, fragments that only JPEG markers tell
apart) get no index; ``frames.read_frames`` cuts those out of the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from .frames import (
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
    frame_offsets,
    number_of_frames_of,
    swap_unit,
)

# Where a frame's bytes are in its file: one (offset, length) per fragment (one range for native pixel data).
FrameIndex = list[list[tuple[int, int]]]


def frame_index(file: BinaryIO, ds: Dataset) -> FrameIndex | None:
    """Byte ranges of every frame of the instance ``ds`` was read from (``file``), or None when its frames are not
    plain byte ranges. ``ds`` must have been read with its pixel data deferred (``defer_size``), as the store does,
    so that the element's position is known without having read the value."""
    transfer_syntax_uid = str(ds.file_meta.get("TransferSyntaxUID", "") or "").strip()
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian or transfer_syntax_uid in VIDEO_TRANSFER_SYNTAXES:
        return None
    raw = next((ds.get_item(tag, keep_deferred=True) for tag in PIXEL_DATA_TAGS if tag in ds), None)
    if not isinstance(raw, RawDataElement) or raw.value_tell is None:
        return None
    try:
        count = number_of_frames_of(ds)
        if raw.length != UNDEFINED_LENGTH:
            return _native_index(ds, raw, count)
        return _encapsulated_index(file, ds, raw.value_tell, count)
    except (BrokenPixelData, struct.error):
        return None  # served the slow way, which says what is wrong when a frame is asked for


def _native_index(ds: Dataset, raw: RawDataElement, count: int) -> FrameIndex | None:
    if ds.original_encoding[1] is False and swap_unit(str(raw.VR or ""), bits_allocated_of(ds)) != 1:
        return None  # big endian words: swapped when served
    frame_bits = frame_bits_of(ds)
    if frame_bits % 8 or count * frame_bits // 8 > raw.length:
        return None
    size = frame_bits // 8
    return [[(raw.value_tell + n * size, size)] for n in range(count)]


def _encapsulated_index(file: BinaryIO, ds: Dataset, value_tell: int, count: int) -> FrameIndex | None:
    first_fragment, offsets = frame_offsets(file, ds, value_tell, count)
    items = fragment_items(file, first_fragment)
    if offsets:
        starts = {position: n for n, position in enumerate(first_fragment + offset for offset in offsets)}
        if all(position in {p for p, _ in items} for position in starts):
            frames: FrameIndex = []
            for position, length in items:
                if position in starts:
                    frames.append([])
                frames[-1].append((position + 8, length))
            return frames
    if count == 1:
        return [[(position + 8, length) for position, length in items]]
    if len(items) == count:
        return [[(position + 8, length)] for position, length in items]
    return None


def read_indexed(path: Path, index: FrameIndex, transfer_syntax_uid: str, numbers: list[int]) -> list[Frame]:
    """The frames numbered ``numbers`` read at the byte ranges the store recorded (``frame_index``)."""
    check_frame_numbers(numbers, len(index))
    media_type, syntax = frame_label(transfer_syntax_uid)
    found: list[Frame] = []
    with path.open("rb") as file:
        descriptor = file.fileno()
        for number in numbers:
            data = b"".join(os.pread(descriptor, length, offset) for offset, length in index[number - 1])
            if len(data) != sum(length for _, length in index[number - 1]):
                raise BrokenPixelData("the file ends inside its pixel data")
            found.append(Frame(data, media_type, syntax))
    return found
