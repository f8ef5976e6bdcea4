"""C-FIND SCP (PS3.4 Annex C): Patient Root and Study Root Query/Retrieve Information Model - FIND, answered by
the same search as QIDO-RS (``services.search``), so that a C-FIND and the equivalent QIDO-RS search find the same
entities.

The identifier's keys become QIDO's: a key with a value is matched (single value, wildcards, ranges, UID lists,
person names case- and accent-insensitively, as PS3.4 C.2.2.2 and QIDO-RS do), an empty one is a return key, and
every key is returned (PS3.4 C.4.1.1.3.1), with the unique key of the level. The answer is fetched a page at a time
while pending responses go out, so a large answer is never held whole, and C-CANCEL stops it between two.
PATIENT level (Patient Root) is answered from the study search, one response per patient.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from ..attributes import Level
from ..errors import BadRequest
from ..query import parse
from ..services.search import search
from ..status import DimseStatus

if TYPE_CHECKING:
    from .server import Bridge

log = logging.getLogger("dicomweb")

PAGE = 500  # matches fetched per search while the pending responses of the page before go out

LEVELS = {"PATIENT": Level.STUDY, "STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}  # identifier elements that are no match or return key


@dataclass(frozen=True)
class Found:
    """One response identifier, or a final status with its reason."""

    identifier: Dataset | None
    status: int = DimseStatus.PENDING
    comment: str = ""


def keys_of(identifier: Dataset) -> list[tuple[str, str]]:
    """The identifier's keys as QIDO-RS query parameters: keyword and value (empty: a return key). Multiple values
    (a list of UIDs) are joined with backslashes, as they are encoded."""
    params: list[tuple[str, str]] = []
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in NOT_KEYS or element.VR == "SQ":
            continue
        value = element.value
        if value is None:
            text = ""
        elif isinstance(value, (list, tuple, MultiValue)):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        params.append((keyword, text))
    return params


def find(bridge: Bridge, identifier: Dataset, ae_title: str) -> Iterator[Found]:
    """The responses to one C-FIND: a pending one per match, page by page (runs in the association's thread)."""
    level_name = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level_name not in LEVELS:
        yield Found(
            None, DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"QueryRetrieveLevel {level_name!r} is not supported"
        )
        return
    level = LEVELS[level_name]
    keys = keys_of(identifier)
    returned = [keyword for keyword, _ in keys]
    unique = UNIQUE_KEYS[level_name]
    # Every key is returned, matched or not (includefield), with the unique key of the level (PS3.4 C.4.1.1.3.1).
    includes = [("includefield", keyword) for keyword in [*returned, unique]]
    seen_patients: set[tuple[str, str]] = set()
    offset = 0
    while True:
        params = [*keys, *includes, ("limit", str(PAGE)), ("offset", str(offset))]
        try:
            query = parse(params, level)
        except BadRequest as exc:
            yield Found(None, DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, exc.detail)
            return
        page = bridge.run(search(bridge.archive, query, {}, "")).results
        for result in page:
            answer = _identifier(result, level_name, [*returned, unique], ae_title)
            if level_name == "PATIENT":
                patient = (str(answer.get("PatientID", "")), str(answer.get("IssuerOfPatientID", "")))
                if patient in seen_patients:
                    continue
                seen_patients.add(patient)
            yield Found(answer)
        if len(page) < PAGE:
            return
        offset += PAGE


def _identifier(result: dict[str, Any], level_name: str, keywords: list[str], ae_title: str) -> Dataset:
    """A response identifier: the requested keys (empty when the archive has no value), the level, the archive's
    AE title as Retrieve AE Title, and UTF-8 declared when a value needs it."""
    answer = Dataset()
    answer.QueryRetrieveLevel = level_name
    for keyword in dict.fromkeys(keywords):
        tag = Tag(keyword)
        element = result.get(f"{tag:08X}")
        if element is None or "BulkDataURI" in element:
            setattr(answer, keyword, None)  # a return key the archive has no value for: zero length
        else:
            answer.add(_from_json(tag, element))
    answer.RetrieveAETitle = ae_title
    if any(needs_utf8(element.value) for element in answer):
        answer.SpecificCharacterSet = "ISO_IR 192"
    return answer


def _from_json(tag: BaseTag, element: dict[str, Any]) -> DataElement:
    """One DICOM JSON element (PS3.18 Annex F) as a data element: strings, numbers and person names directly (pydicom's
    ``Dataset.from_json`` of a whole result was half the server's time per C-FIND match), sequences, attribute tags
    and inline binary values through it still."""
    vr = element["vr"]
    values = element.get("Value", [])
    if vr in ("SQ", "AT") or "InlineBinary" in element:
        return Dataset.from_json({f"{tag:08X}": element})[tag]
    if vr == "PN":  # F.2.2: a Value is an object of its component groups
        values = ["=".join(_groups(name)) for name in values]
    if not values:
        return DataElement(tag, vr, None)
    return DataElement(tag, vr, values[0] if len(values) == 1 else values)


def _groups(name: dict[str, str] | None) -> list[str]:
    groups = [(name or {}).get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
    while groups and not groups[-1]:
        groups.pop()
    return groups


def needs_utf8(value: Any) -> bool:
    """Whether a value has characters beyond ASCII, the Default Character Repertoire (PS3.5 §6.1.2.5.3)."""
    return not str(value).isascii()
