"""Durable file storage for instances: temp file, fsync, atomic rename, and never an overwrite.

Layout under the data folder::

    tmp/                                   files being received (removed on failure, swept at start-up)
    files/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.{sha256[:16]}.dcm

The UIDs are checked against the PS3.5 §9.1 grammar before they become path components, so no request can
name a path outside ``files/``. The file name carries a digest of the content: storing different bytes under a
known SOP Instance UID (DICOMWEB_DUPLICATES=overwrite) writes a new file beside the old one, so the stored copy is
never damaged, even if the database transaction that would switch to the new file fails.

All blocking file work runs in worker threads (``asyncio.to_thread``); nothing here touches the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .uids import is_valid_uid

TEMP_SUFFIX = ".part"


@dataclass(frozen=True)
class SpooledFile:
    """A received body part, complete and fsynced in ``tmp/``: where it is, how big, and its SHA-256."""

    path: Path
    size: int
    sha256: str


class TempWriter:
    """Receives one part's bytes into a temp file; every method does its file I/O in a worker thread."""

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

    async def finish(self) -> SpooledFile:
        """Flush and fsync the file, so that it survives a crash once renamed into place."""
        await asyncio.to_thread(self._finish)
        return SpooledFile(self.path, self.size, self._hash.hexdigest())

    def _finish(self) -> None:
        if self._file is None:
            self._file = open(self.path, "xb")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    async def abort(self) -> None:
        await asyncio.to_thread(self._abort)

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
        self.path.unlink(missing_ok=True)


class FileStorage:
    """Instance files under ``<data-dir>``; paths in the database are relative to ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.files = self.root / "files"
        self.tmp = self.root / "tmp"

    def prepare(self) -> None:
        """Create the folders and sweep temp files a crash may have left behind."""
        self.files.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.glob("*" + TEMP_SUFFIX):
            leftover.unlink(missing_ok=True)

    def temp_writer(self) -> TempWriter:
        return TempWriter(self.tmp / f"{uuid.uuid4().hex}{TEMP_SUFFIX}")

    def relative_path(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, sha256: str
    ) -> str:
        for uid in (study_instance_uid, series_instance_uid, sop_instance_uid):
            if not is_valid_uid(uid):
                raise ValueError(f"refusing to build a path from an invalid UID {uid!r}")
        return f"files/{study_instance_uid}/{series_instance_uid}/{sop_instance_uid}.{sha256[:16]}.dcm"

    def absolute(self, relative_path: str) -> Path:
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.files):
            raise ValueError(f"stored path {relative_path!r} is outside the storage folder")
        return path

    async def place(self, spooled: SpooledFile, relative_path: str) -> None:
        """Rename a spooled temp file into place, then fsync the folders so the new name is durable."""
        await asyncio.to_thread(self._place, spooled.path, self.absolute(relative_path))

    def _place(self, source: Path, target: Path) -> None:
        series_folder, study_folder = target.parent, target.parent.parent
        new_series, new_study = not series_folder.exists(), not study_folder.exists()
        series_folder.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)  # a same-named target has the same content (the name carries the digest)
        _fsync_dir(series_folder)
        if new_series:
            _fsync_dir(study_folder)
        if new_study:
            _fsync_dir(self.files)

    async def remove(self, relative_path: str) -> None:
        await asyncio.to_thread(self.absolute(relative_path).unlink, True)

    async def discard(self, spooled: SpooledFile) -> None:
        await asyncio.to_thread(spooled.path.unlink, True)

    def check_writable(self) -> None:
        """Raise OSError unless a file can be created and fsynced in the temp folder (for /readyz)."""
        probe = self.tmp / f"readyz-{uuid.uuid4().hex}{TEMP_SUFFIX}"
        with open(probe, "xb") as f:
            f.write(b"ok")
            os.fsync(f.fileno())
        probe.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
