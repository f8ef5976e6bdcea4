"""Modality Performed Procedure Steps (``performed_procedure_step``) and what they do to the order they perform
(``radiology_study``): the queries of ``dimse/mpps.py``, each run in the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

# What the MPPS columns are set from (dimse/mpps.py builds the values).
COLUMNS = (
    "station_ae_title",
    "study_instance_uid",
    "accession_number",
    "patient_id",
    "patient_name",
    "procedure_step_id",
    "description",
    "start_date",
    "start_time",
)


class Duplicate(Exception):
    """An MPPS with this SOP Instance UID exists already."""


async def order_of(
    conn: asyncpg.Connection, study_instance_uid: str | None, accession_number: str | None, step_id: str | None
) -> uuid.UUID | None:
    """The order an MPPS performs: by StudyInstanceUID, else AccessionNumber, else Scheduled Procedure Step ID."""
    for column, value in (
        ("study_instance_uid", study_instance_uid),
        ("accession_number", accession_number),
        ("scheduled_procedure_step_id", step_id),
    ):
        if value:
            found = await conn.fetchval(f"SELECT id FROM radiology_study WHERE {column} = $1 LIMIT 1", value)
            if found is not None:
                return uuid.UUID(str(found))
    return None


async def create(
    conn: asyncpg.Connection, uid: str, study_id: uuid.UUID | None, calling: str, values: dict[str, Any]
) -> None:
    """Record an MPPS IN PROGRESS; its order, if scheduled, is in progress from now. Raises Duplicate."""
    names = ", ".join(COLUMNS)
    placeholders = ", ".join(f"${n}" for n in range(5, len(COLUMNS) + 5))
    try:
        await conn.execute(
            f"INSERT INTO performed_procedure_step (sop_instance_uid, study_id, status, calling_ae_title, {names}) "
            f"VALUES ($1, $2, $3, $4, {placeholders})",
            uid,
            study_id,
            "IN PROGRESS",
            calling,
            *(values.get(c) for c in COLUMNS),
        )
    except asyncpg.UniqueViolationError:
        raise Duplicate(uid) from None
    if study_id is not None:
        await conn.execute(
            "UPDATE radiology_study SET status = 'in_progress', updated_at = now() "
            "WHERE id = $1 AND status = 'scheduled'",
            study_id,
        )


async def get(conn: asyncpg.Connection, uid: str) -> dict[str, Any] | None:
    """The MPPS, locked until the transaction ends (N-SETs of one step are applied one at a time)."""
    row = await conn.fetchrow("SELECT * FROM performed_procedure_step WHERE sop_instance_uid = $1 FOR UPDATE", uid)
    return dict(row) if row else None


async def update(
    conn: asyncpg.Connection,
    step: dict[str, Any],
    status: str,
    series: list[dict[str, Any]] | None,
    end: tuple[Any, Any],
    reason: str | None,
) -> None:
    """Apply an N-SET: the status, the performed series (replaced when the N-SET lists them), the end, the reason of
    a discontinuation; a COMPLETED step completes its order (if in progress), a DISCONTINUED one puts it back to
    scheduled, to be performed again, unless another step of it is still in progress."""
    await conn.execute(
        """
        UPDATE performed_procedure_step
           SET status = $2, performed_series = coalesce($3::jsonb, performed_series),
               end_date = coalesce($4, end_date), end_time = coalesce($5, end_time),
               discontinuation_reason = coalesce($6, discontinuation_reason), updated_at = now()
         WHERE sop_instance_uid = $1""",
        step["sop_instance_uid"],
        status,
        None if series is None else orjson.dumps(series).decode(),
        *end,
        reason,
    )
    study_id = step["study_id"]
    if study_id is None or status == "IN PROGRESS":
        return
    if status == "COMPLETED":
        await conn.execute(
            "UPDATE radiology_study SET status = 'completed', updated_at = now() "
            "WHERE id = $1 AND status IN ('scheduled', 'in_progress')",
            study_id,
        )
    else:
        await conn.execute(
            """
            UPDATE radiology_study SET status = 'scheduled', updated_at = now()
             WHERE id = $1 AND status = 'in_progress'
               AND NOT EXISTS (SELECT 1 FROM performed_procedure_step
                                WHERE study_id = $1 AND status = 'IN PROGRESS' AND sop_instance_uid <> $2)""",
            study_id,
            step["sop_instance_uid"],
        )


async def for_study(conn: asyncpg.Connection, study_id: uuid.UUID) -> list[dict[str, Any]]:
    """The steps performed for an order, oldest first, each performed series with the images the archive holds."""
    rows = await conn.fetch(
        "SELECT * FROM performed_procedure_step WHERE study_id = $1 ORDER BY created_at, sop_instance_uid", study_id
    )
    return await _with_series(conn, rows)


async def search(
    conn: asyncpg.Connection, unscheduled: bool, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the steps, newest first (only those of no known order when ``unscheduled``), and the total."""
    where = " WHERE study_id IS NULL" if unscheduled else ""
    total = await conn.fetchval("SELECT count(*) FROM performed_procedure_step" + where)
    rows = await conn.fetch(
        f"SELECT * FROM performed_procedure_step{where} ORDER BY created_at DESC, sop_instance_uid LIMIT $1 OFFSET $2",
        limit,
        offset,
    )
    return await _with_series(conn, rows), int(total)


async def _with_series(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    steps = []
    for row in rows:
        step = dict(row)
        series = orjson.loads(step["performed_series"]) if isinstance(step["performed_series"], str) else []
        uids = [s["seriesInstanceUID"] for s in series]
        stored = dict(
            await conn.fetch(
                "SELECT series_instance_uid, number_of_series_related_instances FROM series "
                "WHERE series_instance_uid = ANY($1::text[])",
                uids,
            )
        )
        for s in series:
            s["storedImages"] = int(stored.get(s["seriesInstanceUID"]) or 0)
        step["performed_series"] = series
        steps.append(step)
    return steps
