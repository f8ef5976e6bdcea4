"""Frames of a stored PS3.10 instance for WADO-RS Retrieve Frames, read without decoding or loading the pixel data.

Blocking file I/O: call it from a worker thread. Only the header (up to the pixel data element), the offset tables
and the requested frames are read:

* native pixel data: frame N starts ``(N - 1) * frame size`` into the value, so one seek and one read per frame;
  values in big endian files are swapped, because uncompressed bulk data is sent little endian (PS3.18 §8.7.3.3.2);
* encapsulated pixel data (PS3.5 §A.4): the Extended Offset Table (PS3.3 §C.7.6.3.1.8) or the Basic Offset Table
  gives where each frame's fragments start; without them, one frame per fragment when the counts agree (found by
  reading only the 8-byte item headers), else pydicom's frame splitting as a last resort.

Deflated files are the exception: the pixel data is inside the deflate stream, so the whole data set is read.

``frame_index.py`` records at store time where each frame's bytes are, so that most retrievals skip all of this.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragmented_frames
from pydicom.tag import Tag
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MPEGTransferSyntaxes,
    RLELossless,
)

OCTET_STREAM = "application/octet-stream"

# PS3.18 §8.7.3: the media type of a compressed frame follows from its transfer syntax.
MEDIA_TYPES: dict[str, str] = {
    JPEGBaseline8Bit: "image/jpeg",
    JPEGExtended12Bit: "image/jpeg",
    JPEGLossless: "image/jpeg",
    JPEGLosslessSV1: "image/jpeg",
    JPEGLSLossless: "image/jls",
    JPEGLSNearLossless: "image/jls",
    JPEG2000Lossless: "image/jp2",
    JPEG2000: "image/jp2",
    JPEG2000MCLossless: "image/jpx",
    JPEG2000MC: "image/jpx",
    "1.2.840.10008.1.2.4.110": "image/jxl",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111": "image/jxl",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112": "image/jxl",  # JPEG XL
    HTJ2KLossless: "image/jphc",
    HTJ2KLosslessRPCL: "image/jphc",
    HTJ2K: "image/jphc",
    RLELossless: "image/dicom-rle",
}
# Encapsulated Uncompressed Explicit VR Little Endian: each fragment is a native little endian frame.
ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"
# PS3.5 §8.2.5 to §8.2.7: MPEG-2, MPEG-4 and HEVC streams hold all frames in one stream, split into fragments at
# arbitrary points, so a single frame cannot be cut out without decoding.
VIDEO_TRANSFER_SYNTAXES = frozenset(MPEGTransferSyntaxes)
NATIVE_TRANSFER_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian})

# Values larger than this (overlays, LUTs) stay unread while the header is parsed.
HEADER_DEFER_SIZE = 64 * 1024  # bytes
MAX_FRAME_NUMBER = 2**31 - 1  # Number of Frames is an IS (PS3.5 Table 6.2-1)

PIXEL_DATA_TAGS = {
    Tag("PixelData"): "PixelData",
    Tag("FloatPixelData"): "FloatPixelData",
    Tag("DoubleFloatPixelData"): "DoubleFloatPixelData",
}
ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
EXPLICIT_VR_LENGTH_32 = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
FRAME_NUMBER = re.compile(r"\s*([0-9]+)\s*")
VR_BYTES = re.compile(rb"[A-Z]{2}")


class FrameError(ValueError):
    """Base of the errors below, so a caller can turn them all into one kind of response."""


class InvalidFrameList(FrameError):
    """The ``{frames}`` path segment is not a list of positive frame numbers; the client must fix the URL."""


class FrameNotFound(FrameError):
    """A requested frame number is below 1 or above the instance's Number of Frames."""


class NoPixelData(FrameError):
    """The instance has no Pixel Data, Float Pixel Data or Double Float Pixel Data, so it has no frames."""


class BrokenPixelData(FrameError):
    """The stored file does not hold the frames its attributes describe (a server-side data problem)."""


class FramesNotExtractable(FrameError):
    """The pixel data is one video stream (MPEG-2, MPEG-4, HEVC): frames exist only after decoding it."""


