"""Image annotations: rows of radiology_annotation, keyed to an archived instance by its SOPInstanceUID.

An image's annotations go when the image does (schema.sql's deferred radiology_annotation_orphans trigger). An
annotation is added while the instance row is locked (FOR KEY SHARE), so a concurrent deletion of the image waits
for it and then takes the new annotation along; it never leaves one behind.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

_COLUMNS = (
    "id, sop_instance_uid, frame_number, type, coordinates, label, color, value, unit, source_sop_instance_uid, "
    "tracking_uid, created_by, created_at, updated_at"
)


@dataclass(frozen=True)
class Shape:
    """What an annotation draws: its type, coordinates (a JSON object), frame, label and colour."""

    type: str
    coordinates: dict[str, Any]
    frame_number: int | None
    label: str | None
    color: str | None


def _row(row: asyncpg.Record) -> dict[str, Any]:
    found = dict(row)
    found["coordinates"] = orjson.loads(found["coordinates"])
    return found


async def lock_image(conn: asyncpg.Connection, sop_instance_uid: str) -> int | None:
    """The image's number of frames, with its row locked against deletion until the transaction ends; None when
    the archive does not hold it."""
    frames = await conn.fetchval(
        "SELECT coalesce(number_of_frames, 1) FROM instance WHERE sop_instance_uid = $1 FOR KEY SHARE",
        sop_instance_uid,
    )
    return int(frames) if frames is not None else None


async def insert(conn: asyncpg.Connection, sop_instance_uid: str, shape: Shape, created_by: str) -> dict[str, Any]:
    """Add an annotation to an image (lock it with ``lock_image`` first, in the same transaction)."""
    row = await conn.fetchrow(
        "INSERT INTO radiology_annotation (id, sop_instance_uid, frame_number, type, coordinates, label, color, "
        f"created_by) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING {_COLUMNS}",
        uuid.uuid4(),
        sop_instance_uid,
        shape.frame_number,
        shape.type,
        orjson.dumps(shape.coordinates).decode(),
        shape.label,
        shape.color,
        created_by,
    )
    assert row is not None
    return _row(row)


async def for_image(conn: asyncpg.Connection, sop_instance_uid: str) -> list[dict[str, Any]]:
    """The image's annotations, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM radiology_annotation WHERE sop_instance_uid = $1 ORDER BY created_at, id",
        sop_instance_uid,
    )
    return [_row(row) for row in rows]


async def get(conn: asyncpg.Connection, annotation_id: uuid.UUID, lock: bool = False) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM radiology_annotation WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        annotation_id,
    )
    return _row(row) if row else None


async def update(conn: asyncpg.Connection, annotation_id: uuid.UUID, shape: Shape) -> dict[str, Any]:
    """Replace what an annotation draws; its author and creation time stay."""
    row = await conn.fetchrow(
        "UPDATE radiology_annotation SET frame_number = $2, type = $3, coordinates = $4::jsonb, label = $5, "
        f"color = $6, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        annotation_id,
        shape.frame_number,
        shape.type,
        orjson.dumps(shape.coordinates).decode(),
        shape.label,
        shape.color,
    )
    assert row is not None
    return _row(row)


async def delete(conn: asyncpg.Connection, annotation_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM radiology_annotation WHERE id = $1", annotation_id)
