"""Report templates (soft-deleted: a deleted template keeps its row, so reports made from it still name it)."""

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
    is_active: bool | None = None


async def search(conn: asyncpg.Connection, filters: Filters) -> list[dict[str, Any]]:
    """The templates that match, deleted ones never, by name."""
    clauses, args = ["deleted_at IS NULL"], []
    for column in ("modality", "body_part", "is_active"):
        value = getattr(filters, column)
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM radiology_report_template WHERE {' AND '.join(clauses)} ORDER BY name, id", *args
    )
    return [dict(row) for row in rows]


async def get(conn: asyncpg.Connection, template_id: uuid.UUID) -> dict[str, Any] | None:
    """A template that has not been deleted."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM radiology_report_template WHERE id = $1 AND deleted_at IS NULL", template_id
    )
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
    """Set the given columns (of UPDATABLE) of a template that has not been deleted; None if there is none."""
    columns = [c for c in UPDATABLE if c in changes]
    if not columns:
        return await get(conn, template_id)
    assignments = ", ".join(f"{c} = ${n}" for n, c in enumerate(columns, start=2))
    row = await conn.fetchrow(
        f"UPDATE radiology_report_template SET {assignments}, updated_at = now() "
        f"WHERE id = $1 AND deleted_at IS NULL RETURNING {_COLUMNS}",
        template_id,
        *(changes[c] for c in columns),
    )
    return dict(row) if row else None


async def soft_delete(conn: asyncpg.Connection, template_id: uuid.UUID) -> bool:
    """Mark a template deleted (and inactive); False if there is none or it is deleted already."""
    status = await conn.execute(
        "UPDATE radiology_report_template SET deleted_at = now(), is_active = false, updated_at = now() "
        "WHERE id = $1 AND deleted_at IS NULL",
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
