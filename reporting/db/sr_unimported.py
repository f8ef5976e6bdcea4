"""The measurement groups of stored Structured Reports that did not become annotations (radiology_sr_unimported),
listed with the SR's workflow study (``reporting/studies.py``) so that none is dropped silently; and those waiting
for their image, with the annotation each draws (``reporting/sr_waiting.py`` imports them once it is stored)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from . import annotations as annotations_db


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


async def add_waiting(
    conn: asyncpg.Connection,
    source_sop_instance_uid: str,
    study_instance_uid: str,
    groups: list[annotations_db.Imported],
    author: str,
) -> None:
    """Record the groups of an SR whose image the archive does not hold, with the annotation each draws, to be
    imported when the image is stored (``reporting/sr_waiting.py``)."""
    await conn.executemany(
        "INSERT INTO radiology_sr_unimported (source_sop_instance_uid, study_instance_uid, tracking_uid, reason, "
        "image_sop_instance_uid, annotation, author) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
        [
            (
                source_sop_instance_uid,
                study_instance_uid,
                group.tracking_uid,
                waiting_reason(group.sop_instance_uid),
                group.sop_instance_uid,
                orjson.dumps(annotation_json(group)).decode(),
                author,
            )
            for group in groups
        ],
    )


def waiting_reason(sop_instance_uid: str) -> str:
    return f"image {sop_instance_uid} is not in the archive; it becomes an annotation when the image is stored"


def annotation_json(group: annotations_db.Imported) -> dict[str, Any]:
    shape = group.shape
    return {
        "type": shape.type,
        "coordinates": shape.coordinates,
        "frameNumber": shape.frame_number,
        "label": shape.label,
        "value": group.value,
        "unit": group.unit,
    }


def imported_of(
    image_sop_instance_uid: str, tracking_uid: str | None, annotation: dict[str, Any]
) -> annotations_db.Imported:
    """The annotation a waiting group draws, as ``annotation_json`` recorded it."""
    shape = annotations_db.Shape(
        annotation["type"], annotation["coordinates"], annotation["frameNumber"], annotation["label"], None
    )
    return annotations_db.Imported(image_sop_instance_uid, shape, annotation["value"], annotation["unit"], tracking_uid)


async def settle(conn: asyncpg.Connection, imported: list[int], beyond: list[tuple[int, str]]) -> None:
    """Waiting groups done with: those imported (or of an SR gone) go; those whose frame is beyond their image's
    wait no more, and say why."""
    if imported:
        await conn.execute("DELETE FROM radiology_sr_unimported WHERE pk = ANY($1::bigint[])", imported)
    if beyond:
        await conn.executemany(
            "UPDATE radiology_sr_unimported SET reason = $2, image_sop_instance_uid = NULL, annotation = NULL "
            "WHERE pk = $1",
            beyond,
        )


async def forget(conn: asyncpg.Connection, source_sop_instance_uids: list[str]) -> None:
    """Drop what was recorded of these SRs (superseded by a later one)."""
    await conn.execute(
        "DELETE FROM radiology_sr_unimported WHERE source_sop_instance_uid = ANY($1::text[])", source_sop_instance_uids
    )


async def for_study(conn: asyncpg.Connection, study_instance_uid: str) -> list[dict[str, Any]]:
    """The study's groups not imported, of SRs the archive still holds, in the order they were stored; with the image
    each waits for, if it does."""
    rows = await conn.fetch(
        "SELECT u.source_sop_instance_uid, u.tracking_uid, u.reason, u.image_sop_instance_uid AS waiting_for_image "
        "FROM radiology_sr_unimported u "
        "WHERE u.study_instance_uid = $1 "
        "AND EXISTS (SELECT 1 FROM instance i WHERE i.sop_instance_uid = u.source_sop_instance_uid) "
        "ORDER BY u.created_at, u.source_sop_instance_uid, u.tracking_uid",
        study_instance_uid,
    )
    return [dict(row) for row in rows]
