"""Which DICOM attribute lives in which column: the one keyword→column map (read by store, search and render).

The indexed attributes are those PS3.18 Table 10.6.3-3/-4/-5 require QIDO-RS to match and return at the study,
series and instance levels (plus the patient attributes they include, and the few extra ones OHIF's study list and
series browser ask for: StudyDescription, SeriesDate, SeriesTime, BodyPartExamined). Everything else is answered
from the DICOM JSON metadata stored per instance.
"""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName


class Level(StrEnum):
    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


Kind = Literal["text", "uid", "pn", "date", "time", "int", "text_list"]


@dataclass(frozen=True)
class Attribute:
    """An indexed attribute: its DICOM keyword, the level (table) it belongs to, its column and value kind."""

    keyword: str
    level: Level
    column: str
    kind: Kind


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("PatientID", Level.PATIENT, "patient_id", "text"),
    Attribute("IssuerOfPatientID", Level.PATIENT, "issuer_of_patient_id", "text"),
    Attribute("PatientName", Level.PATIENT, "patient_name", "pn"),
    Attribute("PatientBirthDate", Level.PATIENT, "patient_birth_date", "date"),
    Attribute("PatientSex", Level.PATIENT, "patient_sex", "text"),
    Attribute("StudyInstanceUID", Level.STUDY, "study_instance_uid", "uid"),
    Attribute("StudyDate", Level.STUDY, "study_date", "date"),
    Attribute("StudyTime", Level.STUDY, "study_time", "time"),
    Attribute("AccessionNumber", Level.STUDY, "accession_number", "text"),
    Attribute("ReferringPhysicianName", Level.STUDY, "referring_physician_name", "pn"),
    Attribute("StudyID", Level.STUDY, "study_id", "text"),
    Attribute("StudyDescription", Level.STUDY, "study_description", "text"),
    Attribute("SeriesInstanceUID", Level.SERIES, "series_instance_uid", "uid"),
    Attribute("Modality", Level.SERIES, "modality", "text"),
    Attribute("SeriesNumber", Level.SERIES, "series_number", "int"),
    Attribute("SeriesDescription", Level.SERIES, "series_description", "text"),
    Attribute("SeriesDate", Level.SERIES, "series_date", "date"),
    Attribute("SeriesTime", Level.SERIES, "series_time", "time"),
    Attribute("BodyPartExamined", Level.SERIES, "body_part_examined", "text"),
    Attribute("PerformedProcedureStepStartDate", Level.SERIES, "performed_procedure_step_start_date", "date"),
    Attribute("PerformedProcedureStepStartTime", Level.SERIES, "performed_procedure_step_start_time", "time"),
    # Sequence matching (PS3.18 Table 10.6.3-4): RequestAttributesSequence > ScheduledProcedureStepID and
    # > RequestedProcedureID, kept as arrays of every item's value.
    Attribute("ScheduledProcedureStepID", Level.SERIES, "scheduled_procedure_step_ids", "text_list"),
    Attribute("RequestedProcedureID", Level.SERIES, "requested_procedure_ids", "text_list"),
    Attribute("SOPInstanceUID", Level.INSTANCE, "sop_instance_uid", "uid"),
    Attribute("SOPClassUID", Level.INSTANCE, "sop_class_uid", "uid"),
    Attribute("InstanceNumber", Level.INSTANCE, "instance_number", "int"),
    Attribute("Rows", Level.INSTANCE, "rows", "int"),
    Attribute("Columns", Level.INSTANCE, "columns", "int"),
    Attribute("BitsAllocated", Level.INSTANCE, "bits_allocated", "int"),
    Attribute("NumberOfFrames", Level.INSTANCE, "number_of_frames", "int"),
)

BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in ATTRIBUTES}

# Attributes the archive computes (PS3.18 Table 10.6.3-3/-4), kept in columns by db/index.py, never extracted.
AGGREGATES: tuple[Attribute, ...] = (
    Attribute("ModalitiesInStudy", Level.STUDY, "modalities_in_study", "text_list"),
    Attribute("NumberOfStudyRelatedSeries", Level.STUDY, "number_of_study_related_series", "int"),
    Attribute("NumberOfStudyRelatedInstances", Level.STUDY, "number_of_study_related_instances", "int"),
    Attribute("NumberOfSeriesRelatedInstances", Level.SERIES, "number_of_series_related_instances", "int"),
)

# Attributes kept in a sequence: (sequence keyword, item keyword) per indexed array column (sequence matching).
SEQUENCE_PARENT = {
    "ScheduledProcedureStepID": "RequestAttributesSequence",
    "RequestedProcedureID": "RequestAttributesSequence",
}


def columns(level: Level) -> tuple[Attribute, ...]:
    return tuple(a for a in ATTRIBUTES if a.level is level)


