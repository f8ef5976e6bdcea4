"""The workflows as data: which study and report states may follow which, and the values the workflow generates.

Pure functions, no I/O; the endpoints ask here before they change anything and answer 409 with the allowed next
states when a transition is refused.
"""

from __future__ import annotations

import datetime
import re
import secrets
import uuid
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from dicomweb.errors import Conflict


class StudyStatus(StrEnum):
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    REPORTED = "reported"
    CANCELLED = "cancelled"


class ReportStatus(StrEnum):
    DRAFT = "draft"
    PRELIMINARY = "preliminary"
    FINAL = "final"


class ReportType(StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"
    ADDENDUM = "addendum"


class Modality(StrEnum):
    """The modalities a workflow study may be scheduled for (PS3.3 C.7.3.1.1.1 defined terms)."""

    CR = "CR"  # Computed Radiography
    CT = "CT"  # Computed Tomography
    MR = "MR"  # Magnetic Resonance
    US = "US"  # Ultrasound
    XR = "XR"  # X-Ray (a product term; DICOM's projection radiography is CR/DX)
    DX = "DX"  # Digital Radiography
    MG = "MG"  # Mammography
    PT = "PT"  # Positron Emission Tomography
    NM = "NM"  # Nuclear Medicine
    RF = "RF"  # Radio Fluoroscopy
    OT = "OT"  # Other


MODALITY_NAMES: Mapping[Modality, str] = MappingProxyType(
    {
        Modality.CR: "Computed Radiography",
        Modality.CT: "Computed Tomography",
        Modality.MR: "Magnetic Resonance",
        Modality.US: "Ultrasound",
        Modality.XR: "X-Ray",
        Modality.DX: "Digital Radiography",
        Modality.MG: "Mammography",
        Modality.PT: "Positron Emission Tomography",
        Modality.NM: "Nuclear Medicine",
        Modality.RF: "Radio Fluoroscopy",
        Modality.OT: "Other",
    }
)

STUDY_TRANSITIONS: Mapping[StudyStatus, frozenset[StudyStatus]] = MappingProxyType(
    {
        StudyStatus.SCHEDULED: frozenset({StudyStatus.IN_PROGRESS, StudyStatus.CANCELLED}),
        StudyStatus.IN_PROGRESS: frozenset({StudyStatus.COMPLETED, StudyStatus.CANCELLED}),
        StudyStatus.COMPLETED: frozenset({StudyStatus.REPORTED}),
        StudyStatus.REPORTED: frozenset(),
        StudyStatus.CANCELLED: frozenset(),
    }
)

# Report states an update may set; `final` is reached only by verification (it records who signed).
REPORT_EDITS: Mapping[ReportStatus, frozenset[ReportStatus]] = MappingProxyType(
    {
        ReportStatus.DRAFT: frozenset({ReportStatus.DRAFT, ReportStatus.PRELIMINARY}),
        ReportStatus.PRELIMINARY: frozenset({ReportStatus.PRELIMINARY}),
        ReportStatus.FINAL: frozenset(),
    }
)

# A report may be signed while its study is completed (the first final report moves the study to reported), or
# already reported (an addendum, or a second report).
STUDY_STATES_FOR_VERIFICATION = frozenset({StudyStatus.COMPLETED, StudyStatus.REPORTED})


def _ordered(states: frozenset[StudyStatus] | frozenset[ReportStatus]) -> list[str]:
    return sorted(str(s) for s in states)


def check_study_transition(current: StudyStatus, new: StudyStatus) -> None:
    """Refuse (409, listing the allowed next states) a study status change the workflow does not allow."""
    allowed = STUDY_TRANSITIONS[current]
    if new not in allowed:
        raise Conflict(
            f"a {current} study cannot become {new}",
            extra={"currentStatus": str(current), "allowedTransitions": _ordered(allowed)},
        )


def check_report_edit(current: ReportStatus, new: ReportStatus) -> None:
    """Refuse (409) any change to a final report, and a status an update may not set."""
    if current is ReportStatus.FINAL:
        raise Conflict(
            "a final report cannot be changed; add an addendum (POST /api/radiology/reports/{id}/addendum)",
            extra={"currentStatus": str(current), "allowedTransitions": []},
        )
    allowed = REPORT_EDITS[current]
    if new not in allowed:
        hint = "; a report becomes final by verification (POST .../verify)" if new is ReportStatus.FINAL else ""
        raise Conflict(
            f"a {current} report cannot become {new}{hint}",
            extra={"currentStatus": str(current), "allowedTransitions": _ordered(allowed)},
        )


def check_verification(report: ReportStatus, study: StudyStatus) -> None:
    """A report is signed once, and only for a study whose examination is completed."""
    if report is ReportStatus.FINAL:
        raise Conflict("the report is already final (signed)", extra={"currentStatus": str(report)})
    if study not in STUDY_STATES_FOR_VERIFICATION:
        raise Conflict(
            f"the study is {study}; a report can be signed once the study is completed",
            extra={"studyStatus": str(study)},
        )


def check_addendum(report: ReportStatus) -> None:
    """Addenda correct or complete a final report; a draft is edited instead."""
    if report is not ReportStatus.FINAL:
        raise Conflict(
            f"the report is {report}; addenda are added to final reports (edit this one instead)",
            extra={"currentStatus": str(report)},
        )


def accession_number(today: datetime.date | None = None) -> str:
    """``ACC{YYYYMMDD}{random}``: 16 characters, within the 16 an AccessionNumber (SH) may hold (PS3.5 §6.2)."""
    day = today or datetime.datetime.now(datetime.UTC).date()
    return f"ACC{day:%Y%m%d}{secrets.token_hex(3).upper()[:5]}"


def procedure_id(prefix: str, today: datetime.date | None = None) -> str:
    """``{prefix}{YYYYMMDD}{random}`` for a Requested Procedure ID or Scheduled Procedure Step ID the order did not
    give: ``RP`` or ``SPS`` prefixed, within the 16 characters of SH (PS3.5 §6.2); unique within its order."""
    day = today or datetime.datetime.now(datetime.UTC).date()
    return f"{prefix}{day:%Y%m%d}{secrets.token_hex(3).upper()[: 16 - 8 - len(prefix)]}"


def new_uid() -> str:
    """A UID in the ``2.25.`` form derived from a random UUID (PS3.5 §B.2)."""
    return f"2.25.{uuid.uuid4().int}"


# Template placeholders and where their values come from: the workflow record (camelCase fields) or, for the
# patient's demographics, the archive's DICOM data of the study.
PLACEHOLDERS = frozenset(
    {
        "patientName",
        "patientId",
        "patientBirthDate",
        "patientSex",
        "accessionNumber",
        "studyDate",
        "modality",
        "studyDescription",
        "bodyPart",
        "referringPhysician",
        "performingTechnician",
        "studyInstanceUID",
        "reportDate",
    }
)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9]*)\s*\}\}")


def unknown_placeholders(content: str) -> list[str]:
    """The placeholders in a template's content that ``fill`` would not know, in order of appearance."""
    seen: list[str] = []
    for name in _PLACEHOLDER.findall(content):
        if name not in PLACEHOLDERS and name not in seen:
            seen.append(name)
    return seen


def fill(content: str, values: Mapping[str, str | None]) -> str:
    """The template's content with every placeholder replaced; a value not known for this study is left empty."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1)) or "", content)
