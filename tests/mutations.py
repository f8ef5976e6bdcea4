"""Seeded mutants of real DICOM files: broken copies of pydicom's test files for tests/test_broken_files.py.

Each mutant is one source file, one mutation and one seed, named ``"{source}:{mutation}:{seed}"``;
``from_name(name)`` makes the same bytes again, so a failure message reproduces. The mutations are the faults an
archive meets in the field (issue 13): flipped bits in the header, truncation, a corrupt length field, garbage inside
encapsulated fragments (item headers kept, so the file still parses), a broken fragment item, a Basic Offset Table
pointing nowhere, wrong RLE segment offsets, a fragment missing, a pixel module attribute missing or wrong, a
command-group (0000,eeee) element in the data set, a Number of Frames larger than the frames present, native pixel
data too short or too long, and a transfer syntax that does not describe the pixel data.

Every mutant, the unmutated ``original`` included, gets fresh Study, Series and SOP Instance UIDs first (same length,
so the bytes stay where they were): mutants collide neither with each other nor with what other tests store. Byte
mutations of a deflated file act on the inflated data set, which is deflated again. Pure: no I/O besides reading
the source file.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from .data import TEST_FILES
from .file_layout import FILE_META_START, ITEM, UNDEFINED_LENGTH, Item, Source, split

ORIGINAL = "original"
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
RLE_HEADER_BYTES = 64  # PS3.5 §G.5: the number of segments and 15 offsets, each a 32-bit unsigned integer
PIXEL_MODULE = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "PlanarConfiguration",
)  # fmt: skip
SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
    JPEG2000Lossless, JPEG2000, HTJ2KLossless, RLELossless,
)  # fmt: skip
# Syntaxes whose data set is Explicit VR Little Endian, so a file relabelled among them still parses.
EXPLICIT_LITTLE = tuple(s for s in SYNTAXES if s == ExplicitVRLittleEndian or UID(s).is_encapsulated)


class NotApplicable(Exception):
    """The mutation does not apply to this source (no encapsulated pixel data, not RLE, not writable...)."""


@dataclass(frozen=True)
class Mutant:
    """One broken (or, for ``original``, intact) file and how it was made."""

    name: str  # "{source}:{mutation}:{seed}", the argument of from_name()
    data: bytes
    detail: str  # what the mutation did, e.g. "Rows deleted"


def source_name(path: Path) -> str:
    """The name of a pydicom test file in mutant names: its path under test_files."""
    try:
        return path.relative_to(TEST_FILES).as_posix()
    except ValueError:
        return path.name


def from_name(name: str) -> Mutant:
    """The mutant a failure message names, made again: ``from_name("CT_small.dcm:truncate:13")``."""
    source, mutation, seed = name.rsplit(":", 2)
    return mutate(TEST_FILES / source, mutation, int(seed))


def mutate(path: Path, mutation: str, seed: int) -> Mutant:
    """``path`` with fresh UIDs, then ``mutation`` applied with ``random.Random`` seeded by the mutant's name."""
    name = f"{source_name(path)}:{mutation}:{seed}"
    rng = random.Random(name)  # a str seed is hashed with SHA-512: the same on every run and machine
    source = _with_fresh_uids(rng, split(source_name(path), path.read_bytes()))
    if mutation == ORIGINAL:
        return Mutant(name, source.file(), "fresh UIDs only")
    data, detail = MUTATIONS[mutation].mutate(rng, source)
    return Mutant(name, data, detail)


def corpus(paths: Iterable[Path], per_file: int, seed: int) -> Iterator[Mutant]:
    """For each file: the original, then ``per_file`` mutants of different mutations, drawn (seeded) from those that
    apply to it, the ones specific to its encoding (RLE, fragments, native pixel data) three times as likely."""
    for path in paths:
        yield mutate(path, ORIGINAL, seed)
        source = split(source_name(path), path.read_bytes())
        rng = random.Random(f"{source.name}:{seed}")
        candidates = {name: m.weight for name, m in MUTATIONS.items() if m.applies(source)}
        made = 0
        while candidates and made < per_file:
            name = rng.choices(list(candidates), weights=list(candidates.values()))[0]
            del candidates[name]
            try:
                yield mutate(path, name, seed)
            except NotApplicable:
                continue
            made += 1


