"""Radiology reports and their versions.

Every write bumps the report's ``version`` and copies the new state into ``radiology_report_version`` in the same
transaction, so the history is complete and the version a writer read is a reliable precondition.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

# The columns a version row copies from the report.
_CONTENT = ("status", "findings", "impression", "recommendations")
_VERSION_COLUMNS = "version, action, changed_by, changed_at, status, findings, impression, recommendations"


async def for_study(conn: asyncpg.Connection, study_id: uuid.UUID) -> list[dict[str, Any]]:
    """The study's reports (addenda included), oldest first."""
    rows = await conn.fetch("SELECT * FROM radiology_report WHERE study_id = $1 ORDER BY created_at, id", study_id)
    return [dict(row) for row in rows]


async def get(conn: asyncpg.Connection, report_id: uuid.UUID, lock: bool = False) -> dict[str, Any] | None:
    """A report; ``lock`` takes the lock its update takes (FOR NO KEY UPDATE, which lets addenda reference it)."""
    row = await conn.fetchrow(
        "SELECT * FROM radiology_report WHERE id = $1" + (" FOR NO KEY UPDATE" if lock else ""), report_id
    )
    return dict(row) if row else None


async def addenda(conn: asyncpg.Connection, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """The addenda of a report, oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM radiology_report WHERE parent_report_id = $1 ORDER BY created_at, id", report_id
    )
    return [dict(row) for row in rows]


async def versions(conn: asyncpg.Connection, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every state the report has had, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_VERSION_COLUMNS} FROM radiology_report_version WHERE report_id = $1 ORDER BY version", report_id
    )
    return [dict(row) for row in rows]


async def _record(conn: asyncpg.Connection, report: dict[str, Any], action: str, changed_by: str) -> None:
    """Copy the report's current state into its history; the caller runs this in the writing transaction."""
    await conn.execute(
        "INSERT INTO radiology_report_version (report_id, version, action, changed_by, changed_at, status, "
        "findings, impression, recommendations) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        report["id"],
        report["version"],
        action,
        changed_by,
        report["updated_at"],
        *(report[c] for c in _CONTENT),
    )


async def insert(conn: asyncpg.Connection, values: dict[str, Any], author: str) -> dict[str, Any]:
    """A new report at version 1, recorded as "created"; run it in a transaction."""
    row = await conn.fetchrow(
        """
        INSERT INTO radiology_report (id, study_id, parent_report_id, report_type, status, findings, impression,
                                      recommendations, template_id, author)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *""",
        uuid.uuid4(),
        values["study_id"],
        values.get("parent_report_id"),
        values["report_type"],
        values["status"],
        values["findings"],
        values["impression"],
        values["recommendations"],
        values.get("template_id"),
        author,
    )
    report = dict(row)
    await _record(conn, report, "created", author)
    return report


async def update(
    conn: asyncpg.Connection, report_id: uuid.UUID, version: int, changes: dict[str, Any], changed_by: str
) -> dict[str, Any] | None:
    """Apply ``changes`` (status and text columns) if the report is still at ``version`` and not final, as the next
    version, recorded as "updated"; None when another writer came first. Run it in a transaction.

    The version test is in the UPDATE itself: of two writers that read the same version, the second waits for the
    first's row lock, then finds the version moved on and changes nothing (READ COMMITTED re-checks the row).
    """
    columns = [c for c in _CONTENT if c in changes]
    assignments = "".join(f", {c} = ${n}" for n, c in enumerate(columns, start=3))
    row = await conn.fetchrow(
        f"UPDATE radiology_report SET version = version + 1, updated_at = now(){assignments} "
        "WHERE id = $1 AND version = $2 AND status <> 'final' RETURNING *",
        report_id,
        version,
        *(changes[c] for c in columns),
    )
    if row is None:
        return None
    report = dict(row)
    await _record(conn, report, "updated", changed_by)
    return report


async def verify(conn: asyncpg.Connection, report_id: uuid.UUID, verified_by: str) -> dict[str, Any]:
    """Sign the report: final, by whom and when, the next version, recorded as "verified". The caller holds the
    report's row lock and has checked that it may be signed. A signed report (not an addendum) is a final one."""
    row = await conn.fetchrow(
        """
        UPDATE radiology_report
           SET status = 'final', verified_by = $2, verified_at = now(), version = version + 1, updated_at = now(),
               report_type = CASE WHEN report_type = 'addendum' THEN 'addendum' ELSE 'final' END
         WHERE id = $1 RETURNING *""",
        report_id,
        verified_by,
    )
    report = dict(row)
    await _record(conn, report, "verified", verified_by)
    return report
