"""The files and the index made to agree again after a crash: at every start of the server, and on demand with
``dicomweb check``.

A store puts its files in place, once its request's body is complete, then commits their rows in a transaction
(``services/store.py``); a deletion commits, then unlinks. A crash (SIGKILL, power cut, the kernel's OOM killer) in
between leaves:

- temp files in ``tmp/`` of processes that are gone (each name carries its owner's pid and start time,
  ``storage.temp_name``): removed. A live process's temp files are never touched, whatever their age, so a start
  beside a running ``dicomweb import``, or ``dicomweb check`` beside a running server, leaves their uploads alone;
  names of another form (older versions) are removed once ``STALE_TEMP_SECONDS`` old;
- orphan files: stored files that no committed row names (a store whose COMMIT never came, the old file of an
  overwrite or a deleted instance's file whose unlink never came): moved to ``lost+found/`` under the data folder,
  keeping their path, with a log line each; moved rather than deleted, because they may be the only copy of an
  instance a client was never told was stored;
- missing files: rows whose file is gone (removed by hand, a database restored without its files): reported, never
  repaired (the instance must be sent again), with their UIDs; their count is in ``/metrics`` and ``/readyz``.

``dicomweb check`` also compares each file's size with its row's, and with ``--verify`` re-hashes every file
against the row's ``file_sha256`` (a stored file's name carries a random part, not its hash: the row is the
record of what was received).

A start reads no file: it lists the folders and reads every row's path in one query (about 0.1 s for 20,000
instances). The files are listed first; then the transactions in progress are waited for, and only then are the rows
read: a file whose store's COMMIT is pending is not taken for an orphan. A store places its files a moment before its
transaction begins (milliseconds: its rows go in as soon as its files are in place), which that wait cannot see: at
a start nothing of the server's own is in flight, and ``dicomweb check``, which runs beside a server, leaves files
younger than some minutes alone.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil
from obstore.exceptions import BaseError as ObjectStoreError
from tqdm import tqdm

from .config import Settings
from .db import files as db
from .db import outage
from .db.files import StoredFile
from .storage import CHUNK_BYTES, STALE_TEMP_SECONDS, TEMP_SUFFIX, FileStorage, Storage, open_storage, temp_owner
from .storage.s3 import S3Storage

log = logging.getLogger("dicomweb")

LOST_AND_FOUND = "lost+found"  # under the data folder: orphan files, at their path relative to the data folder
SUMMARY_FILE = "reconcile.json"  # under the data folder: the last reconciliation's counts, for /metrics and /readyz
TRANSACTION_WAIT_SECONDS = 30.0  # how long to wait for transactions in progress before leaving orphans unjudged
START_TIME_TOLERANCE_SECONDS = 2.0  # a temp file's owner is the live process of its pid if started this close
MISSING_LOGGED = 100  # missing files logged one by one at a start; `dicomweb check` lists them all
# With other archive processes at work (`dicomweb check` beside a server, a replica starting beside others, a server
# starting beside a running `dicomweb import`), a temp file of a process that is gone, or a file no row names, counts
# only once last written this long ago (seconds): a file another process has just put in place and is committing (its
# request's body complete, its transaction about to begin) is not taken for an orphan, nor is a live upload of
# another machine or PID namespace (whose process cannot be seen from here) taken for a crash's leftover.
BUSY_MIN_AGE_SECONDS = 600
HASH_THREADS = 4  # files re-hashed at once by `dicomweb check --verify` (hashlib releases the GIL)


@dataclass
class Findings:
    """What a reconciliation found; paths are relative to the data folder."""

    stale_temp_files: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    missing_files: list[StoredFile] = field(default_factory=list)
    size_mismatches: list[tuple[StoredFile, int]] = field(default_factory=list)  # the row, the file's size
    hash_mismatches: list[StoredFile] = field(default_factory=list)
    unjudged: int = 0  # files no row names, too young to judge or while transactions stayed open: left as they are
    listed: int = 0  # files under files/
    indexed: int = 0  # rows

    def count(self) -> int:
        return (
            len(self.stale_temp_files)
            + len(self.orphan_files)
            + len(self.missing_files)
            + len(self.size_mismatches)
            + len(self.hash_mismatches)
        )


@dataclass(frozen=True)
class Summary:
    """The last reconciliation's figures, as ``/metrics`` and ``/readyz`` report them."""

    finished_at: float  # seconds since the epoch
    missing_files: int


