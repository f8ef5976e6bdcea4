"""``dicomweb restore SRC``: a backup made by ``dicomweb backup`` (``backup.py``) brought back into an empty data
folder, with the embedded PostgreSQL initialised in it, or with DICOMWEB_DATABASE_URL naming an empty database; its
files into the data folder, or with DICOMWEB_STORAGE=s3 into the bucket (under DICOMWEB_S3_PREFIX). A backup of a
folder archive restores into a bucket and the other way round: the layout is the same.

A restore never merges into an archive: a data folder that is not empty, a database that has tables, or a bucket
holding objects under ``files/`` other than this backup's, is refused before anything is changed. Objects that are
this backup's files, of their sizes, are what a restore that stopped part way (an error, Ctrl-C) uploaded: a restore
run again, into an emptied data folder and database, keeps them and uploads the rest. Then the files (hard-linked
from SRC where both are on one file system, else copied; uploaded with If-None-Match: *, never over an object), the
dump (pg_restore's script run by psql, in one transaction), the rows of instances deleted while the backup ran
deleted as the archive deleted them, the schema brought up to date as a server's start would, and every row checked
for its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from obstore.exceptions import BaseError as ObjectStoreError

from .backup import (
    DUMP,
    LISTED,
    BackupError,
    Manifest,
    Refused,
    database,
    libpq_url,
    pg_tool,
    storage_of,
    write_durably,
)
from .config import Settings
from .db import index, outage
from .db.pool import ensure_schema, schema_version
from .mirror import Mirror, Upload
from .storage import FileStorage, Storage
from .storage.s3 import ObjectExists, S3Storage
from .tokens import SECRET_FILE, secret_path

# Settings pg_dump 17 and later open a script with, which older servers refuse: left out for those, as their own
# pg_dump would leave them out (a backup of the embedded PostgreSQL 18 restored into one's own PostgreSQL 14 to 16).
NEWER_SETTINGS = {b"SET transaction_timeout = 0;\n": 17}
# How the lines of a script's head begin (comments, psql's \restrict, settings); its first statement ends the head.
SCRIPT_HEAD = (b"--", b"\\", b"SET ", b"SELECT pg_catalog.set_config(", b"\n")
CHUNK_BYTES = 1024 * 1024  # of the script handed from pg_restore to psql at a time


@dataclass
class Restored:
    """What a restore brought back."""

    manifest: Manifest
    studies: int = 0
    instances: int = 0
    linked: int = 0  # files hard-linked into the data folder
    copied: int = 0  # files copied into the data folder, or uploaded into the bucket
    present: int = 0  # objects the bucket held already (a restore run again)
    missing: list[str] = field(default_factory=list)  # rows whose file is not in the restored archive


async def restore(settings: Settings, src: Path, link: bool = True) -> Restored:
    """Restore the backup in ``src`` into the data folder, storage and database of ``settings`` (all empty, or the
    bucket holding only what an earlier run of this restore put there)."""
    src = src.resolve()
    manifest = Manifest.read(src)
    if manifest.schema_version > schema_version():
        raise Refused(
            f"the backup holds a database of schema version {manifest.schema_version}, made by dicomweb "
            f"{manifest.dicomweb_version}; this version knows {schema_version()}: restore it with a newer dicomweb"
        )
    if not (src / DUMP).exists():
        raise Refused(f"{src} has no {DUMP}")
    target = settings.data_dir.resolve()
    if target.exists() and any(target.iterdir()):
        raise Refused(f"the data folder {target} is not empty; restore into a new or empty folder")
    storage = await storage_of(settings)
    backup = FileStorage(src)
    present = await asyncio.to_thread(resumable, storage, backup) if isinstance(storage, S3Storage) else {}
    if settings.database_url:
        await _check_empty(settings.database_url)
    target.mkdir(parents=True, exist_ok=True)
    restored = Restored(manifest, present=len(present))
    restored.linked, restored.copied = await asyncio.to_thread(put_files, backup, storage, link, present)
    secret, restored_secret = src / SECRET_FILE, secret_path(target, settings.jwt_secret_file)
    if secret.exists() and not restored_secret.exists():  # a secret file replicas share already is theirs: kept
        restored_secret.parent.mkdir(parents=True, exist_ok=True)
        write_durably(restored_secret, secret.read_bytes(), mode=0o600)
    async with database(settings) as url:
        conn = await outage.connect(url)
        try:
            await asyncio.to_thread(load_dump, src / DUMP, url, conn.get_server_version().major)
            async with conn.transaction():
                for path in manifest.deleted:
                    pk = await conn.fetchval("SELECT pk FROM instance WHERE file_path = $1", path)
                    if pk is not None:
                        await index.delete_instance(conn, pk)  # keeps the series and study counts exact
            await ensure_schema(conn)
            paths = [row[0] for row in await conn.fetch("SELECT file_path FROM instance")]
            restored.studies = await conn.fetchval("SELECT count(*) FROM study")
        finally:
            await conn.close()
    restored.instances = len(paths)
    stored = await asyncio.to_thread(lambda: {relative for relative, _ in storage.list_now()})
    restored.missing = [path for path in paths if path not in stored]
    return restored


def resumable(storage: S3Storage, backup: FileStorage) -> dict[str, int]:
    """The objects the bucket holds under ``files/`` (relative path -> size) when each is a file of the backup, of
    its size: none, or those a restore that stopped part way uploaded. Refused if any is not (another archive's
    objects, or another backup's): a restore never merges."""
    present = dict(storage.list_now())
    foreign = sorted(relative for relative, size in present.items() if _size(backup, relative) != size)
    if foreign:
        raise Refused(
            f"{storage.describe()} holds {len(foreign)} object(s) under files/ that are not this backup's files "
            f"(such as {foreign[0]}); restore into an empty bucket, or under another DICOMWEB_S3_PREFIX"
        )
    return present


def _size(backup: FileStorage, relative: str) -> int | None:
    try:
        return backup.absolute(relative).stat().st_size
    except (ValueError, OSError):  # a key that is no stored path, or no file of the backup
        return None


def put_files(backup: FileStorage, storage: Storage, link: bool, present: dict[str, int]) -> tuple[int, int]:
    """The backup's files into the archive's storage: linked or copied into the data folder, or uploaded into the
    bucket (but those ``present``); how many were linked, and copied or uploaded (blocking)."""
    if isinstance(storage, S3Storage):
        upload = Upload(backup, storage, present)
        upload.add_all(backup.list_now())
        return 0, upload.copied
    mirror = Mirror(backup, storage.root, link)
    mirror.add_all(backup.list_now())
    mirror.sync()
    return mirror.linked, mirror.copied


def load_dump(dump: Path, url: str, server_major: int) -> None:
    """Run pg_restore's script of ``dump`` with psql in one transaction, stopping at the first error; the tables
    belong to whoever restores them (as to whoever ran the schema at a first start), no privileges are granted."""
    dbname, env = libpq_url(url)
    with (
        tempfile.TemporaryFile() as script_errors,
        tempfile.TemporaryFile() as load_errors,
        subprocess.Popen(
            [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--file=-", str(dump)],
            stdout=subprocess.PIPE,
            stderr=script_errors,
        ) as script,
        subprocess.Popen(
            [
                pg_tool("psql"),
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                f"--dbname={dbname}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=load_errors,
            env={**os.environ, **env},
        ) as load,
    ):
        assert script.stdout is not None and load.stdin is not None
        failed: tuple[subprocess.Popen[bytes], IO[bytes]] | None = None
        try:
            for line in script.stdout:  # the script's head: settings, then its first statement
                if NEWER_SETTINGS.get(line, 0) <= server_major:
                    load.stdin.write(line)
                if not line.startswith(SCRIPT_HEAD):
                    break
            shutil.copyfileobj(script.stdout, load.stdin, CHUNK_BYTES)
            if script.wait() != 0:
                load.kill()  # a script cut short must not be committed
                failed = script, script_errors
        except BrokenPipeError:
            script.kill()
            failed = load, load_errors  # psql stopped at an error
        with contextlib.suppress(BrokenPipeError):
            load.stdin.close()  # the end of the script: psql commits, unless killed
        if load.wait() != 0 and failed is None:
            failed = load, load_errors
        script.wait()
        if failed is not None:
            process, errors = failed
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip() or f"exit status {process.returncode}"
            raise BackupError(f"restoring the database failed: {message}")


async def _check_empty(url: str) -> None:
    conn = await outage.connect(url)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await conn.close()
    if tables:
        raise Refused(f"the database of DICOMWEB_DATABASE_URL has {tables} tables; restore into an empty database")


def restore_command(settings: Settings, src: Path, copy: bool) -> int:
    """``dicomweb restore SRC``: the restore, then one summary line; exit 2 if refused, 1 if it failed."""
    bucket = settings.storage == "s3"
    try:
        restored = asyncio.run(restore(settings, src, link=not copy))
    except Refused as exc:
        print(f"dicomweb: restore refused: {exc}", file=sys.stderr)
        return 2
    except (BackupError, ObjectStoreError, ObjectExists, *outage.DATABASE_ERRORS) as exc:
        kept = "; the objects already in the bucket may stay: a restore run again keeps them" if bucket else ""
        print(
            f"dicomweb: restore failed: {exc}; empty the data folder {settings.data_dir} (and the database, if "
            f"yours) before trying again{kept}",
            file=sys.stderr,
        )
        return 1
    manifest = restored.manifest
    files = (
        f"{restored.copied} files uploaded into the bucket, {restored.present} there already"
        if bucket
        else f"{restored.linked} files linked, {restored.copied} copied"
    )
    print(
        f"restored {restored.instances} instances ({restored.studies} studies) backed up at {manifest.created} "
        f"into {settings.data_dir}: {files}",
        file=sys.stderr,
    )
    if manifest.deleted:
        print(f"  {len(manifest.deleted)} instance(s) deleted while the backup ran were left out", file=sys.stderr)
    for path in restored.missing[:LISTED]:
        print(f"  no file for {path} (it was missing from the archive when backed up)", file=sys.stderr)
    return 0
