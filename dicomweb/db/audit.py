"""The audit trail in PostgreSQL: write one event, and search events for GET /api/audit."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import asyncpg

INSERT = """
INSERT INTO audit_event (request_id, subject, roles, action, method, route, path, query, patient_id,
                         study_instance_uid, series_instance_uid, sop_instance_uid, status, client)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
        coalesce($14, (SELECT p.patient_id FROM study st JOIN patient p ON p.pk = st.patient_pk
                        WHERE st.study_instance_uid = $9)),
        $9, $10, $11, $12, $13)"""


@dataclass(frozen=True)
class Event:
    """Who did what to which data, with what outcome."""

    request_id: str
    subject: str | None
    roles: list[str]
    action: str
    method: str
    route: str
    path: str
    query: str | None
    patient_id: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    status: int
    client: str | None


async def record(conn: asyncpg.Connection, event: Event) -> None:
    await conn.execute(
        INSERT,
        event.request_id, event.subject, event.roles, event.action, event.method, event.route, event.path,
        event.query, event.study_instance_uid, event.series_instance_uid, event.sop_instance_uid, event.status,
        event.client, event.patient_id,
    )  # fmt: skip


@dataclass(frozen=True)
class Filters:
    subject: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    action: str | None = None
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    limit: int = 100
    offset: int = 0


async def search(conn: asyncpg.Connection, filters: Filters) -> list[dict[str, Any]]:
    """Events matching every filter given, newest first."""
    rows = await conn.fetch(
        """
        SELECT occurred_at, request_id, subject, roles, action, method, route, path, query, patient_id,
               study_instance_uid, series_instance_uid, sop_instance_uid, status, client
        FROM audit_event
        WHERE ($1::text IS NULL OR subject = $1) AND ($2::text IS NULL OR patient_id = $2)
          AND ($3::text IS NULL OR study_instance_uid = $3) AND ($4::text IS NULL OR action = $4)
          AND ($5::timestamptz IS NULL OR occurred_at >= $5) AND ($6::timestamptz IS NULL OR occurred_at < $6)
        ORDER BY occurred_at DESC, pk DESC LIMIT $7 OFFSET $8""",
        filters.subject, filters.patient_id, filters.study_instance_uid, filters.action, filters.since,
        filters.until, filters.limit, filters.offset,
    )  # fmt: skip
    return [dict(row) for row in rows]
