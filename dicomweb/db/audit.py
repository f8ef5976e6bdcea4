"""The audit trail in PostgreSQL: write events (one by one, or batched by ``AuditWriter``), and search events for
GET /api/audit."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson

from .outage import unreachable

log = logging.getLogger("dicomweb")

MAX_KEPT_EVENTS = 10_000  # audit events kept in memory while the database is gone (1-2 KB each)
KEPT_CHUNK = 1000  # kept events written per statement once it is back

# The whole batch is one statement (one round trip, committed on its own, no BEGIN/COMMIT): the events arrive as one
# JSON array. The patient is looked up from the study when the request did not name one.
INSERT = """
INSERT INTO audit_event (occurred_at, request_id, subject, roles, action, method, route, path, query, patient_id,
                         study_instance_uid, series_instance_uid, sop_instance_uid, status, client)
SELECT coalesce(e.occurred_at, now()), e.request_id, e.subject, e.roles, e.action, e.method, e.route, e.path, e.query,
       coalesce(e.patient_id, (SELECT p.patient_id FROM study st JOIN patient p ON p.pk = st.patient_pk
                               WHERE st.study_instance_uid = e.study_instance_uid)),
       e.study_instance_uid, e.series_instance_uid, e.sop_instance_uid, e.status, e.client
FROM jsonb_to_recordset($1::jsonb) AS e(
    request_id text, subject text, roles text[], action text, method text, route text, path text, query text,
    patient_id text, study_instance_uid text, series_instance_uid text, sop_instance_uid text, status integer,
    client text, occurred_at timestamptz)"""


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
    occurred_at: datetime.datetime | None = None  # None: when it is written; set for an event kept during an outage


async def record_many(conn: asyncpg.Connection, events: list[Event]) -> None:
    """The events in one statement, so in one transaction and one round trip."""
    await conn.execute(INSERT, orjson.dumps(events).decode())


class AuditWriter:
    """Writes the events of the requests that answer at the same time together: one round trip and one commit for
    all of them, instead of one each. Each request still waits until its own event is committed (no unaudited
    access), and a batch that fails is retried event by event, so one bad event fails only its own request.

    While the database is gone a batch fails as a whole with an error ``db.outage.unreachable`` recognises (no
    retry event by event); each request learns so (a read is then answered 503, ``dicomweb/audit.py``) and hands
    its event to ``keep``. Kept events wait in memory, stamped with their time, and are written after the next batch
    that succeeds, or when the database monitor sees the database back (``write_kept``). At most ``MAX_KEPT_EVENTS``
    are kept: beyond that the oldest are dropped and counted in the log, and a process that ends during the outage
    loses the ones it kept. The writer task ends with each batch and is started again by the next event, so an
    outage never leaves it dead.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.pending: list[tuple[Event, asyncio.Future[None]]] = []
        self.writer: asyncio.Task[None] | None = None
        self.kept: deque[Event] = deque()
        self.dropped = 0

    async def write(self, event: Event) -> None:
        """Return once ``event`` is committed; raise what writing it raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((event, future))
        if self.writer is None:
            self.writer = asyncio.create_task(self._drain())
        await future

    def keep(self, event: Event) -> None:
        """Keep an event that could not be written because the database is gone, to write it once it is back."""
        if len(self.kept) >= MAX_KEPT_EVENTS:
            self.kept.popleft()
            self.dropped += 1
            if self.dropped == 1:
                log.error("more than %d audit events wait for the database; dropping the oldest", MAX_KEPT_EVENTS)
        self.kept.append(replace(event, occurred_at=event.occurred_at or datetime.datetime.now(datetime.UTC)))

    async def write_kept(self) -> None:
        """Write the kept events, in chunks; those of a chunk the database refuses for another reason than being
        gone are written one by one, and an event that still fails is logged and dropped."""
        if not self.kept:
            return
        written = 0
        while self.kept:
            # Taken out before the first await, so that two callers never write the same event.
            chunk = [self.kept.popleft() for _ in range(min(len(self.kept), KEPT_CHUNK))]
            try:
                async with self.pool.acquire() as conn:
                    await record_many(conn, chunk)
                written += len(chunk)
                continue
            except Exception as exc:
                if unreachable(exc):
                    self.kept.extendleft(reversed(chunk))
                    return
            for i, event in enumerate(chunk):
                try:
                    async with self.pool.acquire() as conn:
                        await record_many(conn, [event])
                    written += 1
                except Exception as exc:
                    if unreachable(exc):
                        self.kept.extendleft(reversed(chunk[i:]))
                        return
                    log.error("audit event of request %s dropped: %s", event.request_id, exc)
        log.info("%d audit events kept while the database was gone are written", written)
        if self.dropped:
            log.error("%d audit events were dropped while the database was gone", self.dropped)
            self.dropped = 0

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
            if len(batch) > 1 and not unreachable(exc):
                log.warning("audit batch of %d events failed (%s); writing them one by one", len(batch), exc)
                for one in batch:
                    await self._write([one])
                return
            _settle(batch, exc)
        else:
            _settle(batch, None)
            if self.kept:  # the database is back
                await self.write_kept()


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
