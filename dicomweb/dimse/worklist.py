"""Modality Worklist SCP (Modality Worklist Information Model - FIND, PS3.4 Annex K): the orders the reporting API
schedules, one item per scheduled procedure step, found by ``db/worklist.py`` with the same matching as QIDO-RS.

The identifier's matching keys (Table K.6-1) are read at the top level (patient, order, requested procedure) and in
the one item of the Scheduled Procedure Step Sequence (station, start, modality, performing physician, step ID); a
key with a value is matched, an empty one returned. Every answer carries the keys the identifier asked for and,
whether asked or not, the keys modalities rely on (StudyInstanceUID, accession number, patient demographics, the
requested procedure and the step with its status), so an item is usable by a modality that asks for little.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from ..db import worklist as db
from ..errors import BadRequest
from ..query import MatchKey, match_key
from ..status import DimseStatus
from .find import Found, needs_utf8

if TYPE_CHECKING:
    import asyncpg

    from .server import Bridge

PAGE = 500  # items fetched per query while the pending responses of the page before go out

TOP_LEVEL_KEYS = ("PatientName", "PatientID", "AccessionNumber", "RequestedProcedureID", "ReferringPhysicianName",
                  "StudyInstanceUID")  # fmt: skip
STEP_KEYS = ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
             "Modality", "ScheduledPerformingPhysicianName", "ScheduledProcedureStepID")  # fmt: skip
STEP_STATUS = {"scheduled": "SCHEDULED", "in_progress": "STARTED"}  # (0040,0020), PS3.3 C.4.10


def keys_of(identifier: Dataset, own_station: str | None = None) -> list[MatchKey]:
    """The identifier's matching keys; BadRequest for a value QIDO-RS would refuse too. ``own_station``: what an
    empty or ``*`` ScheduledStationAETitle (or none) stands for, instead of every station."""
    steps = identifier.get("ScheduledProcedureStepSequence") or [Dataset()]
    values = {keyword: _text(identifier.get(keyword)) for keyword in TOP_LEVEL_KEYS}
    values |= {keyword: _text(steps[0].get(keyword)) for keyword in STEP_KEYS}
    if own_station is not None and values["ScheduledStationAETitle"] in ("", "*"):
        values["ScheduledStationAETitle"] = own_station
    # An empty value or "*" matches everything (universal matching, PS3.4 C.2.2.2.3): no condition.
    return [match_key(db.ATTRIBUTES[k], v, k) for k, v in values.items() if v not in ("", "*")]


def _text(value: Any) -> str:
    many = isinstance(value, MultiValue | list | tuple)  # a list of UIDs (PS3.4 C.2.2.2.2)
    return ("\\".join(str(v) for v in value) if many else str(value or "")).strip()


def find(bridge: Bridge, identifier: Dataset, own_station: str | None = None) -> Iterator[Found]:
    """The responses to one worklist query: a pending one per scheduled procedure step, page by page."""
    try:
        keys = keys_of(identifier, own_station)
    except BadRequest as exc:
        yield Found(None, DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, exc.detail)
        return
    time_zone = bridge.archive.settings.timezone
    offset = 0
    while True:
        page = bridge.run(_page(bridge, keys, time_zone, offset))
        for row in page:
            yield Found(_item(row, identifier))
        if len(page) < PAGE:
            return
        offset += PAGE


async def _page(bridge: Bridge, keys: list[MatchKey], time_zone: str, offset: int) -> list[asyncpg.Record]:
    async with bridge.archive.pool.acquire() as conn:
        return await db.find(conn, keys, time_zone, PAGE, offset)


def _item(row: Any, identifier: Dataset) -> Dataset:
    """One worklist item: the keys asked for (zero length when the order has no value) and the ones always given."""
    step = Dataset()
    step.Modality = row["modality"]
    step.ScheduledStationAETitle = row["scheduled_station_ae_title"] or ""
    step.ScheduledStationName = row["scheduled_station_name"] or ""
    step.ScheduledProcedureStepStartDate = _da(row["scheduled_date"])
    step.ScheduledProcedureStepStartTime = _tm(row["scheduled_time"])
    step.ScheduledPerformingPhysicianName = row["scheduled_performing_physician"] or ""
    step.ScheduledProcedureStepDescription = row["scheduled_procedure_step_description"] or ""
    step.ScheduledProcedureStepID = row["scheduled_procedure_step_id"]
    step.ScheduledProcedureStepStatus = STEP_STATUS[row["status"]]
    item = Dataset()
    asked = identifier.get("ScheduledProcedureStepSequence") or [Dataset()]
    for element in asked[0]:
        if element.tag not in step:
            step.add_new(element.tag, element.VR, None)  # a return key the archive has no value for
    item.AccessionNumber = row["accession_number"]
    item.ReferringPhysicianName = row["referring_physician"] or ""
    item.PatientName = row["patient_name"] or ""
    item.PatientID = row["patient_id"]
    item.PatientBirthDate = _da(row["patient_birth_date"])
    item.PatientSex = row["patient_sex"] or ""
    item.StudyInstanceUID = row["study_instance_uid"]
    item.RequestedProcedureDescription = row["requested_procedure_description"] or row["study_description"] or ""
    item.RequestedProcedureID = row["requested_procedure_id"]
    item.RequestedProcedurePriority = row["priority"] or ""
    item.RequestedProcedureCodeSequence = Sequence(_code(row))
    item.ReferencedStudySequence = Sequence()  # type 2 (Table K.6-1)
    item.ReferencedPatientSequence = Sequence()  # type 2
    item.ScheduledProcedureStepSequence = Sequence([step])
    for element in identifier:
        if element.tag not in item and element.keyword not in ("SpecificCharacterSet", "QueryRetrieveLevel"):
            item.add_new(element.tag, element.VR, None)
    if any(needs_utf8(element.value) for element in item.iterall() if element.VR != "SQ"):
        item.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, when a value (in a sequence too) needs it
    return item


def _code(row: Any) -> list[Dataset]:
    if row["requested_procedure_code_value"] is None:
        return []
    code = Dataset()
    code.CodeValue = row["requested_procedure_code_value"]
    code.CodingSchemeDesignator = row["requested_procedure_coding_scheme"]
    code.CodeMeaning = row["requested_procedure_code_meaning"]
    return [code]


def _da(value: datetime.date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _tm(value: datetime.time | None) -> str:
    return value.strftime("%H%M%S") if value else ""
