"""Bulk import: store every DICOM file under some paths through the same path as STOW-RS (``services.store``).

Each file is read once, copied into the archive's temp folder (hashed on the way), validated and put in place durably
by a pool of processes (``store.prepare_here``), then indexed by this one, the files in flight together (group
commit). A file already stored with the same bytes counts as "already stored", so re-running an import stores nothing
twice. Files without the PS3.10 "DICM" prefix are skipped, not failed. While the database is gone (an embedded
PostgreSQL being restarted, an external one down), each file is tried again until it is back, for up to
DATABASE_WAIT_SECONDS: a night's migration outlives a restart of the database. Instances that the archive's on_store
hook reads (TID 1500 SRs, whose measurements become annotations on their images) are imported after all the others
(parsed a second time then), so that their images are stored first whatever order the files come in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tqdm import tqdm

from .archive import Archive
from .db.outage import unreachable
from .instance import InvalidInstance
from .lifetime import end_with
from .services import store
from .services.on_store import OnStore
from .storage import SpooledFile, Storage

log = logging.getLogger("dicomweb")

DATABASE_WAIT_SECONDS = 300  # how long an import waits for the database to come back before it stops
DATABASE_RETRY_SECONDS = 1.0  # between tries of a file while the database is gone
PARALLEL_FILES = 16  # files in flight: enough to keep the processes busy and to fill the group commits
IMPORT_PROCESSES = 2 * max(2, os.cpu_count() or 1)  # twice the cores: each also waits on its fsyncs
DICM_OFFSET = 128  # PS3.10 §7.1: 128-byte preamble, then "DICM"
# Who stored what an import stores, for what the archive makes of it (annotations from an SR): no token or AE title
# names a person here, and the files' own authors are theirs to say (an SR's observer context).
IMPORTED_BY = "dicomweb import"


class DatabaseGone(Exception):
    """The database stayed unreachable for DATABASE_WAIT_SECONDS; what was stored until then stays stored, and running
    the import again goes on where it stopped (files already stored count as such)."""


@dataclass
class ImportReport:
    stored: int = 0
    already_stored: int = 0
    skipped: int = 0
    bytes: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    database_gone_since: float | None = None  # monotonic time the database was found gone, while it is
    outages: int = 0  # times the database was found gone and the import waited for it
    # Files of instances the on_store hook read (SRs), imported again after all the others (``_import_paths``).
    held_back: list[Path] = field(default_factory=list)

    @property
    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.failures)


def walk(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for folder, _, names in sorted(os.walk(path)):
                for name in sorted(names):
                    yield Path(folder) / name
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(f"{path} does not exist")


async def import_paths(archive: Archive, paths: list[Path], progress: bool = True) -> ImportReport:
    # The files are copied, parsed and put in place by processes of their own: the parse is CPU work that threads of
    # one process would do one at a time, and this process has the commits to run.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(IMPORT_PROCESSES, spawn, initializer=end_with, initargs=(os.getpid(),)) as processes:
        return await _import_paths(archive, processes, paths, progress)


async def _import_paths(archive: Archive, processes: Executor, paths: list[Path], progress: bool) -> ImportReport:
    files = list(walk(paths))
    report = ImportReport()
    bar = tqdm(total=len(files), unit="file", disable=not progress, dynamic_ncols=True)
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for path in files:
        queue.put_nowait(path)

    async def worker() -> None:
        while not queue.empty():
            path = queue.get_nowait()
            await _import_waiting(archive, processes, path, report)
            bar.update(1)
            elapsed = bar.format_dict["elapsed"] or 1e-9
            bar.set_postfix(MBps=f"{report.bytes / elapsed / 1e6:.1f}", failed=len(report.failures), refresh=False)

    await asyncio.gather(*(worker() for _ in range(PARALLEL_FILES)))
    # What the archive's on_store hook reads (an SR's measurements) refers to other instances (its images), which may
    # be among these files: imported last, such files find them stored, whatever order they came in.
    for path in report.held_back:
        await _import_waiting(archive, processes, path, report, hold_back=False)
    bar.close()
    return report


async def _import_waiting(
    archive: Archive, processes: Executor, path: Path, report: ImportReport, hold_back: bool = True
) -> None:
    """``_import_one``, tried again while the database is unreachable (``_waiting``)."""
    await _waiting(partial(_import_one, archive, processes, path, report, hold_back), report)


async def _waiting(attempt: Callable[[], Awaitable[None]], report: ImportReport) -> None:
    """``attempt``, tried again while the database is unreachable; DatabaseGone once it has been so for
    DATABASE_WAIT_SECONDS. The outage is logged once when it is found and once when it ends."""
    while True:
        try:
            await attempt()
        except Exception as exc:
            if not unreachable(exc):
                raise
            now = time.monotonic()
            if report.database_gone_since is None:
                report.database_gone_since = now
                report.outages += 1
                log.warning("the database is unreachable (%s); waiting for it to come back", exc)
            elif now - report.database_gone_since > DATABASE_WAIT_SECONDS:
                raise DatabaseGone(f"the database has been unreachable for {DATABASE_WAIT_SECONDS} s: {exc}") from exc
            await asyncio.sleep(DATABASE_RETRY_SECONDS)
            continue
        if report.database_gone_since is not None:
            log.warning("the database is back after %.1f s", time.monotonic() - report.database_gone_since)
            report.database_gone_since = None
        return


def _spool_and_prepare(
    storage: Storage, path: Path, on_store: OnStore | None
) -> tuple[SpooledFile, store.Prepared | InvalidInstance] | None:
    """The file copied into tmp/, parsed and put in place (blocking; in a pool process); None if it is not a PS3.10
    file."""
    with open(path, "rb") as source:  # opened once: the check of its prefix, the copy and (in memory) the parse
        head = source.read(DICM_OFFSET + 4)
        if head[DICM_OFFSET:] != b"DICM":
            return None
        spooled = storage.spool_copy(source, head)
    try:
        outcome = store.prepare_here(storage, spooled, None, on_store)
        return dataclasses.replace(spooled, data=None), outcome  # the bytes stay here, not sent back
    except BaseException:
        spooled.path.unlink(missing_ok=True)
        raise


async def _import_one(archive: Archive, processes: Executor, path: Path, report: ImportReport, hold_back: bool) -> None:
    try:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(processes, _spool_and_prepare, archive.storage, path, archive.on_store)
    except OSError as exc:
        report.failures.append((path, f"cannot read: {exc.strerror}"))
        return
    if prepared is None:
        report.skipped += 1
        return
    spooled, outcome = prepared
    if hold_back and isinstance(outcome, store.Prepared) and outcome.instance.found is not None:
        await store.remove_placed(archive.storage, [outcome])  # parsed again at the end: cheaper than a file in limbo
        report.held_back.append(path)
        return
    # the spooled file is gone afterwards
    result = await store.store_prepared(archive, spooled, outcome, stored_by=IMPORTED_BY)
    report.bytes += spooled.size
    if result.failure is not None:
        report.failures.append((path, f"{result.detail} ({result.failure:#06x})"))
    elif result.already_stored:
        report.already_stored += 1
    else:
        report.stored += 1
