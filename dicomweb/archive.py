"""The archive's resources (settings, database pools, file storage, worker threads and processes, audit writer),
built by ``open_archive(settings)`` for whoever serves it: the HTTP app's lifespan and ``dicomweb import`` alike.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import shutil
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import orjson
from starlette.requests import Request

from .config import Settings
from .db import index, retrieve
from .db.audit import AuditWriter
from .db.embedded import EmbeddedPostgres
from .db.outage import DatabaseMonitor
from .db.pool import create_pool, ensure_schema
from .db.retrieve import StoredFile
from .errors import DicomwebError, NotFound
from .storage import FileStorage

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

KEPT_LOCATIONS = 4096  # instances whose locations are kept in memory (a few hundred bytes each, more for
# multi-frame instances: one pair of numbers per fragment)
# The first instance of a series asked for brings the locations of the whole series when it has at most this many
# instances: one query instead of one per instance for a viewer that reads them all.
SERIES_LOCATIONS = 1000


@dataclass(frozen=True)
class Archive:
    settings: Settings
    pool: asyncpg.Pool
    storage: FileStorage
    # Processes for CPU-heavy pixel work (transcoding, decoding), so it neither holds the GIL of the process that
    # serves requests nor stalls its event loop.
    cpu: Executor
    # Writes the audit events of requests that answer together in one commit (dicomweb/audit.py).
    audit: AuditWriter
    # Where recently read instances are (their file and frame index): a viewer asks for every frame of a series one
    # request at a time. Stored files never change (every store has a new name), so an entry is right
    # as long as its file exists; ``locate(fresh=True)`` asks the database again when it does not.
    locations: OrderedDict[tuple[str, str, str], tuple[StoredFile, list[Any] | None]] = field(
        default_factory=OrderedDict, compare=False, repr=False
    )

    async def locate(
        self, study: str, series: str, sop: str, fresh: bool = False
    ) -> tuple[StoredFile, list[Any] | None]:
        """Where one stored instance is: its file and frame index (None when the store recorded none); 404 when it
        is not stored. Kept in memory for the next request (``fresh`` asks the database again)."""
        key = (study, series, sop)
        if not fresh and (found := self.locations.get(key)) is not None:
            self.locations.move_to_end(key)
            return found
        whole_series = 0 if fresh else SERIES_LOCATIONS  # a fresh look is for an instance replaced or deleted
        async with self.pool.acquire() as conn:
            rows = await retrieve.instance_frames(conn, study, series, sop, whole_series)
        if not rows:
            self.locations.pop(key, None)
            raise not_stored(study, series, sop)
        located = {uid: (stored, orjson.loads(frames) if frames is not None else None)
                   for uid, (stored, frames) in rows.items()}  # fmt: skip
        for uid, location in located.items():
            if uid != sop:
                self._keep((study, series, uid), location)
        self._keep(key, located[sop])  # last: the most recently used
        return located[sop]

    def _keep(self, key: tuple[str, str, str], location: tuple[StoredFile, list[Any] | None]) -> None:
        self.locations[key] = location
        self.locations.move_to_end(key)
        if len(self.locations) > KEPT_LOCATIONS:
            self.locations.popitem(last=False)

    async def stored_files(self, study: str, series: str | None, sop: str | None) -> list[StoredFile]:
        """The stored files in scope, in series and instance order; 404 naming what is not stored."""
        async with self.pool.acquire() as conn:
            files = await retrieve.files(conn, study, series, sop)
        if not files:
            raise not_stored(study, series, sop)
        return files

    async def check_files(self, files: list[StoredFile]) -> None:
        """A stored file gone missing is a server fault (500), found before a response starts, and logged loudly."""
        paths = [self.storage.absolute(f.file_path) for f in files]
        missing = await asyncio.to_thread(lambda: [p for p in paths if not p.is_file()])
        if missing:
            log.error("stored files missing: %s", ", ".join(map(str, missing[:20])))
            raise DicomwebError(f"{len(missing)} stored files are missing from the archive's storage")

    async def remove_files(self, study: str, paths: list[str]) -> None:
        """After the commit of a deletion: unlink the instances' files and the study's cached thumbnails."""
        await self.storage.remove(paths)
        # Cached thumbnails are keyed by the stored file, so stale ones are never served; remove the study's anyway.
        await asyncio.to_thread(shutil.rmtree, self.storage.root / "cache" / "thumbnails" / study, True)

    async def read_located(
        self, study: str, series: str, sop: str, read: Callable[[StoredFile, list[Any] | None], Awaitable[T]]
    ) -> tuple[StoredFile, T]:
        """``read`` the instance where it is known to be. Its file gone means it was replaced or deleted since: ask
        the database where it is now and read there (404 if it is no more); a file still missing is the 500 of
        ``check_files``."""
        stored, index = await self.locate(study, series, sop)
        try:
            return stored, await read(stored, index)
        except FileNotFoundError:
            stored, index = await self.locate(study, series, sop, fresh=True)
        try:
            return stored, await read(stored, index)
        except FileNotFoundError:
            await self.check_files([stored])  # logs and raises the 500
            raise

    async def in_process(self, function: Callable[..., T], *args: Any) -> T:
        """Run a picklable top-level function in the CPU process pool."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, function, *args)


@asynccontextmanager
async def open_archive(settings: Settings) -> AsyncIterator[Archive]:
    """Build the archive's resources, and tear them down in the reverse order when the block ends (also when
    building one of them fails)."""
    async with AsyncExitStack() as stack:
        executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="dicomweb-io")
        stack.callback(executor.shutdown, wait=False)
        asyncio.get_running_loop().set_default_executor(executor)
        # "spawn": a forked child would inherit the parent's threads' locks in whatever state they were.
        cpu = ProcessPoolExecutor(max_workers=CPU_PROCESSES, mp_context=multiprocessing.get_context("spawn"))
        stack.callback(cpu.shutdown, wait=True, cancel_futures=True)
        url = settings.database_url
        if not url:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await asyncio.to_thread(embedded.start)
            stack.push_async_callback(asyncio.to_thread, embedded.stop)
        storage = FileStorage(settings.data_dir)
        await asyncio.to_thread(storage.prepare)
        pool = await create_pool(url, settings.db_pool_size, settings.db_timeout_seconds)
        stack.push_async_callback(pool.close)
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
        log.info("archive ready: files in %s", storage.root)
        yield Archive(settings, pool, storage, cpu, audit)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def delete_rows(conn: asyncpg.Connection, study: str, series: str | None, sop: str | None) -> list[str]:
    """Delete the rows of the instances in scope (aggregates kept exact); their file paths, for ``remove_files``
    once the transaction has committed. A crash in between leaves files no row names, never a row without its file.
    """
    instances = await retrieve.instance_keys(conn, study, series, sop)
    for pk, _ in instances:
        await index.delete_instance(conn, pk)
    return [path for _, path in instances]


def not_stored(study: str, series: str | None, sop: str | None) -> NotFound:
    if sop is not None:
        return NotFound(f"instance {sop} of series {series} in study {study} is not stored")
    if series is not None:
        return NotFound(f"series {series} of study {study} is not stored")
    return NotFound(f"study {study} is not stored")


def archive_of(request: Request) -> Archive:
    archive: Archive = request.state.archive
    return archive