@dataclass(frozen=True)
class Frame:
    """One frame's bytes, with the media type and transfer syntax to label its response part with."""

    data: bytes
    media_type: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class _PixelElement:
    """Where the pixel data value is in the file; ``vr`` is empty in implicit VR files."""

    tag: int
    vr: str
    value_tell: int
    length: int


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a URL's ``{frames}`` segment, e.g. ``"1,3,5"``.

    PS3.18 (2017b §6.5.4) defines it as a comma-separated list of one or more non-duplicate frame numbers in any
    order; spaces around a number are tolerated. Duplicates are refused, which also bounds a response's size.
    """
    numbers: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        match = FRAME_NUMBER.fullmatch(part)
        if match is None:
            shown = f"{part!r} in {text!r}" if part else f"an empty entry in {text!r}"
            raise InvalidFrameList(
                f"invalid frame list: {shown} is not a frame number; send positive integers separated by commas"
            )
        digits = match.group(1).lstrip("0")
        if not digits:
            raise InvalidFrameList(f"invalid frame list {text!r}: frame numbers start at 1")
        if len(digits) > 10 or int(digits) > MAX_FRAME_NUMBER:
            raise InvalidFrameList(f"invalid frame list {text!r}: frame number {digits} is too large")
        number = int(digits)
        if number in seen:
            raise InvalidFrameList(f"invalid frame list {text!r}: frame {number} is listed more than once")
        seen.add(number)
        numbers.append(number)
    return numbers


def frame_count(path: Path) -> int:
    """The instance's number of frames (Number of Frames, 1 when absent); raises NoPixelData if it has none."""
    with path.open("rb") as file:
        ds, element = _read_header(file)
    if element is None:
        raise NoPixelData("the instance has no pixel data, so it has no frames")
    return number_of_frames_of(ds)


HEADER_CACHE_SIZE = 256  # parsed headers of recently read instances (a viewer asks for each frame separately)


@functools.lru_cache(maxsize=HEADER_CACHE_SIZE)
def _cached_header(path: Path) -> tuple[Dataset, _PixelElement | None] | None:
    """The header of a stored file, parsed once: stored files never change (storage.py gives every store a new
    name). Every element is converted here, so that threads sharing the cached data set only read it. None for a
    deflated file, whose data set holds all its pixel data and is not kept."""
    with path.open("rb") as file:
        ds, element = _read_header(file)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return None
    for _ in ds.iterall():
        pass
    return ds, element


def _header(file: BinaryIO, path: Path) -> tuple[Dataset, _PixelElement | None]:
    cached = _cached_header(path)
    return cached if cached is not None else _read_header(file)


def read_frames(path: Path, numbers: list[int]) -> list[Frame]:
    """The frames numbered ``numbers`` (1-based, in that order) of the PS3.10 file at ``path``."""
    with path.open("rb") as file:
        ds, element = _header(file, path)
        if element is None:
            raise NoPixelData("the instance has no pixel data, so it has no frames")
        count = number_of_frames_of(ds)
        check_frame_numbers(numbers, count)
        if not numbers:
            return []
        transfer_syntax_uid = str(ds.file_meta.get("TransferSyntaxUID", "") or "").strip()
        if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            return _deflated_frames(ds, element, numbers)
        if element.length != UNDEFINED_LENGTH:
            is_little_endian = ds.original_encoding[1] is not False
            swap = 1 if is_little_endian else swap_unit(element.vr, bits_allocated_of(ds))

            def read(offset: int, size: int) -> bytes:
                file.seek(element.value_tell + offset)
                return _read_exactly(file, size)

            data = _native_frames(ds, read, element.length, swap, numbers)
            return [Frame(frame, OCTET_STREAM, ExplicitVRLittleEndian) for frame in data]
        if transfer_syntax_uid in VIDEO_TRANSFER_SYNTAXES:
            raise FramesNotExtractable(
                f"the pixel data is a video stream (transfer syntax {transfer_syntax_uid}); "
                "single frames cannot be cut out of it without decoding"
            )
        data = _encapsulated_frames(file, ds, element, count, numbers)
        if transfer_syntax_uid == ENCAPSULATED_UNCOMPRESSED:  # each fragment is a native frame padded to even length
            size = frame_bits_of(ds) // 8
            data = [frame[:size] for frame in data]
    media_type, syntax = frame_label(transfer_syntax_uid)
    return [Frame(frame, media_type, syntax) for frame in data]


