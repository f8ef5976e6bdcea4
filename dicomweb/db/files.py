"""What the index says about the stored files, for reconciling it with the disk (``dicomweb/reconcile.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from . import outage

TRANSACTION_POLL_SECONDS = 0.1  # between looks at the transactions a reconciliation waits for


@dataclass(frozen=True)
class StoredFile:
    """An indexed instance's file: where the row says it is, its size and SHA-256, and the instance's UIDs."""

    file_path: str
    file_size: int
    file_sha256: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


async def file_paths(conn: asyncpg.Connection) -> set[str]:
    """Every file path the committed rows name."""
    return {row[0] for row in await conn.fetch("SELECT file_path FROM instance")}


async def file_contents(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Every file path the committed rows name, with the size and SHA-256 its row records."""
    rows = await conn.fetch("SELECT file_path, file_size, file_sha256 FROM instance")
    return {row[0]: (row[1], row[2]) for row in rows}


async def stored_files(conn: asyncpg.Connection, paths: Iterable[str]) -> dict[str, StoredFile]:
    """The committed rows that name these paths now (a row deleted meanwhile is left out), with their UIDs."""
    rows = await conn.fetch(
        """
        SELECT i.file_path, i.file_size, i.file_sha256, st.study_instance_uid, s.series_instance_uid,
               i.sop_instance_uid
        FROM instance i JOIN series s ON s.pk = i.series_pk JOIN study st ON st.pk = s.study_pk
        WHERE i.file_path = ANY($1::text[])
        """,
        list(paths),
    )
    return {row[0]: StoredFile(*row) for row in rows}


# Every transaction that has written something holds an exclusive lock on its own transaction id until it has ended
# (committed or rolled back). pg_locks shows them to every user. (Not pg_current_snapshot()'s in-progress list: it
# leaves out transactions whose id is at or past the snapshot's xmax, the most recent writers.)
WRITING = """
SELECT array_agg(l.transactionid::text) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted AND a.datname = current_database()
  AND l.pid <> pg_backend_pid()
"""
STILL_WRITING = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND transactionid::text = ANY($1::text[])
"""


OTHER_ARCHIVE_CONNECTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()
"""


async def other_archive_connections(conn: asyncpg.Connection) -> int:
    """How many connections of other archive processes (replicas, their workers, a ``dicomweb import``) this
    database has now (``outage.APPLICATION_NAME``). Each serving worker keeps one open while the database is up (its
    outage monitor's), so none means that no other process can be between placing a file and committing its row."""
    return int(await conn.fetchval(OTHER_ARCHIVE_CONNECTIONS, outage.APPLICATION_NAME))


async def wait_for_transactions(conn: asyncpg.Connection, timeout: float) -> int:
    """Wait until every transaction of this database that has written something and is in progress now has ended;
    how many are still in progress after ``timeout`` seconds (0: all ended).

    A file placed by a store whose transaction has begun belongs to one of these: once they have ended, every such
    file is either named by a committed row or was removed after the rollback (or its process is gone). A store
    places its files a few milliseconds before its transaction begins: ``reconcile.py`` says why that is safe."""
    xids = await conn.fetchval(WRITING)
    deadline = time.monotonic() + timeout
    pending = len(xids or [])
    while pending:
        pending = await conn.fetchval(STILL_WRITING, xids)
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(TRANSACTION_POLL_SECONDS)
    return int(pending)
