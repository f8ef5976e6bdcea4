"""The measurement groups of stored Structured Reports that did not become annotations (radiology_sr_unimported),
listed with the SR's workflow study (``reporting/studies.py``) so that none is dropped silently."""

from __future__ import annotations

from typing import Any

import asyncpg


async def add(
    conn: asyncpg.Connection,
    source_sop_instance_uid: str,
    study_instance_uid: str,
    groups: list[tuple[str | None, str]],
) -> None:
    """Record the groups (tracking UID, reason) of an SR that were not imported."""
    await conn.executemany(
        "INSERT INTO radiology_sr_unimported (source_sop_instance_uid, study_instance_uid, tracking_uid, reason) "
        "VALUES ($1, $2, $3, $4)",
        [(source_sop_instance_uid, study_instance_uid, tracking_uid, reason) for tracking_uid, reason in groups],
    )


async def forget(conn: asyncpg.Connection, source_sop_instance_uids: list[str]) -> None:
    """Drop what was recorded of these SRs (superseded by a later one)."""
    await conn.execute(
        "DELETE FROM radiology_sr_unimported WHERE source_sop_instance_uid = ANY($1::text[])", source_sop_instance_uids
    )


async def for_study(conn: asyncpg.Connection, study_instance_uid: str) -> list[dict[str, Any]]:
    """The study's groups not imported, of SRs the archive still holds, in the order they were stored."""
    rows = await conn.fetch(
        "SELECT u.source_sop_instance_uid, u.tracking_uid, u.reason FROM radiology_sr_unimported u "
        "WHERE u.study_instance_uid = $1 "
        "AND EXISTS (SELECT 1 FROM instance i WHERE i.sop_instance_uid = u.source_sop_instance_uid) "
        "ORDER BY u.created_at, u.source_sop_instance_uid, u.tracking_uid",
        study_instance_uid,
    )
    return [dict(row) for row in rows]