def check_frame_numbers(numbers: list[int], count: int) -> None:
    """Raise FrameNotFound for the first number that is not a frame of an instance of ``count`` frames."""
    for number in numbers:
        if not 1 <= number <= count:
            raise FrameNotFound(
                f"frame {number} does not exist: the instance has {count} frame{'s' if count != 1 else ''}"
                f" (1 to {count})"
            )


def frame_label(transfer_syntax_uid: str) -> tuple[str, str]:
    """The media type and transfer syntax a frame stored in ``transfer_syntax_uid`` is sent as (PS3.18 §8.7.3):
    native and encapsulated uncompressed frames as little endian octet streams, compressed ones as they are."""
    if transfer_syntax_uid in (ENCAPSULATED_UNCOMPRESSED, *NATIVE_TRANSFER_SYNTAXES):
        return OCTET_STREAM, ExplicitVRLittleEndian
    return MEDIA_TYPES.get(transfer_syntax_uid, OCTET_STREAM), transfer_syntax_uid


def _read_header(file: BinaryIO) -> tuple[Dataset, _PixelElement | None]:
    """The data set up to its pixel data, and where the pixel data value is (None when there is none).

    pydicom's ``stop_before_pixels`` leaves the file at the pixel data element's header (it steps back over the
    header it peeked at), so that header is parsed here; if a pydicom version ever leaves it elsewhere, the file is
    read again with ``defer_size``, which walks the fragment headers but loads no large value. A deflated file is
    read whole (its positions are in the inflated stream), and its element's ``value_tell`` is 0.
    """
    ds = dcmread(file, defer_size=HEADER_DEFER_SIZE, stop_before_pixels=True)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        file.seek(0)
        ds = dcmread(file)
        tag = next((tag for tag in PIXEL_DATA_TAGS if tag in ds), None)
        return ds, None if tag is None else _PixelElement(tag, "", 0, len(ds[tag].value or b""))
    is_implicit_vr, is_little_endian = ds.original_encoding
    endian = "<" if is_little_endian is not False else ">"
    start = file.tell()
    header = file.read(12)
    if len(header) < 8:
        return ds, None
    group, element = struct.unpack(endian + "HH", header[:4])
    tag = group << 16 | element
    if tag not in PIXEL_DATA_TAGS:
        return _locate_deferred(file, ds)
    vr = header[4:6]
    if is_implicit_vr or not VR_BYTES.fullmatch(vr):
        # Some writers encode an element implicitly in an explicit VR file; pydicom reads those the same way.
        return ds, _PixelElement(tag, "", start + 8, struct.unpack(endian + "L", header[4:8])[0])
    if vr in EXPLICIT_VR_LENGTH_32:
        if len(header) < 12:
            raise BrokenPixelData("the file ends inside the pixel data element's header")
        return ds, _PixelElement(tag, vr.decode("ascii"), start + 12, struct.unpack(endian + "L", header[8:12])[0])
    return ds, _PixelElement(tag, vr.decode("latin-1"), start + 8, struct.unpack(endian + "H", header[6:8])[0])


def _locate_deferred(file: BinaryIO, header: Dataset) -> tuple[Dataset, _PixelElement | None]:
    file.seek(0)
    ds = dcmread(file, defer_size=HEADER_DEFER_SIZE)
    for tag in PIXEL_DATA_TAGS:
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            return header, _PixelElement(tag, str(raw.VR or ""), raw.value_tell, raw.length)
    return header, None


