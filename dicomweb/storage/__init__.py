"""Where stored instances live: one ``Storage`` interface, two backends (uvicorn's ``protocols/`` pattern).

- ``file.py``: a folder under the data folder (the default, ``DICOMWEB_STORAGE=file``);
- ``s3.py``: objects in an S3-compatible bucket (``DICOMWEB_STORAGE=s3``).

Both receive into the local ``tmp/`` (``temp.py``): a part is spooled, hashed and parsed there, then *placed* under
its final relative path (``files/<study>/<series>/<sop>.<random>.dcm``) before its row commits, and removed if the
commit fails. On S3 a part larger than one multipart part is also uploaded while it arrives, and placing it
completes that upload (``SpooledFile.upload``). Readers stream a stored file or read byte ranges of it through the
interface; those that need a file (pydicom in the CPU processes, DIMSE sending) take ``local_copy``, the file itself
for the folder, a temp copy for an object. The rows name the same relative paths whichever backend holds them.
"""

from __future__ import annotations

import asyncio
import configparser
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from .file import FileStorage
from .temp import (
    CHUNK_BYTES,
    IN_MEMORY_BYTES,
    STALE_TEMP_SECONDS,
    TEMP_SUFFIX,
    SpooledFile,
    TempWriter,
    Upload,
    cleanup,
    read_chunks,
    sync,
    sync_folder,
    temp_name,
    temp_owner,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "CHUNK_BYTES",
    "IN_MEMORY_BYTES",
    "STALE_TEMP_SECONDS",
    "TEMP_SUFFIX",
    "FileStorage",
    "SpooledFile",
    "Storage",
    "TempWriter",
    "Upload",
    "cleanup",
    "local_file",
    "open_storage",
    "read_chunks",
    "sync",
    "sync_folder",
    "temp_name",
    "temp_owner",
]


class Storage(Protocol):
    """What the archive asks of a backend. Blocking methods (``*_now``, ``local_copy``, ``prepare``) run in worker
    threads; the others are awaited on the event loop. ``list_now`` and ``copy_now`` (every stored file with its size,
    one file's bytes into a local file) are what ``dicomweb backup`` reads an archive with."""

    kind: str  # "file" or "s3"
    root: Path  # the local data folder: tmp/, the thumbnail cache, the check's summary
    tmp: Path

    def describe(self) -> str: ...
    def prepare(self) -> None: ...
    def temp_writer(self) -> TempWriter: ...
    def spool_copy(self, source: Path | BinaryIO, head: bytes = b"", start: int = 0) -> SpooledFile: ...
    def new_path(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str: ...
    def path_for(
        self, spooled: SpooledFile, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> str: ...
    async def discard(self, spooled: Iterable[SpooledFile]) -> None: ...
    def place_now(self, spooled: SpooledFile, relative_path: str) -> None: ...
    async def remove(self, relative_paths: Iterable[str]) -> None: ...
    def remove_now(self, relative_paths: Iterable[str]) -> None: ...
    def read(self, relative_path: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...
    async def read_bytes(self, relative_path: str) -> bytes: ...
    def read_ranges_now(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]: ...
    def local_path(self, relative_path: str) -> Path | None: ...
    def local_copy(self, relative_path: str) -> AbstractContextManager[Path]: ...
    def copy_now(self, relative_path: str, target: Path) -> None: ...
    def list_now(self) -> Iterator[tuple[str, int]]: ...
    async def missing(self, relative_paths: Sequence[str]) -> list[str]: ...
    def check_writable(self) -> None: ...


def open_storage(settings: Settings) -> Storage:
    """The backend the settings name (not yet prepared: ``Storage.prepare`` in a worker thread)."""
    if settings.storage == "file":
        return FileStorage(settings.data_dir)
    from .s3 import S3Bucket, S3Location, S3Storage

    if not settings.s3_bucket:
        raise ValueError("DICOMWEB_STORAGE=s3 needs DICOMWEB_S3_BUCKET")
    access_key_id, secret_access_key = _credentials(settings)
    location = S3Location(
        settings.s3_bucket,
        endpoint=settings.s3_endpoint or None,
        prefix=settings.s3_prefix,
        region=settings.s3_region,
        path_style=settings.s3_path_style,
    )
    bucket = S3Bucket(location, access_key_id=access_key_id, secret_access_key=secret_access_key)
    return S3Storage(settings.data_dir, bucket)


def _credentials(settings: Settings) -> tuple[str | None, str | None]:
    """The key pair of DICOMWEB_S3_CREDENTIALS_FILE (AWS shared-credentials format: the profile AWS_PROFILE names, or
    [default]); none without a file, and obstore reads the AWS_* variables itself."""
    if not settings.s3_credentials_file:
        return None, None
    parser = configparser.ConfigParser(interpolation=None)
    path = Path(settings.s3_credentials_file)
    if not parser.read(path):
        raise ValueError(f"DICOMWEB_S3_CREDENTIALS_FILE: cannot read {path}")
    profile = os.environ.get("AWS_PROFILE", "default")
    if not parser.has_section(profile):
        raise ValueError(f"DICOMWEB_S3_CREDENTIALS_FILE: {path} has no [{profile}] profile")
    section = parser[profile]
    access_key_id, secret_access_key = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not access_key_id or not secret_access_key:
        raise ValueError(
            f"DICOMWEB_S3_CREDENTIALS_FILE: [{profile}] of {path} needs aws_access_key_id and aws_secret_access_key"
        )
    return access_key_id, secret_access_key


@asynccontextmanager
async def local_file(storage: Storage, relative_path: str) -> AsyncIterator[Path]:
    """A stored file as a local path for the block (for pydicom, in a worker thread or the CPU processes): the file
    itself for the folder, a temp copy downloaded in a worker thread for an object (removed afterwards)."""
    path = storage.local_path(relative_path)
    if path is not None:
        yield path
        return
    manager = storage.local_copy(relative_path)
    path = await asyncio.to_thread(manager.__enter__)
    try:
        yield path
    finally:
        await cleanup(_exit, manager)


def _exit(manager: AbstractContextManager[Path]) -> None:
    manager.__exit__(None, None, None)