def normalize_name(value: str) -> str:
    """A person name folded for matching: case- and accent-insensitive ("Müller" and "MULLER" → "muller").

    Only the Combining Diacritical Marks block (U+0300–U+036F) is dropped: other combining marks change the letter,
    like the kana voicing marks U+3099/U+309A (やまだ Yamada is not やまた Yamata), and NFC puts them back together.
    """
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not "\u0300" <= c <= "\u036f")
    return unicodedata.normalize("NFC", stripped).casefold()


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _person_name(value: Any) -> str | None:
    if isinstance(value, PersonName):
        return _text(str(value))
    return _text(value)


def parse_date(value: Any) -> datetime.date | None:
    text = str(value).strip() if value is not None else ""
    if len(text) == 10 and text[4] == "." and text[7] == ".":  # ACR-NEMA "YYYY.MM.DD" (PS3.5 Table 6.2-1 note)
        text = text.replace(".", "")
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 else None
    except ValueError:
        return None


def parse_time(value: Any) -> datetime.time | None:
    # PS3.5 Table 6.2-1 TM: HH[MM[SS[.F{1-6}]]], the old "HH:MM:SS" form tolerated.
    text = (str(value).strip() if value is not None else "").replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    hour, minute, second = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((fraction + "000000")[:6]) if fraction else 0
    if hour > 23 or minute > 59 or second > 60:
        return None
    return datetime.time(hour, minute, min(second, 59), micro)


def _int(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if -(2**31) <= number < 2**31 else None


CONVERT: dict[Kind, Callable[[Any], Any]] = {
    "text": _text,
    "uid": _text,
    "pn": _person_name,
    "date": parse_date,
    "time": parse_time,
    "int": _int,
}


def _tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a DICOM keyword")
    return BaseTag(tag)


# Tags looked up once: extract() runs for every stored instance, and Dataset.get(keyword) goes through
# Dataset.__getattr__ and the keyword dictionary on every call.
TAGS: dict[str, BaseTag] = {keyword: _tag(keyword) for keyword in [*BY_KEYWORD, "RequestAttributesSequence"]}
JSON_KEYS: dict[str, str] = {keyword: f"{tag:08X}" for keyword, tag in TAGS.items()}  # DICOM JSON keys (PS3.18 F.2.1)


def _value(ds: Dataset, keyword: str) -> Any:
    """``ds.get(keyword)``, by tag: the element's value, or None when it is absent."""
    tag = TAGS[keyword]
    return ds[tag].value if tag in ds else None


def _sequence_values(ds: Dataset, keyword: str) -> list[str]:
    values: list[str] = []
    for item in _value(ds, "RequestAttributesSequence") or []:
        value = _text(_value(item, keyword))
        if value is not None:
            values.append(value)
    return values


def extract_from_json(metadata: dict[str, Any], ds: Dataset) -> dict[Level, dict[str, Any]]:
    """``extract(ds)`` read from the instance's DICOM JSON (``dicomjson.dataset_to_json(ds)``), which the store has
    made already: the values are there without pydicom converting each element again. Person names still come from
    ``ds``: the JSON drops a name's empty trailing component groups ("Doe^Jane==" is {"Alphabetic": "Doe^Jane"}), the
    column keeps the name as it was sent."""
    record: dict[Level, dict[str, Any]] = {level: {} for level in Level}
    for attribute in ATTRIBUTES:
        if attribute.kind == "text_list":
            value: Any = _json_sequence_values(metadata, attribute.keyword)
        elif attribute.kind == "pn":
            raw = _value(ds, attribute.keyword)
            value = CONVERT["pn"](raw[0] if isinstance(raw, MultiValue | list | tuple) and raw else raw or None)
        else:
            value = CONVERT[attribute.kind](_json_value(metadata, attribute.keyword))
        record[attribute.level][attribute.column] = value
        if attribute.kind == "pn":
            record[attribute.level][attribute.column + "_folded"] = normalize_name(value) if value else None
    return record


def _json_value(metadata: dict[str, Any], keyword: str) -> Any:
    """The first value of an element of a DICOM JSON object, or None."""
    values = (metadata.get(JSON_KEYS[keyword]) or {}).get("Value")
    return values[0] if values else None


def _json_sequence_values(metadata: dict[str, Any], keyword: str) -> list[str]:
    values: list[str] = []
    for item in (metadata.get(JSON_KEYS["RequestAttributesSequence"]) or {}).get("Value") or []:
        value = _text(_json_value(item, keyword))
        if value is not None:
            values.append(value)
    return values


def extract(ds: Dataset) -> dict[Level, dict[str, Any]]:
    """The indexed column values of one instance, per level; unparsable values become NULL (the metadata keeps them)."""
    record: dict[Level, dict[str, Any]] = {level: {} for level in Level}
    for attribute in ATTRIBUTES:
        if attribute.kind == "text_list":
            value: Any = _sequence_values(ds, attribute.keyword)
        else:
            raw = _value(ds, attribute.keyword)
            if isinstance(raw, MultiValue | list | tuple):  # multi-valued: the index keeps the first value
                raw = raw[0] if raw else None
            value = CONVERT[attribute.kind](raw)
        record[attribute.level][attribute.column] = value
        if attribute.kind == "pn":
            record[attribute.level][attribute.column + "_folded"] = normalize_name(value) if value else None
    return record
