"""DICOM JSON (PS3.18 Annex F) for stored instances, with large binary values replaced by BulkDataURI references.

The metadata of every instance is computed once, at store time, and kept in the database, so that WADO-RS metadata
and QIDO-RS ``includefield`` never open a DICOM file. A binary value (VR OB, OD, OF, OL, OV, OW or UN) longer than
``BULK_DATA_THRESHOLD`` bytes becomes a ``BulkDataURI`` (PS3.18 §F.2.6). The stored URI is *relative to the
DICOMweb base URL* (``studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/bulk/{path}``,
where ``path`` is the element's tag, prefixed by ``{sequence tag}/{item index}/`` for each enclosing sequence); the
retrieve services make it absolute for the client that asks.

Values over the threshold are never loaded into memory here: the dataset is read with ``defer_size`` and a
deferred binary element only contributes its tag and length.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian as DEFLATED

from .rawjson import DEFAULT_ENCODING, element_json, sequence_json

# PS3.18 §F.2.6 leaves the threshold to the server; 1 KiB keeps LUTs and icons inline-free and metadata small.
BULK_DATA_THRESHOLD = 1024  # bytes

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
UNDEFINED_LENGTH = 0xFFFFFFFF
SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)

INTEGER_STRING = re.compile(r"[+-]?[0-9]+")  # IS, PS3.5 Table 6.2-1 (surrounding spaces stripped)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the integers orjson writes as signed numbers


def dataset_to_json(ds: Dataset, instance_path: str, source: bytes | Path | None = None) -> dict[str, Any]:
    """The DICOM JSON object of ``ds``; ``instance_path`` is the instance's URL path relative to the base URL.
    ``source``: the file ``ds`` was read from (its bytes, or its path), where a sequence whose value was left unread
    (``defer_size``) is read for ``rawjson.sequence_json``; without it, such a sequence is pydicom's to read."""
    deflated = getattr(ds, "file_meta", None) is not None and ds.file_meta.get("TransferSyntaxUID") == DEFLATED
    return _dataset(ds, instance_path + "/bulk/", [DEFAULT_ENCODING], None if deflated else source)


def _dataset(
    ds: Dataset, bulk_prefix: str, parent_encodings: list[str], source: bytes | Path | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    encodings = parent_encodings
    if SPECIFIC_CHARACTER_SET in ds:  # a sequence item may have its own (PS3.5 §7.5.3)
        encodings = convert_encodings(ds[SPECIFIC_CHARACTER_SET].value)
    for tag in ds.keys():
        if tag.element == 0:  # Group Length describes the binary encoding, not the data; dcm4che omits it too
            continue
        key = f"{tag:08X}"
        raw = ds.get_item(tag, keep_deferred=True)
        vr = _vr(tag, raw)
        if vr in BINARY_VRS and _binary_length(raw) > BULK_DATA_THRESHOLD:
            result[key] = {"vr": vr, "BulkDataURI": bulk_prefix + key}
            continue
        if isinstance(raw, RawDataElement) and vr != "SQ":
            fast = element_json(raw, encodings)
            if fast is not None:
                result[key] = fast
                continue
        if isinstance(raw, RawDataElement) and vr == "SQ" and raw.is_little_endian:
            encoded = raw.value if raw.value is not None else _deferred(raw, source)
            if encoded is not None:
                items = sequence_json(
                    encoded, raw.is_implicit_VR, encodings, f"{bulk_prefix}{key}/", BULK_DATA_THRESHOLD
                )
                if items is not None:
                    result[key] = items
                    continue
        element = ds[tag]
        if element.VR == "SQ":
            items = [
                _dataset(item, f"{bulk_prefix}{key}/{index}/", encodings) for index, item in enumerate(element.value)
            ]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        else:
            result[key] = _element(element)
    return result


def _deferred(raw: RawDataElement, source: bytes | Path | None) -> bytes | None:
    """The value pydicom left unread (``defer_size``), from the file it read the data set from: at ``value_tell``,
    its offset in the file (the stream's, for a deflated one: not the file's, so no ``source`` is given then)."""
    if source is None or raw.length == UNDEFINED_LENGTH:
        return None
    start, end = raw.value_tell, raw.value_tell + raw.length
    if isinstance(source, bytes):
        return source[start:end] if end <= len(source) else None
    try:
        with source.open("rb") as file:
            file.seek(start)
            value = file.read(raw.length)
    except OSError:
        return None
    return value if len(value) == raw.length else None


def _vr(tag: BaseTag, raw: DataElement | RawDataElement | None) -> str:
    """The element's VR without loading its value (implicit VR files have none in the raw element)."""
    if raw is not None and raw.VR:
        return str(raw.VR)
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    # Ambiguous dictionary VRs ("OB or OW", "US or SS or OW"): implicit VR Little Endian encodes them as OW
    # (PS3.5 §A.1 and Annex A.2), and numbers that are not binary are resolved by pydicom on access.
    return "OW" if "OW" in vr else vr.split(" ")[0]


def _binary_length(raw: DataElement | RawDataElement | None) -> int:
    if isinstance(raw, RawDataElement):
        if raw.value is None:  # deferred: only values over the defer size are left unread
            return raw.length if raw.length != UNDEFINED_LENGTH else BULK_DATA_THRESHOLD + 1
        return len(raw.value)
    if raw is None or raw.value is None:
        return 0
    value = raw.value
    return len(value) if isinstance(value, bytes | bytearray) else 0


def _element(element: DataElement) -> dict[str, Any]:
    if element.VR in ("IS", "DS") and not all(_is_json_number(element.VR, v) for v in _values(element.value)):
        return _as_text(element)
    try:
        return element.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=BULK_DATA_THRESHOLD)
    except (ValueError, TypeError, OverflowError):
        return _as_text(element)


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _is_json_number(vr: str, value: Any) -> bool:
    """Whether pydicom's number for an IS or DS value is that value, and a JSON number orjson can write.

    IS is an optionally signed string of digits (PS3.5 Table 6.2-1); pydicom also reads "1.5" or "1.0" as an IS
    and would render it as 1, and an IS such as "1e99" as an integer orjson refuses (it writes 64 bits at most).
    A DS of "inf" or "nan" would become JSON null.
    """
    if value is None or value == "":
        return True  # empty values are null (PS3.18 §F.2.5), which pydicom writes
    if vr == "IS":
        text = getattr(value, "original_string", None)
        return (
            isinstance(value, int)
            and (text is None or INTEGER_STRING.fullmatch(text.strip()) is not None)
            and INT64_MIN <= value <= INT64_MAX
        )
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _as_text(element: DataElement) -> dict[str, Any]:
    """A value that does not fit its VR (e.g. IS "1.5"): keep its text rather than lose or change the element.

    Empty values among several stay in place as null (PS3.18 §F.2.5); an element with no value has no "Value".
    """
    texts = [str(getattr(v, "original_string", v)).strip() if v is not None else "" for v in _values(element.value)]
    if not any(texts):
        return {"vr": element.VR}
    return {"vr": element.VR, "Value": [text or None for text in texts]}
