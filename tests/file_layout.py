"""Where the parts of a PS3.10 file are, in bytes: the file meta, each top-level data element's length field and
value, and the items of encapsulated pixel data. For tests/mutations.py, which breaks files at those places."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

FILE_META_START = 132  # 128 bytes of preamble and "DICM" (PS3.10 §7.1)
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = (0xFFFE, 0xE000)  # the tag of an item (PS3.5 §7.5)
PIXEL_TAGS = (Tag(0x7FE00010), Tag(0x7FE00008), Tag(0x7FE00009))  # Pixel Data, Float and Double Float Pixel Data
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 §7.1.2); the others have a 2-byte length.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})


@dataclass(frozen=True)
class Element:
    """A top-level data element of the data set: offsets into ``Source.body``."""

    tag: int
    vr: str | None
    length_offset: int
    length_size: int  # 2 or 4 bytes
    value_offset: int
    length: int

    @property
    def start(self) -> int:
        """The offset of its tag: the header is tag, length (implicit VR) or tag, VR, [reserved,] length."""
        return self.length_offset - (4 if self.vr is None else 6 if self.length_size == 2 else 8)


@dataclass(frozen=True)
class Item:
    """An item of encapsulated pixel data (the Basic Offset Table first, then the fragments): offsets into body."""

    offset: int  # of its tag
    length: int

    @property
    def value_offset(self) -> int:
        return self.offset + 8

    @property
    def end(self) -> int:
        return self.value_offset + self.length


@dataclass(frozen=True)
class Source:
    """A file split for mutation: ``prefix`` (preamble, "DICM", file meta) and ``body`` (the data set, inflated if
    the file is deflated), with the top-level elements and the encapsulated pixel data items located."""

    name: str
    prefix: bytes
    body: bytes
    transfer_syntax: UID
    little_endian: bool
    implicit_vr: bool
    elements: tuple[Element, ...]
    pixel: Element | None
    items: tuple[Item, ...]

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax == DeflatedExplicitVRLittleEndian

    @property
    def fragments(self) -> tuple[Item, ...]:
        return self.items[1:]

    def file(self, body: bytes | None = None, prefix: bytes | None = None, deflated: bool | None = None) -> bytes:
        """The PS3.10 bytes of this source with another body or prefix (deflated again if need be)."""
        body = self.body if body is None else body
        if self.deflated if deflated is None else deflated:
            compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = compressor.compress(body) + compressor.flush()
        return (self.prefix if prefix is None else prefix) + body

    def pack(self, fmt: str, *values: int) -> bytes:
        return struct.pack(("<" if self.little_endian else ">") + fmt, *values)

    def dataset(self) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.file()), force=True)


def split(name: str, data: bytes) -> Source:
    """Locate the file meta, the top-level elements and the encapsulated pixel data items of ``data``."""
    meta_end = _file_meta_end(data)
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    transfer_syntax = UID(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    body = data[meta_end:]
    deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
    if deflated:
        body = zlib.decompress(body, -zlib.MAX_WBITS)
    implicit_vr, little_endian = ds.original_encoding
    # pydicom's value_tell counts from the file's start, or from the inflated data set's start when deflated.
    base = 0 if deflated else meta_end
    elements: list[Element] = []
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.value_tell is None:
            continue  # converted while reading (character set, private creators): not located
        vr = None if implicit_vr else raw.VR
        size = 4 if vr is None or vr in LONG_VRS else 2
        value_offset = raw.value_tell - base
        elements.append(Element(int(tag), vr, value_offset - size, size, value_offset, raw.length))
    pixel = next((e for e in elements if e.tag in PIXEL_TAGS), None)
    items = _items(body, pixel.value_offset) if pixel is not None and pixel.length == UNDEFINED_LENGTH else ()
    return Source(
        name,
        data[:meta_end],
        body,
        transfer_syntax,
        bool(little_endian),
        bool(implicit_vr),
        tuple(elements),
        pixel,
        items,
    )


def _file_meta_end(data: bytes) -> int:
    """The offset of the data set: past the group 0002 elements, which are always Explicit VR Little Endian."""
    offset = FILE_META_START
    while offset + 8 <= len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            break
        vr = data[offset + 4 : offset + 6].decode("latin-1")
        if vr in LONG_VRS:
            offset += 12 + struct.unpack_from("<I", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    return min(offset, len(data))


def _items(body: bytes, offset: int) -> tuple[Item, ...]:
    """The items of encapsulated pixel data starting at ``offset`` (PS3.5 §A.4), up to the sequence delimiter."""
    items: list[Item] = []
    while offset + 8 <= len(body):
        group, element, length = struct.unpack_from("<HHI", body, offset)
        if (group, element) != ITEM:
            break
        items.append(Item(offset, length))
        offset += 8 + length
    return tuple(items)
