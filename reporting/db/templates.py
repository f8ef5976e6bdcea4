"""Report templates. Deleting is soft: the template becomes inactive and keeps its row, so reports made from it still
name it and a PUT of isActive true restores it. ``deleted_at`` only records when it was deleted (cleared on restore);
what is listed and usable follows ``is_active`` alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

_COLUMNS = "id, name, modality, body_part, content, is_active, created_by, created_at, updated_at"
# The columns an update may set.
UPDATABLE = ("name", "modality", "body_part", "content", "is_active")


@dataclass(frozen=True)
class Filters:
    modality: str | None = None
    body_part: str | None = None
    is_active: bool = True


async def search(conn: asyncpg.Connection, filters: Filters) -> list[dict[str, Any]]:
    """The templates that match, by name."""
    clauses, args = ["is_active = $1"], [filters.is_active]
    for column in ("modality", "body_part"):
        value = getattr(filters, column)
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM radiology_report_template WHERE {' AND '.join(clauses)} ORDER BY name, id", *args
    )
    return [dict(row) for row in rows]


async def get(conn: asyncpg.Connection, template_id: uuid.UUID) -> dict[str, Any] | None:
    """A template, active or not (a deleted one too)."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM radiology_report_template WHERE id = $1", template_id)
    return dict(row) if row else None


async def insert(conn: asyncpg.Connection, values: dict[str, Any], created_by: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""
        INSERT INTO radiology_report_template (id, name, modality, body_part, content, is_active, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}""",
        uuid.uuid4(),
        values["name"],
        values.get("modality"),
        values.get("body_part"),
        values["content"],
        values["is_active"],
        created_by,
    )
    return dict(row)


async def update(conn: asyncpg.Connection, template_id: uuid.UUID, changes: dict[str, Any]) -> dict[str, Any] | None:
    """Set the given columns (of UPDATABLE) of a template; None if there is none. is_active true restores a deleted
    template."""
    columns = [c for c in UPDATABLE if c in changes]
    if not columns:
        return await get(conn, template_id)
    assignments = [f"{c} = ${n}" for n, c in enumerate(columns, start=2)]
    if changes.get("is_active"):
        assignments.append("deleted_at = NULL")
    row = await conn.fetchrow(
        f"UPDATE radiology_report_template SET {', '.join(assignments)}, updated_at = now() "
        f"WHERE id = $1 RETURNING {_COLUMNS}",
        template_id,
        *(changes[c] for c in columns),
    )
    return dict(row) if row else None


async def soft_delete(conn: asyncpg.Connection, template_id: uuid.UUID) -> bool:
    """Make a template inactive and record when it was deleted; False if there is none. Deleting it again changes
    nothing (not even updated_at)."""
    status = await conn.execute(
        "UPDATE radiology_report_template SET is_active = false, deleted_at = coalesce(deleted_at, now()), "
        "updated_at = CASE WHEN deleted_at IS NULL THEN now() ELSE updated_at END WHERE id = $1",
        template_id,
    )
    return bool(status == "UPDATE 1")


async def archive_study(conn: asyncpg.Connection, study_instance_uid: str) -> dict[str, Any] | None:
    """The archive's DICOM study attributes that templates may show, if the archive holds the study."""
    row = await conn.fetchrow(
        "SELECT study_date, study_description, referring_physician_name FROM study WHERE study_instance_uid = $1",
        study_instance_uid,
    )
    return dict(row) if row else None