async def scan(
    conn: asyncpg.Connection,
    storage: FileStorage,
    *,
    sizes: bool = False,
    verify: bool = False,
    min_age: float = 0.0,
    progress: bool = False,
) -> Findings:
    """Compare the files with the committed rows; changes nothing. ``sizes``: stat every file against its row;
    ``verify``: re-hash every file too; ``min_age``: a temp file of a process that is gone, or a file no row names,
    counts only once last written this many seconds ago (younger ones are left unjudged)."""
    findings = Findings()
    findings.stale_temp_files = await asyncio.to_thread(stale_temp_files, storage, min_age)
    listed = await asyncio.to_thread(list_files, storage.root, progress)
    findings.listed = len(listed)
    still_open = await db.wait_for_transactions(conn, TRANSACTION_WAIT_SECONDS)
    contents, indexed = await _indexed(conn, with_contents=sizes or verify)
    findings.indexed = len(indexed)
    unnamed = listed.difference(indexed)
    if still_open:
        log.warning(
            "%d transaction(s) still open after %.0f s: %d file(s) no row names are left as they are this time",
            still_open,
            TRANSACTION_WAIT_SECONDS,
            len(unnamed),
        )
        findings.unjudged = len(unnamed)
    else:
        orphans = await asyncio.to_thread(_written_before, storage.root, unnamed, time.time() - min_age)
        findings.orphan_files = sorted(orphans)
        findings.unjudged = len(unnamed) - len(orphans)
    unlisted = [path for path in indexed if path not in listed]
    gone = await asyncio.to_thread(lambda: [p for p in unlisted if not storage.absolute(p).exists()])
    vanished: list[str] = []
    bad_sizes: dict[str, int] = {}
    bad_hashes: list[str] = []
    if sizes or verify:
        present = [(path, *contents[path]) for path in contents if path in listed]
        vanished, bad_sizes, bad_hashes = await asyncio.to_thread(check_contents, storage, present, verify, progress)
    # Confirmed against the rows as they are now: a row deleted meanwhile (its file unlinked after the commit) is
    # no finding.
    rows = await db.stored_files(conn, [*gone, *vanished, *bad_sizes, *bad_hashes])
    findings.missing_files = [rows[p] for p in sorted({*gone, *vanished}) if p in rows]
    findings.size_mismatches = [(rows[p], size) for p, size in sorted(bad_sizes.items()) if p in rows]
    findings.hash_mismatches = [rows[p] for p in sorted(bad_hashes) if p in rows]
    return findings


async def _indexed(conn: asyncpg.Connection, with_contents: bool) -> tuple[dict[str, tuple[int, str]], Collection[str]]:
    """The committed rows' file paths, with each one's size and SHA-256 when ``with_contents`` (else none)."""
    if with_contents:
        contents = await db.file_contents(conn)
        return contents, contents.keys()
    return {}, await db.file_paths(conn)


def _written_before(root: Path, paths: Iterable[str], cutoff: float) -> list[str]:
    """The files among ``paths`` last written before ``cutoff`` (seconds since the epoch); those gone are left out."""
    found = []
    for path in paths:
        try:
            if (root / path).stat().st_mtime <= cutoff:
                found.append(path)
        except FileNotFoundError:
            pass
    return found


