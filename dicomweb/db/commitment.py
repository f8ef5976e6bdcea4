"""The storage commitment requests (``storage_commitment``): accepted, claimed by the process that sends their report
(a lease: ``FOR UPDATE SKIP LOCKED`` picks rows no other process is taking at that moment, and the lease keeps them
from the others until it ends), then reported, tried again later, or abandoned; the queries of
``dimse/commitment_reports.py``."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from ..dimse.commitment import Reference

State = Literal["pending", "reported", "abandoned"]

_REQUEST = "pk, transaction_uid, calling_ae_title, referenced_sop_sequence, attempts"
_LISTED = (
    "pk, transaction_uid, calling_ae_title, received_at, state, attempts, next_attempt_at, claimed_by, lease_until, "
    "last_error, event_type_id, failed_instances, reported_at"
)


@dataclass(frozen=True)
class CommitmentRequest:
    """An accepted request whose report is to be sent: its row, the Transaction UID, who asked, for which instances,
    and how many attempts have begun (this one included)."""

    pk: int
    transaction_uid: str
    calling_ae_title: str
    references: list[Reference]
    attempts: int


def _request(row: asyncpg.Record) -> CommitmentRequest:
    items = orjson.loads(row["referenced_sop_sequence"])
    references = [Reference(i["ReferencedSOPClassUID"], i["ReferencedSOPInstanceUID"]) for i in items]
    return CommitmentRequest(row["pk"], row["transaction_uid"], row["calling_ae_title"], references, row["attempts"])


async def accept(
    pool: asyncpg.Pool,
    transaction_uid: str,
    calling_ae_title: str,
    references: list[Reference],
    holder: str,
    lease: int,
) -> CommitmentRequest:
    """Record a request, held by ``holder`` for ``lease`` seconds (its first attempt, by the process that accepted
    it); committed when this returns."""
    items = [
        {"ReferencedSOPClassUID": r.sop_class_uid, "ReferencedSOPInstanceUID": r.sop_instance_uid} for r in references
    ]
    row = await pool.fetchrow(
        f"""
        INSERT INTO storage_commitment (transaction_uid, calling_ae_title, referenced_sop_sequence, attempts,
                                        claimed_by, lease_until)
        VALUES ($1, $2, $3::jsonb, 1, $4, now() + make_interval(secs => $5))
        RETURNING {_REQUEST}""",
        transaction_uid,
        calling_ae_title,
        orjson.dumps(items).decode(),
        holder,
        lease,
    )
    assert row is not None
    return _request(row)


async def claim_due(pool: asyncpg.Pool, holder: str, lease: int, limit: int) -> list[CommitmentRequest]:
    """Up to ``limit`` pending requests due for an attempt that no process holds (its lease ended, or it released
    them), now held by ``holder`` for ``lease`` seconds, oldest due first."""
    rows = await pool.fetch(
        f"""
        UPDATE storage_commitment
           SET claimed_by = $1, lease_until = now() + make_interval(secs => $2), attempts = attempts + 1
         WHERE pk IN (SELECT pk FROM storage_commitment
                       WHERE state = 'pending' AND next_attempt_at <= now()
                         AND (lease_until IS NULL OR lease_until < now())
                       ORDER BY next_attempt_at
                       LIMIT $3
                         FOR UPDATE SKIP LOCKED)
        RETURNING {_REQUEST}""",
        holder,
        lease,
        limit,
    )
    return [_request(row) for row in rows]


async def renew(pool: asyncpg.Pool, pk: int, holder: str, lease: int) -> bool:
    """Hold the request ``lease`` seconds more; False when ``holder`` no longer holds it (another process took it
    over after the lease ended, or it was reported)."""
    status: str = await pool.execute(
        "UPDATE storage_commitment SET lease_until = now() + make_interval(secs => $3) "
        "WHERE pk = $1 AND claimed_by = $2 AND state = 'pending'",
        pk,
        holder,
        lease,
    )
    return status == "UPDATE 1"


async def reported(pool: asyncpg.Pool, pk: int, event_type_id: int, failed_instances: int) -> None:
    """The report went out and the requester answered it."""
    await pool.execute(
        """
        UPDATE storage_commitment
           SET state = 'reported', event_type_id = $2, failed_instances = $3, reported_at = now(),
               claimed_by = NULL, lease_until = NULL, last_error = NULL
         WHERE pk = $1""",
        pk,
        event_type_id,
        failed_instances,
    )


async def not_sent(
    pool: asyncpg.Pool, pk: int, holder: str, retry: float, retry_hours: int, error: str
) -> State | None:
    """The attempt sent nothing: released, to be tried again in ``retry`` seconds (at the latest when the
    ``retry_hours`` after its arrival end), or abandoned when they have ended. None when ``holder`` no longer held
    it."""
    state: State | None = await pool.fetchval(
        """
        UPDATE storage_commitment
           SET state = CASE WHEN now() >= received_at + make_interval(hours => $4) THEN 'abandoned' ELSE 'pending' END,
               next_attempt_at = least(now() + make_interval(secs => $3), received_at + make_interval(hours => $4)),
               claimed_by = NULL, lease_until = NULL, last_error = $5
         WHERE pk = $1 AND claimed_by = $2 AND state = 'pending'
        RETURNING state""",
        pk,
        holder,
        retry,
        retry_hours,
        error,
    )
    return state


async def purge(pool: asyncpg.Pool, retention: datetime.timedelta) -> int:
    """Remove the reported and abandoned requests received more than ``retention`` ago; how many."""
    status: str = await pool.execute(
        "DELETE FROM storage_commitment WHERE state <> 'pending' AND received_at < now() - $1::interval", retention
    )
    return int(status.split()[-1])


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    """The requests kept, by state (for /metrics)."""
    rows = await conn.fetch("SELECT state, count(*) FROM storage_commitment GROUP BY state")
    return {row[0]: int(row[1]) for row in rows}


async def search(
    conn: asyncpg.Connection, state: State | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the requests, newest first (only those in ``state`` if given), each with its number of instances
    instead of their list; and the total."""
    where = " WHERE state = $1" if state else ""
    arguments = [state] if state else []
    total = await conn.fetchval("SELECT count(*) FROM storage_commitment" + where, *arguments)
    n = len(arguments)
    rows = await conn.fetch(
        f"SELECT {_LISTED}, jsonb_array_length(referenced_sop_sequence) AS instances FROM storage_commitment"
        f"{where} ORDER BY received_at DESC, pk DESC LIMIT ${n + 1} OFFSET ${n + 2}",
        *arguments,
        limit,
        offset,
    )
    return [dict(row) for row in rows], int(total)
