"""The database gone away: which errors say so, and a monitor that notices when it goes and when it is back.

While PostgreSQL is unreachable every request that needs it is answered 503 with ``Retry-After`` (``errors.py``
maps the errors ``unreachable`` recognises); nothing here retries a request. The pools reconnect by themselves on
the next ``acquire`` once the server is back (asyncpg drops a connection whose socket closed); the monitor logs the
outage once and its end once, renews the pools' connections and writes the audit events kept meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

log = logging.getLogger("dicomweb")

CONNECT_TIMEOUT = 10.0  # seconds a new connection may take before the database counts as unreachable
# Every connection of the archive's processes (server workers, their supervisor, `dicomweb import`, check, backup)
# names itself so: a reconciliation at start tells from pg_stat_activity whether another process that may be placing
# files right now (a replica, an import) is running (files.other_archive_connections).
APPLICATION_NAME = "dicomweb"
MONITOR_INTERVAL = 1.0  # seconds between the monitor's looks at the database

# Errors of a connection lost or refused (PostgreSQL error classes 08, 57P01-57P03, 53300), whatever the query. A
# protocol violation (08P01) is a bug, not an outage.
LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,  # 08003: the connection closed in the middle of an operation
    asyncpg.exceptions.ConnectionFailureError,  # 08006
    asyncpg.exceptions.ClientCannotConnectError,  # 08001
    asyncpg.exceptions.ConnectionRejectionError,  # 08004
    asyncpg.exceptions.TransactionResolutionUnknownError,  # 08007
    asyncpg.exceptions.AdminShutdownError,  # 57P01: the server is shutting down (pg_ctl stop)
    asyncpg.exceptions.CrashShutdownError,  # 57P02: another backend crashed, the server restarts
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: the database system is starting up / shutting down
    asyncpg.exceptions.TooManyConnectionsError,  # 53300: no connection slot free now
)


LOST_PROTOCOL_STATES = ('"failed" state', "not connected", "another operation (2) is in progress")


class DatabaseUnreachable(ConnectionError):
    """No new connection could be made to PostgreSQL (refused, no socket, timed out); the cause is chained."""


# The errors among which ``unreachable`` tells an outage from a fault of a query or of the code.
DATABASE_ERRORS = (
    DatabaseUnreachable,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is gone (for now), rather than that a query or the code is wrong."""
    if isinstance(exc, DatabaseUnreachable | TimeoutError) or isinstance(exc, LOST):
        return True  # TimeoutError: a statement that outlasted DICOMWEB_DB_TIMEOUT_SECONDS, a database that hangs
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The protocol's state of a lost connection, met before asyncpg has closed it: lost ("failed" state, not
        # connected), or still waiting for the end of the error a backend sends to its idle connection when it sees
        # its postmaster die ("cannot switch to state 12; another operation (2) is in progress", 2: the error).
        return any(sign in str(exc) for sign in LOST_PROTOCOL_STATES)
    # asyncpg's own word for a connection whose socket closed under it ("connection is closed", "cannot call
    # Transaction.__aexit__(): the underlying connection is closed"); its other InterfaceErrors are misuse.
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect`` for the pools: an OSError or timeout while connecting becomes ``DatabaseUnreachable``,
    so that it is told apart from an OSError of the file storage."""
    kwargs.setdefault("timeout", CONNECT_TIMEOUT)
    kwargs["server_settings"] = {"application_name": APPLICATION_NAME, **(kwargs.get("server_settings") or {})}
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL: {exc}") from exc


class DatabaseMonitor:
    """Looks at the database every ``MONITOR_INTERVAL`` over a connection of its own (a busy pool is no sign of an
    outage), so that an outage is logged once when it begins and once when it ends, not once per request. On the
    database's return the pools' connections are renewed (one opened before may lead to a server that is gone, and
    a TCP connection to a vanished host only fails after minutes) and ``on_return`` runs."""

    def __init__(self, url: str, pools: Sequence[asyncpg.Pool], on_return: Callable[[], Awaitable[None]]) -> None:
        self.url = url
        self.pools = pools
        self.on_return = on_return
        self.down_since: float | None = None
        self._conn: asyncpg.Connection | None = None

    async def run(self) -> None:
        """Watch until cancelled."""
        try:
            while True:
                await asyncio.sleep(MONITOR_INTERVAL)
                try:
                    await self.check()
                except Exception:  # the renewal after the return failed: the next look tries again
                    log.exception("the database monitor failed")
        finally:
            if self._conn is not None:
                self._conn.terminate()

    async def check(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self.url)
                await self._conn.fetchval("SELECT 1")
        except Exception as exc:
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("the database is unreachable (%s): requests that need it get 503 until it is back", exc)
            return
        if self.down_since is not None:
            for pool in self.pools:
                await pool.expire_connections()
            log.info("the database is reachable again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
            await self.on_return()