def stale_temp_files(storage: Storage, min_age: float = 0.0) -> list[str]:
    """Temp files whose owning process is gone (and at least ``min_age`` seconds old), and temp files of an older
    name form that are ``STALE_TEMP_SECONDS`` old."""
    now = time.time()
    stale = []
    with os.scandir(storage.tmp) as entries:
        for entry in entries:
            if not entry.name.endswith(TEMP_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                modified = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # its upload has ended since
            owner = temp_owner(entry.name)
            if owner is None:
                gone = modified < now - STALE_TEMP_SECONDS
            else:
                gone = not owner_alive(*owner) and modified <= now - min_age
            if gone:
                stale.append(f"{storage.tmp.name}/{entry.name}")
    return sorted(stale)


def owner_alive(pid: int, started: int) -> bool:
    """Whether the process that made a temp file still runs (the same pid, started at the same time)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - started) < START_TIME_TOLERANCE_SECONDS
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: not ours to judge


def list_files(root: Path, progress: bool = False) -> set[str]:
    """Every file under ``files/``, relative to the data folder (folder entries only: no file is opened or stat'ed)."""
    found: set[str] = set()
    prefix = len(str(root)) + 1
    folders = [root / "files"]
    with tqdm(desc="listing files", unit=" files", disable=not progress, dynamic_ncols=True) as bar:
        while folders:
            folder = folders.pop()
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            before = len(found)
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                else:
                    found.add(entry.path[prefix:])
            bar.update(len(found) - before)
    return found


def check_contents(
    storage: FileStorage, present: list[tuple[str, int, str]], verify: bool, progress: bool
) -> tuple[list[str], dict[str, int], list[str]]:
    """Each file's size against its row's, and with ``verify`` its SHA-256: the files gone meanwhile, the sizes
    that differ (path -> the file's size), the hashes that differ."""
    total = sum(size for _, size, _ in present) if verify else len(present)
    unit = {"unit": "B", "unit_scale": True} if verify else {"unit": " files"}
    bar = tqdm(total=total, desc="verifying" if verify else "sizes", disable=not progress, dynamic_ncols=True, **unit)

    def one(item: tuple[str, int, str]) -> tuple[str, int | None, bool]:
        path, size, sha256 = item
        absolute = storage.absolute(path)
        try:
            actual = os.stat(absolute).st_size
            if not verify:
                bar.update(1)
                return path, actual, True
            if actual != size:
                bar.update(size)
                return path, actual, True
            return path, actual, _sha256(absolute, bar) == sha256
        except FileNotFoundError:
            return path, None, True

    with bar:
        if verify:
            with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
                results = list(pool.map(one, present))
        else:
            results = [one(item) for item in present]
    expected = {path: size for path, size, _ in present}
    vanished = [path for path, actual, _ in results if actual is None]
    sizes = {path: actual for path, actual, _ in results if actual is not None and actual != expected[path]}
    hashes = [path for path, actual, same in results if actual is not None and not same]
    return vanished, sizes, hashes


def _sha256(path: Path, bar: tqdm[None]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


async def scan_objects(
    conn: asyncpg.Connection, storage: S3Storage, *, sizes: bool = False, verify: bool = False, min_age: float = 0.0
) -> Findings:
    """``scan`` for a bucket: its listing under ``files/`` against the committed rows, in the same order (listed
    first, then the transactions writing now waited for, then the rows read), so an object placed by a store whose
    COMMIT is still to come is never taken for an orphan; an indexed path not listed is checked once more (HEAD)
    before it counts as missing, as it may have been placed after the listing. ``sizes``: each object's listed size
    against its row; ``verify``: every object streamed and re-hashed too (HASH_THREADS at once); ``min_age``: an
    object no row names counts only once written this many seconds ago."""
    findings = Findings()
    findings.stale_temp_files = await asyncio.to_thread(stale_temp_files, storage, min_age)
    listed = {o.relative_path: o async for o in storage.bucket.listing("files/")}
    findings.listed = len(listed)
    still_open = await db.wait_for_transactions(conn, TRANSACTION_WAIT_SECONDS)
    contents, indexed = await _indexed(conn, with_contents=sizes or verify)
    findings.indexed = len(indexed)
    unnamed = sorted(p for p in listed if p not in indexed)
    if still_open:
        findings.unjudged = len(unnamed)
    else:
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=min_age)
        findings.orphan_files = [p for p in unnamed if listed[p].modified <= cutoff]
        findings.unjudged = len(unnamed) - len(findings.orphan_files)
    gone = [p for p in sorted(p for p in indexed if p not in listed) if await storage.bucket.stat(p) is None]
    bad_sizes = {p: listed[p].size for p, (size, _) in contents.items() if p in listed and listed[p].size != size}
    bad_hashes: list[str] = []
    if verify:
        limit = asyncio.Semaphore(HASH_THREADS)

        async def matches(path: str, sha256: str) -> bool:
            async with limit:
                digest = hashlib.sha256()
                async for chunk in storage.read(path):
                    digest.update(chunk)
                return digest.hexdigest() == sha256

        present = [(p, sha) for p, (_, sha) in contents.items() if p in listed and p not in bad_sizes]
        verdicts = await asyncio.gather(*(matches(p, sha) for p, sha in present))
        bad_hashes = sorted(p for (p, _), ok in zip(present, verdicts, strict=True) if not ok)
    rows = await db.stored_files(conn, [*gone, *bad_sizes, *bad_hashes])
    findings.missing_files = [rows[p] for p in gone if p in rows]
    findings.size_mismatches = [(rows[p], size) for p, size in sorted(bad_sizes.items()) if p in rows]
    findings.hash_mismatches = [rows[p] for p in bad_hashes if p in rows]
    return findings


async def repair_objects(storage: S3Storage, findings: Findings) -> dict[str, str]:
    """``repair`` for a bucket: stale temp files removed, orphan objects moved to ``lost+found/``; where each went."""
    await asyncio.to_thread(repair_temp, storage, findings.stale_temp_files)
    moved = {}
    for relative in findings.orphan_files:
        moved[relative] = await storage.move_to_lost_found(relative)
        log.warning("orphan object %s (no committed row names it) moved to %s", relative, moved[relative])
    return moved


def repair_temp(storage: Storage, stale: list[str]) -> None:
    """Remove the stale temp files (relative to the data folder)."""
    for relative in stale:
        (storage.root / relative).unlink(missing_ok=True)


def repair(storage: FileStorage, findings: Findings) -> dict[str, str]:
    """What is safe: stale temp files removed, orphan files moved to lost+found/ (each logged); where each orphan
    went. Never a row, never an indexed file."""
    for relative in findings.stale_temp_files:
        (storage.root / relative).unlink(missing_ok=True)
    if findings.stale_temp_files:
        log.info("removed %d temp file(s) of processes that are gone", len(findings.stale_temp_files))
    moved = {}
    for relative in findings.orphan_files:
        target = move_to_lost_found(storage.root, relative)
        if target is not None:
            moved[relative] = target
            log.warning("orphan file %s (no committed row names it) moved to %s", relative, target)
    return moved


def move_to_lost_found(root: Path, relative: str) -> str | None:
    """Move a file to lost+found/ at the same relative path (a new suffix if taken); where it went, relative to the
    data folder, or None if it is gone already."""
    target = f"{LOST_AND_FOUND}/{relative}"
    (root / target).parent.mkdir(parents=True, exist_ok=True)
    taken = 0
    while (root / target).exists():
        taken += 1
        target = f"{LOST_AND_FOUND}/{relative}.{taken}"
    try:
        os.rename(root / relative, root / target)
    except FileNotFoundError:
        return None
    return target


def log_missing(missing: list[StoredFile]) -> None:
    for stored in missing[:MISSING_LOGGED]:
        log.error("indexed instance without its file: %s (%s)", uids(stored), stored.file_path)
    if len(missing) > MISSING_LOGGED:
        log.error("... and %d more; `dicomweb check` lists them all", len(missing) - MISSING_LOGGED)


def uids(stored: StoredFile) -> str:
    return (
        f"StudyInstanceUID={stored.study_instance_uid} SeriesInstanceUID={stored.series_instance_uid} "
        f"SOPInstanceUID={stored.sop_instance_uid}"
    )


async def at_start_supervised(settings: Settings) -> None:
    """``at_start`` in ``dicomweb serve``'s supervisor, before it starts the workers, over a connection of its own."""
    storage = open_storage(settings)
    await asyncio.to_thread(storage.prepare)
    conn = await outage.connect(settings.database_url)
    try:
        await at_start(conn, storage)
    finally:
        await conn.close()


async def at_start(conn: asyncpg.Connection, storage: Storage) -> Findings | None:
    """Before the server serves (once, in ``dicomweb serve``'s supervisor with several workers): temp files of
    processes that are gone removed, orphan files moved to lost+found/, missing files logged and counted. A storage
    error (the disk, the bucket) is logged and the server starts all the same (a database error stops the start, as
    it would anyway)."""
    started = time.monotonic()
    noun = "object" if isinstance(storage, S3Storage) else "file"
    try:
        findings = await scan_storage(conn, storage, min_age=await _min_age_at_start(conn))
        await repair_storage(storage, findings)
        log_missing(findings.missing_files)
        await asyncio.to_thread(write_summary, storage.root, findings)
    except (OSError, ObjectStoreError) as exc:
        log.error("the %ss could not be reconciled with the index (%s); starting all the same", noun, exc)
        return None
    log.info(
        "%ss reconciled with the index in %.2f s: %d %ss, %d rows; %d temp file(s) removed, %d orphan %s(s) moved to "
        "%s (%d too young to judge), %d missing %s(s)",
        noun,
        time.monotonic() - started,
        findings.listed,
        noun,
        findings.indexed,
        len(findings.stale_temp_files),
        len(findings.orphan_files),
        noun,
        f"{LOST_AND_FOUND}/ in the bucket" if isinstance(storage, S3Storage) else storage.root / LOST_AND_FOUND,
        findings.unjudged,
        len(findings.missing_files),
        noun,
    )
    return findings


async def scan_storage(
    conn: asyncpg.Connection,
    storage: Storage,
    *,
    sizes: bool = False,
    verify: bool = False,
    min_age: float = 0.0,
    progress: bool = False,
) -> Findings:
    """``scan`` of the data folder or ``scan_objects`` of the bucket, whichever holds the archive's files (a bucket's
    scan shows no progress bar)."""
    if isinstance(storage, S3Storage):
        return await scan_objects(conn, storage, sizes=sizes, verify=verify, min_age=min_age)
    assert isinstance(storage, FileStorage)
    return await scan(conn, storage, sizes=sizes, verify=verify, min_age=min_age, progress=progress)


async def repair_storage(storage: Storage, findings: Findings) -> dict[str, str]:
    """``repair`` of the data folder or ``repair_objects`` of the bucket; where each orphan went."""
    if isinstance(storage, S3Storage):
        return await repair_objects(storage, findings)
    assert isinstance(storage, FileStorage)
    return await asyncio.to_thread(repair, storage, findings)


async def _min_age_at_start(conn: asyncpg.Connection) -> float:
    """0 when no other archive process is connected to the database (nothing but this start can be placing files),
    else BUSY_MIN_AGE_SECONDS, logged."""
    others = await db.other_archive_connections(conn)
    if not others:
        return 0.0
    log.info(
        "%d connection(s) of other archive processes (replicas, an import): files no row names and temp files of "
        "processes not seen here are judged only once %d minutes old",
        others,
        BUSY_MIN_AGE_SECONDS // 60,
    )
    return float(BUSY_MIN_AGE_SECONDS)


def write_summary(data_dir: Path, findings: Findings) -> None:
    """Record the reconciliation's figures for the server's /metrics and /readyz (every worker reads the file)."""
    summary = {"finished_at": time.time(), "missing_files": len(findings.missing_files)}
    temp = data_dir / f".{SUMMARY_FILE}.{uuid.uuid4().hex}"
    temp.write_text(json.dumps(summary))
    os.replace(temp, data_dir / SUMMARY_FILE)


def read_summary(data_dir: Path) -> Summary | None:
    """The last reconciliation's figures; None before the first (or for a server started without one)."""
    try:
        recorded = json.loads((data_dir / SUMMARY_FILE).read_text())
        return Summary(float(recorded["finished_at"]), int(recorded["missing_files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
