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


async def lock_images(conn: asyncpg.Connection, sop_instance_uids: list[str]) -> dict[str, int]:
    """``lock_image`` for several images at once: the number of frames of each one the archive holds."""
    rows = await conn.fetch(
        "SELECT sop_instance_uid, coalesce(number_of_frames, 1) AS frames FROM instance "
        "WHERE sop_instance_uid = ANY($1::text[]) ORDER BY sop_instance_uid FOR KEY SHARE",
        sop_instance_uids,
    )
    return {row["sop_instance_uid"]: int(row["frames"]) for row in rows}


def exported_id(tracking_uid: str) -> uuid.UUID | None:
    """The annotation id a Tracking UID ``2.25.<N>`` stands for (N its 128 bits as a decimal integer, PS3.5 B.2):
    how an annotation made through the API is exported to SR (schema.sql, version 6)."""
    prefix, _, number = tracking_uid.partition("2.25.")
    if prefix or not number.isdigit() or len(number) > 39 or (number != "0" and number.startswith("0")):
        return None
    value = int(number)
    return uuid.UUID(int=value) if value < 2**128 else None


async def known_tracking_uids(conn: asyncpg.Connection, tracking_uids: list[str]) -> set[str]:
    """Those of ``tracking_uids`` that name an annotation already here: as its tracking_uid, or as the
    ``2.25.<id>`` it is exported under."""
    ids = {tracking_uid: exported_id(tracking_uid) for tracking_uid in tracking_uids}
    rows = await conn.fetch(
        "SELECT tracking_uid, id FROM radiology_annotation "
        "WHERE tracking_uid = ANY($1::text[]) OR id = ANY($2::uuid[])",
        tracking_uids,
        [i for i in ids.values() if i is not None],
    )
    found_ids = {row["id"] for row in rows}
    return {row["tracking_uid"] for row in rows if row["tracking_uid"]} | {
        uid for uid, i in ids.items() if i is not None and i in found_ids
    }


@dataclass(frozen=True)
class Imported:
    """An annotation drawn by a measurement group of a Structured Report."""

    sop_instance_uid: str
    shape: Shape
    value: float | None
    unit: str | None
    tracking_uid: str | None


async def insert_imported(
    conn: asyncpg.Connection, source_sop_instance_uid: str, imported: list[Imported], created_by: str
) -> None:
    """Add the annotations of an SR (lock their images with ``lock_images`` first, in the same transaction); one
    whose tracking UID another transaction added meanwhile is left out."""
    await conn.executemany(
        "INSERT INTO radiology_annotation (id, sop_instance_uid, frame_number, type, coordinates, label, color, "
        "value, unit, source_sop_instance_uid, tracking_uid, created_by) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (tracking_uid) DO NOTHING",
        [
            (
                uuid.uuid4(),
                a.sop_instance_uid,
                a.shape.frame_number,
                a.shape.type,
                orjson.dumps(a.shape.coordinates).decode(),
                a.shape.label,
                a.shape.color,
                a.value,
                a.unit,
                source_sop_instance_uid,
                a.tracking_uid,
                created_by,
            )
            for a in imported
        ],
    )


async def delete_imported_from(conn: asyncpg.Connection, source_sop_instance_uids: list[str]) -> int:
    """Remove the annotations imported from these SRs (superseded by a later one); how many there were."""
    status = await conn.execute(
        "DELETE FROM radiology_annotation WHERE source_sop_instance_uid = ANY($1::text[])", source_sop_instance_uids
    )
    return int(status.split()[-1])
