"""Modality Performed Procedure Step SCP (PS3.4 Annex F): a modality reports the procedure it performs (N-CREATE,
IN PROGRESS) and how it ends (N-SET: COMPLETED or DISCONTINUED); the order it performs follows (``db/mpps.py``).

An N-CREATE names its order in the Scheduled Step Attributes Sequence (0040,0270): by StudyInstanceUID, else
AccessionNumber, else Scheduled Procedure Step ID; an MPPS that names none the archive knows is kept as an
unscheduled procedure, never dropped. Statuses as PS3.4 F.7.2 and PS3.7 Annex C name them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from ..attributes import parse_date, parse_time
from ..db import mpps as db

if TYPE_CHECKING:
    from .server import Bridge

SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")  # Performed Procedure Step Status (0040,0252)


@dataclass(frozen=True)
class Outcome:
    """What an N-CREATE or N-SET did: its status (and why, when it failed), and the step and order it concerns."""

    status: int
    comment: str = ""
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def n_create(bridge: Bridge, calling: str, uid: str | None, attributes: Dataset | None) -> Outcome:
    """Record a step IN PROGRESS (its UID generated when the request has none) and move its order in progress."""
    if attributes is None or "PerformedProcedureStepStatus" not in attributes:
        return Outcome(MISSING_ATTRIBUTE, "Performed Procedure Step Status (0040,0252) is missing")
    if _text(attributes, "PerformedProcedureStepStatus") != "IN PROGRESS":
        return Outcome(INVALID_ATTRIBUTE_VALUE, "an MPPS is created IN PROGRESS (PS3.4 F.7.2.1)")
    if "ScheduledStepAttributesSequence" not in attributes:
        return Outcome(MISSING_ATTRIBUTE, "Scheduled Step Attributes Sequence (0040,0270) is missing")
    uid = uid or f"2.25.{uuid.uuid4().int}"
    steps = attributes.ScheduledStepAttributesSequence
    scheduled = steps[0] if steps else Dataset()
    values: dict[str, Any] = {
        "station_ae_title": _text(attributes, "PerformedStationAETitle"),
        "study_instance_uid": _text(scheduled, "StudyInstanceUID"),
        "accession_number": _text(scheduled, "AccessionNumber"),
        "patient_id": _text(attributes, "PatientID"),
        "patient_name": _text(attributes, "PatientName"),
        "procedure_step_id": _text(attributes, "PerformedProcedureStepID"),
        "description": _text(attributes, "PerformedProcedureStepDescription"),
        "start_date": parse_date(attributes.get("PerformedProcedureStepStartDate")),
        "start_time": parse_time(attributes.get("PerformedProcedureStepStartTime")),
    }
    step_id = _text(scheduled, "ScheduledProcedureStepID")

    async def create() -> Outcome:
        async with bridge.archive.pool.acquire() as conn, conn.transaction():
            order = await db.order_of(conn, values["study_instance_uid"], values["accession_number"], step_id)
            try:
                await db.create(conn, uid, order, calling, values)
            except db.Duplicate:
                return Outcome(DUPLICATE_SOP_INSTANCE, "an MPPS with this SOP Instance UID exists", uid)
        return Outcome(SUCCESS, "", uid, values["study_instance_uid"])

    return bridge.run(create())


def n_set(bridge: Bridge, uid: str, modifications: Dataset | None) -> Outcome:
    """Apply an N-SET to a step IN PROGRESS: its performed series, its end, COMPLETED or DISCONTINUED."""
    changes = modifications if modifications is not None else Dataset()
    status = _text(changes, "PerformedProcedureStepStatus")
    if status is not None and status not in STATUSES:
        return Outcome(
            INVALID_ATTRIBUTE_VALUE, f"Performed Procedure Step Status {status[:20]!r} is not one of PS3.3's"
        )
    series = None
    if "PerformedSeriesSequence" in changes:
        series = [
            {
                "seriesInstanceUID": _text(item, "SeriesInstanceUID"),
                "seriesDescription": _text(item, "SeriesDescription"),
                "images": len(item.get("ReferencedImageSequence") or []),
            }
            for item in changes.PerformedSeriesSequence
            if _text(item, "SeriesInstanceUID")
        ]
    reasons = changes.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []
    reason = _text(reasons[0], "CodeMeaning") if reasons else None
    end = (
        parse_date(changes.get("PerformedProcedureStepEndDate")),
        parse_time(changes.get("PerformedProcedureStepEndTime")),
    )

    async def update() -> Outcome:
        async with bridge.archive.pool.acquire() as conn, conn.transaction():
            step = await db.get(conn, uid)
            if step is None:
                return Outcome(NO_SUCH_OBJECT_INSTANCE, "no MPPS with this SOP Instance UID", uid)
            if step["status"] != "IN PROGRESS":  # PS3.4 F.7.2.2: a step that ended is not changed
                return Outcome(PROCESSING_FAILURE, f"the MPPS is {step['status']}: no change made", uid)
            await db.update(conn, step, status or "IN PROGRESS", series, end, reason)
        return Outcome(SUCCESS, "", uid, step["study_instance_uid"])

    return bridge.run(update())
