"""The audit trail in PostgreSQL: write events (one by one, or batched by ``AuditWriter``), and search events for
GET /api/audit."""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

log = logging.getLogger("dicomweb")

# The whole batch is one statement (one round trip, committed on its own, no BEGIN/COMMIT): the events arrive as one
# JSON array. The patient is looked up from the study when the request did not name one.
INSERT = """
INSERT INTO audit_event (request_id, subject, roles, action, method, route, path, query, patient_id,
                         study_instance_uid, series_instance_uid, sop_instance_uid, status, client)
SELECT e.request_id, e.subject, e.roles, e.action, e.method, e.route, e.path, e.query,
       coalesce(e.patient_id, (SELECT p.patient_id FROM study st JOIN patient p ON p.pk = st.patient_pk
                               WHERE st.study_instance_uid = e.study_instance_uid)),
       e.study_instance_uid, e.series_instance_uid, e.sop_instance_uid, e.status, e.client
FROM jsonb_to_recordset($1::jsonb) AS e(
    request_id text, subject text, roles text[], action text, method text, route text, path text, query text,
    patient_id text, study_instance_uid text, series_instance_uid text, sop_instance_uid text, status integer,
    client text)"""


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


async def record_many(conn: asyncpg.Connection, events: list[Event]) -> None:
    """The events in one statement, so in one transaction and one round trip."""
    await conn.execute(INSERT, orjson.dumps(events).decode())


class AuditWriter:
    """Writes the events of the requests that answer at the same time together: one round trip and one commit for
    all of them, instead of one each. Each request still waits until its own event is committed (no unaudited
    access), and a batch that fails is retried event by event, so one bad event fails only its own request."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.pending: list[tuple[Event, asyncio.Future[None]]] = []
        self.writer: asyncio.Task[None] | None = None

    async def write(self, event: Event) -> None:
        """Return once ``event`` is committed; raise what writing it raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((event, future))
        if self.writer is None:
            self.writer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self.pending:  # what arrived while the last batch was written is the next batch
                batch, self.pending = self.pending, []
                await self._write(batch)
        finally:
            self.writer = None

    async def _write(self, batch: list[tuple[Event, asyncio.Future[None]]]) -> None:
        try:
            async with self.pool.acquire() as conn:
                await record_many(conn, [event for event, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                log.warning("audit batch of %d events failed (%s); writing them one by one", len(batch), exc)
                for one in batch:
                    await self._write([one])
                return
            _settle(batch, exc)
        else:
            _settle(batch, None)


def _settle(batch: list[tuple[Event, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, future in batch:
        if future.done():  # the request was cancelled (its client went away) while its event was written
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


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
