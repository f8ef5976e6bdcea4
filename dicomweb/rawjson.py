"""DICOM JSON of one data element straight from its encoded bytes, for the common VRs, at store time; and of a whole
little endian sequence, its items read from its bytes (``sequence_json``).

pydicom turns every element into a ``DataElement`` with a typed value (``convert_raw_data_element``) before
``to_json_dict`` writes it: about 25 µs an element, the largest cost of storing a small instance. Here the JSON of an
element whose encoding is plain is built from the raw bytes directly, to the same result as that path (PS3.18
Annex F as pydicom writes it, which ``tests/test_dicomjson.py`` checks on every file pydicom ships). Anything less
plain returns None and goes the pydicom way: implicit VR tags that are private or of an ambiguous VR, UN, AT, values
left on disk (``defer_size``), escape sequences (ISO 2022 code extensions) or bytes the character set cannot
decode, a person name with an empty value among several, and IS or DS values that are not plain numbers.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement

DEFAULT_ENCODING = "iso8859"  # pydicom's decoding of the default repertoire and of the VRs it does not cover
ESC = b"\x1b"  # starts an ISO 2022 escape sequence (PS3.5 §6.1.2.5.3)

INTEGER_STRING = re.compile(r"[+-]?[0-9]+")  # IS, PS3.5 Table 6.2-1
DECIMAL_STRING = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")  # DS, PS3.5 Table 6.2-1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the integers orjson writes as numbers

BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
BINARY_OR_UN = BINARY | {"UN"}  # the binary VRs a large value of becomes a BulkDataURI (dicomjson.BINARY_VRS)
NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
# Decoded with the default repertoire whatever the Specific Character Set (PS3.5 §6.1.2.3).
ASCII_SPLIT = frozenset({"AS", "CS", "DA", "DT", "TM"})
TEXT_MULTI = frozenset({"SH", "LO", "UC"})
TEXT_SINGLE = frozenset({"ST", "LT", "UT"})


def element_json(raw: RawDataElement, encodings: list[str]) -> dict[str, Any] | None:
    """The DICOM JSON of ``raw`` (small binary values inline), or None to leave it to pydicom."""
    value = raw.value
    if value is None:
        return None
    vr = raw.VR
    if vr is None:
        vr = _dictionary_vr(raw.tag)
        if vr is None:
            return None
    return value_json(vr, value, raw.is_little_endian, encodings)


def sequence_json(
    value: bytes, implicit_vr: bool, encodings: list[str], bulk_prefix: str, bulk_threshold: int
) -> dict[str, Any] | None:
    """The DICOM JSON of a little endian sequence's encoded value (its items, PS3.5 §7.5), or None to leave it to
    pydicom. pydicom makes a ``Dataset`` of every item and a ``DataElement`` of every element in it before the JSON can
    be written: an SR's content tree of 50 measurements, 6,000 items, took it 60 ms. Here the items are read straight
    into JSON, with the same rules as ``dicomjson._dataset``: a binary value over ``bulk_threshold`` bytes becomes a
    BulkDataURI (``bulk_prefix`` + item index + path), Group Length elements are left out. Anything less plain gives
    None for the whole sequence: an item with its own Specific Character Set, a value ``value_json`` leaves to pydicom
    (UN, AT, ...), an implicit VR tag the dictionary gives no single VR, an undefined length that is not a
    sequence's, bytes that do not parse."""
    try:
        parsed = _items(value, 0, len(value), False, implicit_vr, encodings, bulk_prefix, bulk_threshold)
    except (struct.error, UnicodeDecodeError, _NotPlain):
        return None
    items, end = parsed
    if end != len(value):
        return None
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


class _NotPlain(Exception):
    """What ``sequence_json`` leaves to pydicom."""


ITEM, ITEM_DELIMITATION, SEQUENCE_DELIMITATION = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD  # PS3.5 §7.5
UNDEFINED_LENGTH = 0xFFFFFFFF
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})  # §7.1.2
SPECIFIC_CHARACTER_SET = 0x00080005
_TAG_LENGTH = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")


def _items(
    data: bytes,
    pos: int,
    end: int,
    delimited: bool,
    implicit_vr: bool,
    encodings: list[str],
    prefix: str,
    threshold: int,
) -> tuple[list[dict[str, Any]], int]:
    """The items from ``pos`` up to ``end`` (a defined length) or, ``delimited``, up to the Sequence Delimitation
    Item (``end`` then the enclosing item's or buffer's), and where they stop."""
    items: list[dict[str, Any]] = []
    while pos < end:
        group, element, length = _TAG_LENGTH.unpack_from(data, pos)
        pos += 8
        tag = group << 16 | element
        if tag == SEQUENCE_DELIMITATION and delimited:
            return items, pos
        if tag != ITEM:
            raise _NotPlain
        item_end = None if length == UNDEFINED_LENGTH else pos + length
        if item_end is not None and item_end > end:
            raise _NotPlain
        item, pos = _item(data, pos, item_end, implicit_vr, encodings, f"{prefix}{len(items)}/", threshold)
        items.append(item)
    if delimited:
        raise _NotPlain
    return items, pos


