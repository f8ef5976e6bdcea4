"""The archive's resources (settings, database pools, file storage, worker threads and processes, audit writer,
location cache), built by ``open_archive(settings)`` for whoever serves the archive: the HTTP app's lifespan,
``dicomweb import``, and later the DIMSE server. Resources only: what is done with them is in ``services/``, and
nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .config import Settings
from .db.audit import AuditWriter
from .db.embedded import EmbeddedPostgres
from .db.index import KnownSeries
from .db.outage import DatabaseMonitor
from .db.pool import create_pool, ensure_schema
from .lifetime import end_with
from .services.group_commit import GroupCommit
from .services.retrieve import Locations
from .storage import Storage, open_storage

if TYPE_CHECKING:
    from .services.on_store import OnStore
    from .services.store import StoreBatch, StoreResult

log = logging.getLogger("dicomweb")

T = TypeVar("T")

# Worker threads for file I/O and parsing. Most of their time is spent waiting on fsync, so there are more of them
# than cores: a store waiting for a free thread while it holds row locks would stall every store into its series.
WORKER_THREADS = 32
# Processes for transcoding and decoding (per server worker process); started on first use.
CPU_PROCESSES = 2
# Connections for the audit trail's writes (per server worker process): one batch is written at a time; a batch that
# fails is written again event by event on the same connection.
AUDIT_CONNECTIONS = 2


@dataclass(frozen=True)
class Archive:
    """The archive's resources, as ``open_archive`` built them; what they do is in ``dicomweb/services/``."""

    settings: Settings
    pool: asyncpg.Pool
    storage: Storage
    # Processes for CPU-heavy pixel work (transcoding, decoding), so it neither holds the GIL of the process that
    # serves requests nor stalls its event loop.
    cpu: Executor
    # Writes the audit events of requests that answer together in one commit (dicomweb/audit.py).
    audit: AuditWriter
    # Where recently read instances are (services/retrieve.py).
    locations: Locations = field(compare=False, repr=False)
    # The store batches of concurrent requests, committed together (services/store.py).
    stores: GroupCommit[StoreBatch, list[StoreResult]] = field(default_factory=GroupCommit, compare=False, repr=False)
    # The series stored into lately, so that a store into one costs no query for it (db/index.py).
    known_series: KnownSeries = field(default_factory=KnownSeries, compare=False, repr=False)
    # What the product makes of instances as they are stored (services/on_store.py): every transport runs it.
    on_store: OnStore | None = None

    async def in_process(self, function: Callable[..., T], *args: Any) -> T:
        """Run a picklable top-level function in the CPU process pool."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, function, *args)


@asynccontextmanager
async def open_archive(
    settings: Settings, schema_checked: bool = False, on_store: OnStore | None = None
) -> AsyncIterator[Archive]:
    """Build the archive's resources, and tear them down in the reverse order when the block ends (also when
    building one of them fails). ``schema_checked``: a supervisor has applied or checked the schema already
    (``db.pool.check_database``), so the archive opens without reaching the database, and a worker that starts while
    it is unreachable answers 503 until it returns instead of failing its start (which stops uvicorn's supervisor).
    ``on_store``: what the product makes of instances as they are stored, whichever transport stores them."""
    async with AsyncExitStack() as stack:
        # "spawn": a forked child would inherit the parent's threads' locks in whatever state they were.
        cpu = ProcessPoolExecutor(
            max_workers=CPU_PROCESSES,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=end_with,
            initargs=(os.getpid(),),
        )
        stack.callback(cpu.shutdown, wait=True, cancel_futures=True)
        executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="dicomweb-io")
        stack.callback(executor.shutdown, wait=False)  # before the wait for the processes, as a stop always did
        asyncio.get_running_loop().set_default_executor(executor)
        url = settings.database_url
        if not url:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await asyncio.to_thread(embedded.start)
            stack.push_async_callback(asyncio.to_thread, embedded.stop)
        storage = open_storage(settings)
        await asyncio.to_thread(storage.prepare)
        pool = await create_pool(url, settings.db_pool_size, settings.db_timeout_seconds)
        stack.push_async_callback(pool.close)
        if not schema_checked:
            async with pool.acquire() as conn:
                await ensure_schema(conn)
        # The audit insert's plan never depends on its values: planned once, not for every batch (about 0.1 ms of
        # PostgreSQL's CPU each time, which every audited request waits for).
        audit_pool = await create_pool(url, AUDIT_CONNECTIONS, settings.db_timeout_seconds, custom_plans=False)
        stack.push_async_callback(audit_pool.close)
        audit = AuditWriter(audit_pool)
        # Logs an outage once, and renews the pools and writes the kept audit events when it ends; the embedded
        # PostgreSQL's own watchdog (db/embedded.py) starts it again if it died.
        monitor = DatabaseMonitor(url, [pool, audit_pool], audit.write_kept)
        watching = asyncio.create_task(monitor.run(), name="dicomweb-database-monitor")
        stack.push_async_callback(_cancel, watching)
        log.info("archive ready: %s", storage.describe())
        yield Archive(settings, pool, storage, cpu, audit, Locations(), on_store=on_store)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