def _fresh_uid(rng: random.Random, length: int) -> str:
    """A 2.25 UID (PS3.5 §B.2) of exactly ``length`` characters, from ``rng``."""
    digits = length - len("2.25.")
    return "2.25." + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(digits - 1))


def _with_fresh_uids(rng: random.Random, source: Source) -> Source:
    """Replace each Study, Series and SOP Instance UID (and the file meta's Media Storage SOP Instance UID) by a
    fresh one of the same length, byte for byte; a file missing one gets it added by pydicom."""
    ds = source.dataset()
    if not all(keyword in ds for keyword in UID_KEYWORDS):
        for keyword in UID_KEYWORDS:
            setattr(ds, keyword, ds.get(keyword) or _fresh_uid(rng, 58))
        try:
            source = split(source.name, _write(ds))
        except (NotApplicable, ValueError):
            return source
        ds = source.dataset()
    old = {str(ds.get(keyword) or "") for keyword in UID_KEYWORDS}
    old.add(str(ds.file_meta.get("MediaStorageSOPInstanceUID") or ""))
    prefix, body = source.prefix, source.body
    # The longest first, so that a UID which starts with another is replaced whole; the order is fixed, not a set's.
    for uid in sorted((uid for uid in old if len(uid) > len("2.25.") + 1), key=lambda uid: (-len(uid), uid)):
        new = _fresh_uid(rng, len(uid)).encode()
        prefix, body = prefix.replace(uid.encode(), new), body.replace(uid.encode(), new)
    return replace(source, prefix=prefix, body=body)


def _write(ds: Dataset) -> bytes:
    """``ds`` as a file encoded like the one it was read from; NotApplicable when pydicom cannot write it."""
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer)
    except Exception as exc:
        raise NotApplicable(f"pydicom cannot write it: {exc}") from None
    return buffer.getvalue()