def _item(
    data: bytes, pos: int, end: int | None, implicit_vr: bool, encodings: list[str], prefix: str, threshold: int
) -> tuple[dict[str, Any], int]:
    """One item's data set from ``pos`` up to ``end`` (a defined length) or its Item Delimitation Item."""
    result: dict[str, Any] = {}
    limit = len(data) if end is None else end
    while pos < limit:
        if implicit_vr:
            group, element, length = _TAG_LENGTH.unpack_from(data, pos)
            pos += 8
            tag = group << 16 | element
            vr = None if tag == ITEM_DELIMITATION else _dictionary_vr(tag)
        else:
            group, element, raw_vr, length = _EXPLICIT.unpack_from(data, pos)
            tag = group << 16 | element
            if tag == ITEM_DELIMITATION:
                length = _TAG_LENGTH.unpack_from(data, pos)[2]
                pos += 8
                vr = None
            else:
                vr = raw_vr.decode("ascii")
                if vr in LONG_LENGTH_VRS:
                    length = _TAG_LENGTH.unpack_from(data, pos + 4)[2]
                    pos += 12
                else:
                    pos += 8
        if tag == ITEM_DELIMITATION:
            if end is not None:
                raise _NotPlain
            return result, pos
        if vr is None or tag == SPECIFIC_CHARACTER_SET:
            raise _NotPlain
        key = f"{tag:08X}"
        if vr == "SQ":
            undefined = length == UNDEFINED_LENGTH
            nested_end = limit if undefined else pos + length
            if nested_end > limit:
                raise _NotPlain
            items, pos = _items(data, pos, nested_end, undefined, implicit_vr, encodings, f"{prefix}{key}/", threshold)
            if not undefined and pos != nested_end:
                raise _NotPlain
            if element != 0:
                result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        if length == UNDEFINED_LENGTH or pos + length > limit:
            raise _NotPlain
        value = data[pos : pos + length]
        pos += length
        if element == 0:  # Group Length, as dicomjson._dataset leaves it out
            continue
        if vr in BINARY_OR_UN and length > threshold:
            result[key] = {"vr": vr, "BulkDataURI": prefix + key}
            continue
        json = value_json(vr, value, True, encodings)
        if json is None:
            raise _NotPlain
        result[key] = json
    if end is not None and pos != end:
        raise _NotPlain
    if end is None:  # an undefined-length item that the buffer ends in
        raise _NotPlain
    return result, pos


def value_json(vr: str, value: bytes, little_endian: bool, encodings: list[str]) -> dict[str, Any] | None:
    """The DICOM JSON of an element of VR ``vr`` whose encoded value is ``value``, or None to leave it to pydicom."""
    if vr in BINARY:
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode()} if value else {"vr": vr}
    if vr in NUMBERS:
        return _numbers(vr, value, little_endian)
    values: list[Any] | None
    if vr in ASCII_SPLIT:
        values = value.decode(DEFAULT_ENCODING).rstrip(" \x00").split("\\")
    elif vr == "UI":
        values = value.decode(DEFAULT_ENCODING).rstrip("\x00 ").split("\\")
    elif vr == "AE":
        values = [s.strip() for s in value.decode(DEFAULT_ENCODING).split("\\")]
    elif vr == "UR":
        values = [value.decode(DEFAULT_ENCODING).rstrip()]
    elif vr in TEXT_MULTI:
        text = _decode(value, encodings)
        values = None if text is None else [s.rstrip("\x00 ") for s in text.split("\\")]
    elif vr in TEXT_SINGLE:
        text = _decode(value, encodings)
        values = None if text is None else [text.rstrip("\x00 ")]
    elif vr == "PN":
        return _person_names(value, encodings)
    elif vr == "IS":
        return _numbers_as_text(vr, value, INTEGER_STRING, int)
    elif vr == "DS":
        return _numbers_as_text(vr, value, DECIMAL_STRING, float)
    else:
        return None
    if values is None:
        return None
    if len(values) == 1 and not values[0]:
        return {"vr": vr}  # an empty value has no "Value" (PS3.18 §F.2.5)
    return {"vr": vr, "Value": values}


def _dictionary_vr(tag: int) -> str | None:
    """The VR of an implicit VR element when the dictionary gives exactly one."""
    if tag >> 16 & 1:  # private: its VR depends on the private creator
        return None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if len(vr) == 2 else None  # not "US or SS", "OB or OW"


def _decode(value: bytes, encodings: list[str]) -> str | None:
    """The text in the data set's first character set, as pydicom decodes a value without escape sequences."""
    if ESC in value:
        return None
    try:
        return value.decode(encodings[0])
    except (LookupError, UnicodeError):
        return None


def _numbers(vr: str, value: bytes, little_endian: bool) -> dict[str, Any] | None:
    size = struct.calcsize("<" + NUMBERS[vr])  # standard sizes (native "L" is 8 bytes)
    if len(value) % size:
        return None
    if not value:
        return {"vr": vr}
    count = len(value) // size
    return {"vr": vr, "Value": list(struct.unpack(f"{'<' if little_endian else '>'}{count}{NUMBERS[vr]}", value))}


def _numbers_as_text(
    vr: str, value: bytes, grammar: re.Pattern[str], number: type[int] | type[float]
) -> dict[str, Any] | None:
    texts = value.decode(DEFAULT_ENCODING).rstrip(" \x00").split("\\")
    if len(texts) == 1 and not texts[0]:
        return {"vr": vr}
    numbers: list[int | float] = []
    for text in texts:
        text = text.strip()
        if not grammar.fullmatch(text):
            return None
        parsed = number(text)
        if isinstance(parsed, int) and not INT64_MIN <= parsed <= INT64_MAX:
            return None
        if isinstance(parsed, float) and not math.isfinite(parsed):
            return None
        numbers.append(parsed)
    return {"vr": vr, "Value": numbers}


def _person_names(value: bytes, encodings: list[str]) -> dict[str, Any] | None:
    text = _decode(value.rstrip(b"\x00 "), encodings)
    if text is None:
        return None
    if not text:
        return {"vr": "PN"}
    names: list[dict[str, str]] = []
    for name in text.split("\\"):
        groups = name.split("=")
        while groups and not groups[-1]:  # as pydicom: no empty trailing component groups
            groups.pop()
        if not groups:
            return None
        names.append(dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)))
    return {"vr": "PN", "Value": names}