def number_of_frames_of(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return 1  # PS3.3 §C.7.6.6: absent for single-frame images
    try:
        return max(int(value), 1)
    except (TypeError, ValueError):
        raise BrokenPixelData(f"Number of Frames {value!r} is not a number") from None


def bits_allocated_of(ds: Dataset) -> int:
    bits_allocated = _required_int(ds, "BitsAllocated")
    if bits_allocated != 1 and bits_allocated % 8:
        raise BrokenPixelData(f"Bits Allocated {bits_allocated} is neither 1 nor a multiple of 8")
    return bits_allocated


def _required_int(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if not isinstance(value, int) or value < 1:
        raise BrokenPixelData(f"{keyword} is {'missing' if value is None else repr(value)}; frames cannot be located")
    return value


def swap_unit(vr: str, bits_allocated: int) -> int:
    """How many bytes to reverse at a time to turn big endian pixel data little endian.

    OB is a byte stream in every transfer syntax; OW holds 16-bit words (PS3.5 §6.2), also when Bits Allocated is 8
    or 1. Wider pixels (32 or 64 bits, and OF/OD float data) swap whole, as pydicom writes and reads them.
    """
    if vr == "OB":
        return 1
    return max(bits_allocated // 8, 2) if vr in ("OW", "OF", "OD", "OL", "OV") else 1


def _native_frames(
    ds: Dataset, read: Callable[[int, int], bytes], length: int, swap: int, numbers: list[int]
) -> list[bytes]:
    """Cut frames out of native pixel data of ``length`` bytes, read through ``read(offset, size)``.

    A frame is ``frame_bits_of`` bits. With Bits Allocated 1 the pixels are packed with no padding between frames
    (PS3.5 §8.1.1), so a frame can start inside a byte: it is shifted to start at bit 0 of its first byte, the first
    pixel in the least significant bit, and its unused last bits are zero.
    """
    frame_bits = frame_bits_of(ds)
    frames: list[bytes] = []
    for number in numbers:
        start_bit = (number - 1) * frame_bits
        end_bit = start_bit + frame_bits
        if end_bit > length * 8:
            raise BrokenPixelData(
                f"the pixel data ({length} bytes) is too short for frame {number} of {frame_bits // 8} bytes"
            )
        start, end = start_bit // 8, -(-end_bit // 8)
        data = _read_little_endian(read, start, end, length, swap)
        if start_bit % 8 or end_bit % 8:
            value = int.from_bytes(data, "little") >> (start_bit % 8)
            data = (value & ((1 << frame_bits) - 1)).to_bytes(-(-frame_bits // 8), "little")
        frames.append(data)
    return frames


def frame_bits_of(ds: Dataset) -> int:
    """The bits of one native frame: Rows x Columns x Samples per Pixel x Bits Allocated; for YBR_FULL_422 only two
    samples of three are stored (PS3.3 §C.7.6.3.1.2)."""
    pixels = _required_int(ds, "Rows") * _required_int(ds, "Columns") * _required_int(ds, "SamplesPerPixel")
    frame_bits = pixels * bits_allocated_of(ds)
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        frame_bits = frame_bits // 3 * 2
    return frame_bits


def _read_little_endian(read: Callable[[int, int], bytes], start: int, end: int, length: int, swap: int) -> bytes:
    """Bytes ``start:end`` of the value, little endian: whole swap units around them are read and reversed."""
    if swap == 1:
        return read(start, end - start)
    first = start - start % swap
    last = min(end + (-end) % swap, length)
    data = read(first, last - first)
    whole = len(data) - len(data) % swap
    swapped = bytearray(data)
    for i in range(swap):
        swapped[i:whole:swap] = data[swap - 1 - i : whole : swap]
    return bytes(swapped[start - first : end - first])


def _deflated_frames(ds: Dataset, element: _PixelElement, numbers: list[int]) -> list[Frame]:
    pixel_data: bytes = ds[element.tag].value

    def read(offset: int, size: int) -> bytes:
        return pixel_data[offset : offset + size]

    data = _native_frames(ds, read, len(pixel_data), 1, numbers)
    return [Frame(frame, OCTET_STREAM, ExplicitVRLittleEndian) for frame in data]


def _encapsulated_frames(
    file: BinaryIO, ds: Dataset, element: _PixelElement, count: int, numbers: list[int]
) -> list[bytes]:
    """Frames of encapsulated pixel data (PS3.5 §A.4), reading only the fragments they are made of."""
    first_fragment, offsets = frame_offsets(file, ds, element.value_tell, count)
    if offsets:
        starts = [first_fragment + offset for offset in offsets]
        ends: list[int | None] = [*starts[1:], None]
        try:
            return [_read_fragments(file, starts[n - 1], ends[n - 1]) for n in numbers]
        except BrokenPixelData:
            pass  # an offset that misses an item tag (some writers get the table wrong): find the fragments instead
    if count == 1:
        return [_read_fragments(file, first_fragment, None)]
    fragments = _fragment_positions(file, first_fragment)
    if len(fragments) == count:
        return [_read_fragments(file, fragments[n - 1], fragments[n - 1] + 1) for n in numbers]
    return _split_frames(file, element, count, numbers)


def frame_offsets(file: BinaryIO, ds: Dataset, value_tell: int, count: int) -> tuple[int, list[int]]:
    """Where the first fragment's item tag is in the file, and each frame's offset from it: one increasing offset
    per frame, the first 0, or none when the offset tables do not give that."""
    file.seek(value_tell)
    tag, bot_length = _item_header(file)
    if tag != ITEM or bot_length % 4:
        raise BrokenPixelData("encapsulated pixel data does not start with a Basic Offset Table item")
    basic_offsets = list(struct.unpack(f"<{bot_length // 4}L", _read_exactly(file, bot_length)))
    first_fragment = value_tell + 8 + bot_length
    # Offsets count from the first fragment's item tag; the Basic Offset Table is empty when the Extended Offset
    # Table is present (PS3.3 §C.7.6.3.1.8), which also covers pixel data past 4 GiB.
    offsets = _extended_offsets(file, ds) or basic_offsets
    if len(offsets) == count and offsets[0] == 0 and all(a < b for a, b in pairwise(offsets)):
        return first_fragment, offsets
    return first_fragment, []


def _extended_offsets(file: BinaryIO, ds: Dataset) -> list[int]:
    raw = ds.get_item(Tag("ExtendedOffsetTable"), keep_deferred=True)
    if raw is None:
        return []
    value = raw.value
    if value is None and isinstance(raw, RawDataElement):  # deferred: read it from the file
        file.seek(raw.value_tell)
        value = _read_exactly(file, raw.length)
    if not isinstance(value, bytes) or len(value) % 8:
        return []
    return list(struct.unpack(f"<{len(value) // 8}Q", value))


def _item_header(file: BinaryIO) -> tuple[int, int]:
    group, element, length = struct.unpack("<HHL", _read_exactly(file, 8))
    return group << 16 | element, length


def _read_exactly(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise BrokenPixelData("the file ends inside its pixel data")
    return data


def _read_fragments(file: BinaryIO, start: int, end: int | None) -> bytes:
    """The values of the fragments whose item tags lie in ``[start, end)``; ``end`` None means up to the end."""
    file.seek(start)
    position = start
    values: list[bytes] = []
    while end is None or position < end:
        tag, length = _item_header(file)
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise BrokenPixelData(f"unexpected data at byte {position} of the file inside the encapsulated pixel data")
        values.append(_read_exactly(file, length))
        position += 8 + length
    if not values:
        raise BrokenPixelData(f"no fragment starts at byte {start} of the file")
    return b"".join(values)


def fragment_items(file: BinaryIO, first_fragment: int) -> list[tuple[int, int]]:
    """(position of the item tag, value length) of every fragment, from the 8-byte item headers alone."""
    file.seek(first_fragment)
    position = first_fragment
    items: list[tuple[int, int]] = []
    while True:
        tag, length = _item_header(file)
        if tag == SEQUENCE_DELIMITER:
            return items
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise BrokenPixelData(f"unexpected data at byte {position} of the file inside the encapsulated pixel data")
        items.append((position, length))
        position += 8 + length
        file.seek(position)


def _fragment_positions(file: BinaryIO, first_fragment: int) -> list[int]:
    """Where each fragment's item tag is, from the 8-byte item headers alone (each value is skipped)."""
    return [position for position, _ in fragment_items(file, first_fragment)]


def _split_frames(file: BinaryIO, element: _PixelElement, count: int, numbers: list[int]) -> list[bytes]:
    """More fragments than frames and no offset table: pydicom finds frame ends by their JPEG EOI / J2K EOC marker."""
    file.seek(element.value_tell)
    wanted = set(numbers)
    found: dict[int, bytes] = {}
    try:
        for number, fragments in enumerate(generate_fragmented_frames(file, number_of_frames=count), start=1):
            if number in wanted:
                found[number] = b"".join(fragments)
            if number >= max(wanted):
                break
    except ValueError as exc:
        raise BrokenPixelData(f"the frames of the encapsulated pixel data cannot be told apart: {exc}") from None
    missing = wanted - found.keys()
    if missing:
        raise BrokenPixelData(
            f"the encapsulated pixel data holds fewer frames than its Number of Frames ({count}); "
            f"frame {min(missing)} is missing"
        )
    return [found[number] for number in numbers]