def _flip_bits(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Flip 1 to 4 bits before the pixel data, half of them in a pixel module (group 0028) value."""
    prefix, body = bytearray(source.prefix), bytearray(source.body)
    header_end = source.pixel.start if source.pixel is not None else len(body)
    pixel_module = [e for e in source.elements if e.tag >> 16 == 0x0028 and 0 < e.length < 64]
    flips = []
    for _ in range(rng.randint(1, 4)):
        if pixel_module and rng.random() < 0.5:
            element = rng.choice(pixel_module)
            offset = rng.randrange(element.value_offset, element.value_offset + element.length)
            target, where = body, f"{element.tag:08X}+{offset - element.value_offset}"
        elif rng.randrange(len(prefix) - FILE_META_START + header_end) < len(prefix) - FILE_META_START:
            offset = rng.randrange(FILE_META_START, len(prefix))
            target, where = prefix, f"meta@{offset}"
        else:
            offset = rng.randrange(header_end)
            target, where = body, f"body@{offset}"
        bit = rng.randrange(8)
        target[offset] ^= 1 << bit
        flips.append(f"{where}.bit{bit}")
    return source.file(bytes(body), bytes(prefix)), "flipped " + ", ".join(flips)


def _truncate(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Cut the data set short: mostly inside the pixel data, else anywhere."""
    pixel = source.pixel
    if pixel is not None and pixel.value_offset < len(source.body) and rng.random() < 0.6:
        at = rng.randrange(pixel.value_offset, len(source.body))
    else:
        at = rng.randrange(len(source.body))
    return source.file(source.body[:at]), f"data set cut at {at} of {len(source.body)} bytes"


def _corrupt_length(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Give a top-level element (the pixel data one time in three) a wrong length."""
    candidates = [e for e in source.elements if e.length_offset >= 0]
    if not candidates:
        raise NotApplicable("no located element")
    element = source.pixel if source.pixel is not None and rng.random() < 1 / 3 else rng.choice(candidates)
    limit = (1 << (8 * element.length_size)) - 1
    defined = element.length if element.length != UNDEFINED_LENGTH else len(source.body) - element.value_offset
    choices = [defined + 2, defined - 2, defined + 1, 0, defined * 2, rng.randrange(limit), limit]
    length = min(max(rng.choice(choices), 0), limit)
    if length == element.length:
        length = (length + 2) & limit
    fmt = "H" if element.length_size == 2 else "I"
    body = bytearray(source.body)
    body[element.length_offset : element.value_offset] = source.pack(fmt, length)
    return source.file(bytes(body)), f"length of ({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) {length}"


def _encapsulated(source: Source) -> tuple[Item, ...]:
    if not source.fragments:
        raise NotApplicable("no encapsulated fragments")
    return source.fragments


def _fragment_garbage(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Overwrite part of a fragment's bytes (its start, middle, end or all) with random bytes; item headers kept."""
    fragments = [f for f in _encapsulated(source) if f.length > 0]
    if not fragments:
        raise NotApplicable("only empty fragments")
    index = rng.randrange(len(fragments))
    fragment = fragments[index]
    span = max(1, min(fragment.length, rng.choice([1, 2, 16, 64, 512, fragment.length // 2, fragment.length])))
    place = rng.choice(["start", "middle", "end"])
    start = {"start": 0, "middle": (fragment.length - span) // 2, "end": fragment.length - span}[place]
    body = bytearray(source.body)
    offset = fragment.value_offset + start
    body[offset : offset + span] = rng.randbytes(span)
    return source.file(bytes(body)), f"{span} random bytes at the {place} of fragment {index + 1}"


def _fragment_item(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Break one item of the encapsulated pixel data: a wrong length, or another tag in place of the item tag."""
    _encapsulated(source)
    index = rng.randrange(len(source.items))
    item = source.items[index]
    body = bytearray(source.body)
    if rng.random() < 0.25:
        tag = rng.choice([(0xFFFE, 0xE00D), (0xFFFE, 0xE0DD), (0x7FE0, 0x0010), (rng.randrange(65536), 0)])
        body[item.offset : item.offset + 4] = struct.pack("<HH", *tag)
        return source.file(bytes(body)), f"item {index} tag ({tag[0]:04X},{tag[1]:04X})"
    length = rng.choice([item.length + 2, max(item.length - 2, 0), item.length + 1, item.length + 4096, 0, 0xFFFFFFFF])
    body[item.offset + 4 : item.offset + 8] = struct.pack("<I", length)
    return source.file(bytes(body)), f"item {index} length {length} (was {item.length})"


def _offset_table(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """A Basic Offset Table that points outside the pixel data, backwards, or has the wrong number of entries."""
    fragments = _encapsulated(source)
    table = source.items[0]
    total = sum(8 + f.length for f in fragments)
    count = max(1, (table.length // 4 if table.length else len(fragments)) + rng.choice([-1, 0, 0, 1, 2]))
    kind = rng.choice(["beyond", "backwards", "random"])
    if kind == "beyond":
        offsets = [total + 8 * i + rng.randrange(1, 1 << 20) for i in range(count)]
    elif kind == "backwards":
        offsets = sorted((rng.randrange(total) for _ in range(count)), reverse=True)
    else:
        offsets = [rng.randrange(1 << 32) for _ in range(count)]
    entries = struct.pack(f"<{count}I", *offsets)
    head = struct.pack("<HHI", *ITEM, len(entries))
    body = source.body[: table.offset] + head + entries + source.body[table.end :]
    return source.file(body), f"offset table {kind}: {offsets[:4]}{'...' if count > 4 else ''}"


def _drop_fragment(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Remove one fragment item (its header and bytes) from the encapsulated pixel data."""
    fragments = _encapsulated(source)
    index = rng.randrange(len(fragments))
    fragment = fragments[index]
    body = source.body[: fragment.offset] + source.body[fragment.end :]
    return source.file(body), f"fragment {index + 1} of {len(fragments)} removed"


def _rle_segments(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Break the RLE header of one frame (PS3.5 §G.5): the number of segments or a segment offset."""
    if source.transfer_syntax != RLELossless:
        raise NotApplicable("not RLE")
    fragments = [f for f in _encapsulated(source) if f.length >= RLE_HEADER_BYTES]
    if not fragments:
        raise NotApplicable("no RLE header")
    index = rng.randrange(len(fragments))
    fragment = fragments[index]
    header = list(struct.unpack_from("<16I", source.body, fragment.value_offset))
    segments = header[0]
    kind = rng.choice(["count", "beyond", "zero", "shorter", "swap", "odd"])
    last = max(1, min(segments, 15))  # the header's last segment offset in use
    i = rng.randint(1, last)
    if kind == "count":
        header[0] = rng.choice([0, max(segments - 1, 0), segments + 1, 15, 16, 255])
    elif kind == "beyond":
        header[i] = fragment.length + rng.randrange(1, 4096)
    elif kind == "zero":
        header[i] = 0
    elif kind == "shorter" and last >= 2 and header[last] > header[last - 1]:
        header[last] = rng.randrange(header[last - 1], header[last])  # the one before it loses bytes
    elif kind == "swap" and last >= 2:
        header[1], header[2] = header[2], header[1]
    else:
        kind = "odd"
        header[i] += 1
    body = bytearray(source.body)
    body[fragment.value_offset : fragment.value_offset + RLE_HEADER_BYTES] = struct.pack("<16I", *header)
    return source.file(bytes(body)), f"RLE header of frame {index + 1} ({kind}): {header[: segments + 2]}"


def _delete_attribute(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Delete an attribute needed to read the pixel data (Bits Allocated, Rows, Columns, Photometric...)."""
    ds = source.dataset()
    present = [keyword for keyword in PIXEL_MODULE if keyword in ds]
    if not present:
        raise NotApplicable("no pixel module attribute")
    keyword = rng.choice(present)
    delattr(ds, keyword)
    return _write(ds), f"{keyword} deleted"


def _wrong_value(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Give a pixel module attribute a value that does not describe the pixel data."""
    ds = source.dataset()
    choices: dict[str, list[object]] = {
        "Rows": [0, 1, 65535, int(ds.get("Rows") or 1) * 2, int(ds.get("Rows") or 1) + 1],
        "Columns": [0, 1, 65535, int(ds.get("Columns") or 1) * 2, int(ds.get("Columns") or 1) + 1],
        "BitsAllocated": [0, 1, 8, 12, 16, 32, 64],
        "BitsStored": [0, 7, 12, 33, 64],
        "HighBit": [0, 6, 40],
        "PixelRepresentation": [0, 1, 2],
        "SamplesPerPixel": [0, 1, 2, 3, 4],
        "PhotometricInterpretation": ["RGB", "MONOCHROME1", "PALETTE COLOR", "YBR_FULL_422", "YBR_RCT", "BROKEN"],
        "PlanarConfiguration": [0, 1, 2],
    }
    keyword = rng.choice(list(choices))
    values = [v for v in choices[keyword] if v != ds.get(keyword)]
    value = rng.choice(values)
    setattr(ds, keyword, value)
    return _write(ds), f"{keyword} = {value!r}"


def _number_of_frames(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Set Number of Frames to more frames than the pixel data holds (or to 0), adding it to a single frame."""
    ds = source.dataset()
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except ValueError:
        frames = 1
    value = rng.choice([frames + 1, frames + rng.randint(2, 10), frames * 2 + 1, 0, 2**31 - 1])
    ds.NumberOfFrames = value
    return _write(ds), f"NumberOfFrames = {value} (frames present: {frames})"


def _resize_pixels(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Native pixel data shorter (or longer) than Rows x Columns x samples x frames says."""
    if source.pixel is None or source.pixel.length == UNDEFINED_LENGTH:
        raise NotApplicable("no native pixel data")
    ds = source.dataset()
    keyword = next(k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds)
    value = bytes(ds[keyword].value)
    length = rng.choice(
        [0, 2, len(value) // 2 & ~1, max(len(value) - 2, 0), rng.randrange(len(value) + 1) & ~1, len(value) + 64]
    )
    setattr(ds, keyword, (value + bytes(64))[:length])
    return _write(ds), f"{keyword} {length} bytes (was {len(value)})"


def _command_element(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Put command-group (0000,eeee) elements (PS3.7 §E.1) at the start of the data set, as a DIMSE bridge might."""
    command = Dataset()
    command.add_new(0x00000902, "LO", "mutated copy")  # Error Comment
    if rng.random() < 0.5:
        command.add_new(0x00000000, "UL", rng.randrange(1 << 16))  # Command Group Length
    if rng.random() < 0.5:
        command.add_new(0x00000100, "US", 0x0001)  # Command Field: C-STORE-RQ
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = source.little_endian, source.implicit_vr
    write_dataset(buffer, command)
    tags = ", ".join(f"(0000,{int(tag) & 0xFFFF:04X})" for tag in command.keys())
    return source.file(buffer.getvalue() + source.body), f"added {tags}"


def _wrong_syntax(rng: random.Random, source: Source) -> tuple[bytes, str]:
    """Relabel the file with another transfer syntax (mostly one whose data set encoding is the same, so that only
    the pixel data no longer matches: native data labelled JPEG, a JPEG labelled RLE or Explicit VR Little Endian)."""
    same_encoding = source.transfer_syntax in EXPLICIT_LITTLE and rng.random() < 0.75
    syntax = rng.choice([s for s in (EXPLICIT_LITTLE if same_encoding else SYNTAXES) if s != source.transfer_syntax])
    meta = pydicom.dcmread(io.BytesIO(source.file()), force=True).file_meta
    meta.TransferSyntaxUID = syntax
    had_group_length = "FileMetaInformationGroupLength" in meta
    if had_group_length:
        del meta.FileMetaInformationGroupLength
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=False)  # as it is, without adding what the file lacks
    elements = buffer.getvalue()
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(elements)) if had_group_length else b""
    prefix = source.prefix[:FILE_META_START] + group_length + elements
    return source.file(prefix=prefix, deflated=syntax == DeflatedExplicitVRLittleEndian), f"labelled {syntax.name}"


Mutator = Callable[[random.Random, Source], tuple[bytes, str]]


@dataclass(frozen=True)
class Mutation:
    """A mutator, which sources it applies to, and how likely ``corpus`` picks it among those."""

    mutate: Mutator
    applies: Callable[[Source], bool] = lambda source: True
    weight: int = 1


def _is_encapsulated(source: Source) -> bool:
    return bool(source.fragments)


def _is_rle(source: Source) -> bool:
    return source.transfer_syntax == RLELossless and bool(source.fragments)


def _is_native(source: Source) -> bool:
    return source.pixel is not None and source.pixel.length != UNDEFINED_LENGTH


SPECIFIC = 3  # the weight of a mutation that applies to one encoding only
MUTATIONS: dict[str, Mutation] = {
    "flip-bits": Mutation(_flip_bits),
    "truncate": Mutation(_truncate),
    "corrupt-length": Mutation(_corrupt_length),
    "fragment-garbage": Mutation(_fragment_garbage, _is_encapsulated, SPECIFIC),
    "fragment-item": Mutation(_fragment_item, _is_encapsulated, SPECIFIC),
    "offset-table": Mutation(_offset_table, _is_encapsulated, SPECIFIC),
    "drop-fragment": Mutation(_drop_fragment, _is_encapsulated, SPECIFIC),
    "rle-segments": Mutation(_rle_segments, _is_rle, SPECIFIC),
    "delete-attribute": Mutation(_delete_attribute),
    "wrong-value": Mutation(_wrong_value),
    "number-of-frames": Mutation(_number_of_frames),
    "resize-pixels": Mutation(_resize_pixels, _is_native, SPECIFIC),
    "command-element": Mutation(_command_element),
    "wrong-syntax": Mutation(_wrong_syntax),
}
