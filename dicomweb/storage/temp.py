"""Received files, spooled in the local data folder whatever the backend: ``tmp/`` and the paths of the store.

Layout under the data folder::

    tmp/{pid}-{start}-{random}.part        files being received, named after the process receiving them (removed
                                           on failure; those of processes that are gone are removed at start-up)

A received part is written here, hashed on the way, parsed, and then placed by the backend under its final path
(``Spool.new_path``): ``files/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.{random}.dcm``, a file under
the data folder (``file.py``) or an object key under a prefix (``s3.py``). The UIDs are checked against the PS3.5
§9.1 grammar before they become path components, so no request can name a path outside ``files/``.

All blocking file work runs in worker threads (``asyncio.to_thread``); nothing here touches the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import psutil

from ..uids import is_valid_uid

TEMP_SUFFIX = ".part"
# Temp files older than this are leftovers of a crash, swept at start-up. Younger ones may belong to an upload in
# flight in another worker process of the same server (each runs this sweep when it starts), so they stay.
STALE_TEMP_SECONDS = 6 * 3600
# A temp file's name: the owning process's pid and start time (whole seconds since the epoch; with the pid it tells a
# live owner from a new process that got a dead one's pid), then a random part.
TEMP_NAME = re.compile(r"(\d+)-(\d+)-[0-9a-f]{32}" + re.escape(TEMP_SUFFIX))
CHUNK_BYTES = 1024 * 1024  # bytes read from a stored file per worker-thread call
IN_MEMORY_BYTES = 4 * 1024 * 1024  # a received file up to this size is parsed from memory (SpooledFile.data)


class Upload(Protocol):
    """The upload of a received file to its final place, begun while the file was still arriving (``s3.py``: a
    multipart upload under its final key, for a file larger than one part). Blocking: call from a worker thread."""

    relative_path: str  # where it goes, made from the UIDs of the file's first bytes

    def complete(self) -> None:
        """Make the file appear there, whole."""

    def abort(self) -> None:
        """Make sure nothing appears there; nothing to do once completed or aborted. Never raises."""


@dataclass(frozen=True)
class SpooledFile:
    """A received file in ``tmp/``: where it is, how big, and its SHA-256; and its bytes, when ``spool_copy`` made
    it from a file of at most IN_MEMORY_BYTES for a caller that parses it at once (``dicomweb import``, C-STORE), so
    that the parse needs no second read (``instance.read_instance``); and the upload to its place that began while
    it arrived, if one did (placing it completes it, discarding it aborts it)."""

    path: Path
    size: int
    sha256: str
    data: bytes | None = field(default=None, repr=False, compare=False)
    upload: Upload | None = field(default=None, repr=False, compare=False)


def temp_name() -> str:
    """A new temp file name that names this process as its owner, so that a start can remove the temp files of
    processes that are gone and leave a live worker's uploads alone (``dicomweb/reconcile.py``)."""
    return f"{_owner(os.getpid())}-{uuid.uuid4().hex}{TEMP_SUFFIX}"


def temp_owner(name: str) -> tuple[int, int] | None:
    """The pid and start time of the process that made the temp file ``name``; None for a name of another form."""
    match = TEMP_NAME.fullmatch(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


@functools.cache
def _owner(pid: int) -> str:
    return f"{pid}-{int(psutil.Process(pid).create_time())}"


class TempWriter:
    """Receives one part's bytes into a temp file; the file work happens in worker threads. A backend may also send
    the bytes on to their final place as they arrive (``upload``: ``s3.py``'s ``StreamingWriter``)."""

    upload: Upload | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        if self._file is None:
            self._file = open(self.path, "xb")
        self._file.write(data)
        self._hash.update(data)

    async def close(self, data: bytes = b"") -> SpooledFile:
        """Write the last bytes and close; the store makes the file durable later, off the receiving path. The
        bytes are not kept (``SpooledFile.data``): the parts of a request wait for their parse, and their memory
        would grow with the request."""
        self.size += len(data)
        await asyncio.to_thread(self._close, data)
        return SpooledFile(self.path, self.size, self._hash.hexdigest(), upload=self.upload)

    def _close(self, data: bytes) -> None:
        self._write(data)
        assert self._file is not None
        self._file.close()

    async def abort(self) -> None:
        await cleanup(self._abort)

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
        self.path.unlink(missing_ok=True)
        if self.upload is not None:
            self.upload.abort()


async def cleanup(function: Callable[..., None], *args: Any) -> None:
    """Run a blocking clean-up (closing, unlinking temp files) in a worker thread; should that await be cancelled
    (a request cancelled twice at shutdown) or the worker threads be gone (the server stopping), run it here and
    now: a temp file must not outlive its request, and unlinking a few files is brief."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # A request being cancelled: the server is stopping, and may end this process (uvicorn raises SIGTERM again
        # once its lifespan is over) before a worker thread would get to the files.
        function(*args)
        return
    try:
        await asyncio.to_thread(function, *args)
    except (asyncio.CancelledError, RuntimeError):  # RuntimeError: "cannot schedule new futures after shutdown"
        function(*args)
        raise


def sync(path: Path) -> None:
    """fsync a closed file (blocking; call from a worker thread)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The local half of every backend: the data folder, its ``tmp/`` for received files, and the final paths."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / "tmp"

    def prepare_temp(self) -> None:
        """Create ``tmp/`` and sweep temp files a crash left behind (STALE_TEMP_SECONDS old)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_TEMP_SECONDS
        for leftover in self.tmp.glob("*" + TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink(missing_ok=True)

    def temp_writer(self) -> TempWriter:
        return TempWriter(self.tmp / temp_name())

    def spool_copy(self, source: Path | BinaryIO, head: bytes = b"", start: int = 0) -> SpooledFile:
        """``head`` and then ``source`` (a path, or a file open at where the copy starts) from byte ``start`` on,
        copied into a new temp file and hashed on the way, as the store needs it (``dicomweb import``'s files; a
        C-STORE data set behind the archive's File Meta Information). Blocking: call from a worker thread. Nothing is
        left behind when the copy fails."""
        target = self.temp_writer().path
        digest = hashlib.sha256(head)
        parts = [head]
        size = len(head)
        try:
            with (
                open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as src,
                open(target, "xb") as dst,
            ):
                if start:
                    src.seek(start)
                dst.write(head)
                while chunk := src.read(CHUNK_BYTES):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                    if size <= IN_MEMORY_BYTES:
                        parts.append(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return SpooledFile(target, size, digest.hexdigest(), b"".join(parts) if size <= IN_MEMORY_BYTES else None)

    def new_path(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
        """A fresh relative path for an instance file; refuses anything that is not a valid UID."""
        for uid in (study_instance_uid, series_instance_uid, sop_instance_uid):
            if not is_valid_uid(uid):
                raise ValueError(f"refusing to build a path from an invalid UID {uid!r}")
        return f"files/{study_instance_uid}/{series_instance_uid}/{sop_instance_uid}.{uuid.uuid4().hex[:16]}.dcm"

    def path_for(
        self, spooled: SpooledFile, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> str:
        """Where a parsed instance file goes: where its upload began, if the UIDs its first bytes gave are those the
        whole file's parse found (they always are, but the parse is what the archive trusts); else a new path."""
        upload = spooled.upload
        if upload is not None and upload.relative_path.startswith(
            f"files/{study_instance_uid}/{series_instance_uid}/{sop_instance_uid}."
        ):
            return upload.relative_path
        return self.new_path(study_instance_uid, series_instance_uid, sop_instance_uid)

    async def discard(self, spooled: Iterable[SpooledFile]) -> None:
        """Remove temp files (those already placed are gone from tmp/ and ignored) and abort their uploads (those
        already completed are left alone: removing a placed file is the store's)."""
        files = list(spooled)
        if files:
            await cleanup(_discard_all, files)

    def check_temp_writable(self) -> None:
        """Raise OSError unless a file can be created and fsynced in the temp folder (for /readyz)."""
        probe = self.tmp / temp_name()
        with open(probe, "xb") as f:
            f.write(b"ok")
            os.fsync(f.fileno())
        probe.unlink()


def check_relative(relative_path: str) -> list[str]:
    """The parts of a stored path; ValueError for any path that could leave ``files/`` (checked lexically)."""
    parts = relative_path.split("/")
    if parts[0] != "files" or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"stored path {relative_path!r} is outside the storage folder")
    return parts


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _discard_all(files: list[SpooledFile]) -> None:
    for file in files:
        file.path.unlink(missing_ok=True)
        if file.upload is not None:
            file.upload.abort()


def sync_folder(path: Path) -> None:
    """fsync a folder, so that the names made or changed in it are durable (blocking)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def read_chunks(path: Path, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    """The bytes of ``path`` from ``start`` to ``end`` (exclusive), read in worker threads: one hand-off for a
    file that fits in a chunk (opening, seeking and the first read happen together)."""
    remaining = None if end is None else end - start
    size = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
    handle, chunk = await asyncio.to_thread(_open_and_read, path, start, size)
    try:
        while chunk:
            yield chunk
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
            if len(chunk) < size:  # a short read is the end of the file
                break
            size = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
            chunk = await asyncio.to_thread(handle.read, size)
    finally:
        handle.close()


def _open_and_read(path: Path, start: int, size: int) -> tuple[BinaryIO, bytes]:
    handle = open(path, "rb")
    handle.seek(start)
    return handle, handle.read(size)
