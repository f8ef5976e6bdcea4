"""The folder backend (the default): instance files under ``<data-dir>/files/``, placed by an atomic rename and one
fsync, never over another file.

Layout under the data folder::

    files/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.{random}.dcm

Every store writes a new, uniquely named file: a file that is in place is never overwritten, and undoing a failed
store (removing its file) can never touch another store's file, whatever the timing. A crash between rename and commit
leaves at worst a file that no row names (``reconcile.py`` moves it to lost+found/ at the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path

from .temp import Spool, SpooledFile, _unlink_all, check_relative, read_chunks, sync, sync_folder


class FileStorage(Spool):
    """Instance files under ``<data-dir>``; paths in the database are relative to ``root``."""

    kind = "file"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.files = self.root / "files"

    def __repr__(self) -> str:
        return f"FileStorage({str(self.root)!r})"

    def describe(self) -> str:
        return f"files in {self.root}"

    def prepare(self) -> None:
        """Create the folders and sweep temp files a crash left behind."""
        self.files.mkdir(parents=True, exist_ok=True)
        self.prepare_temp()

    def absolute(self, relative_path: str) -> Path:
        """The absolute path of a stored file; refuses any path that could leave ``files/`` (checked lexically,
        without touching the disk: the folders under ``files/`` are made by this class from validated UIDs)."""
        return self.root.joinpath(*check_relative(relative_path))

    def local_path(self, relative_path: str) -> Path | None:
        return self.absolute(relative_path)

    @contextlib.contextmanager
    def local_copy(self, relative_path: str) -> Iterator[Path]:
        """The stored file itself: nothing to copy."""
        yield self.absolute(relative_path)

    def copy_now(self, relative_path: str, target: Path) -> None:
        """The stored file's bytes copied into ``target`` (blocking). FileNotFoundError if there is no such file."""
        shutil.copyfile(self.absolute(relative_path), target)

    def list_now(self) -> Iterator[tuple[str, int]]:
        """Every file under ``files/`` as found now, with its size (blocking); one removed meanwhile is left out."""
        for relative in stored_files(self.root):
            try:
                yield relative, (self.root / relative).stat().st_size
            except FileNotFoundError:
                continue

    def place_now(self, spooled: SpooledFile, relative_path: str) -> None:
        """Rename a received temp file to its place under ``files/`` and make it durable there (blocking; call from a
        worker thread). The rename comes first and then one fsync of the file: a journaling file system (ext4, XFS)
        writes the data and the new name in one journal commit, and the folders' fsyncs that follow find nothing left
        to write. A fsync for the data and another for the name cost two commits, and under concurrent stores each
        waits for the other stores' commits. On failure the file is gone (the store fails, nothing stays behind)."""
        target = self.absolute(relative_path)
        changed: list[Path] = []
        series_folder = target.parent
        if not series_folder.exists():
            study_folder = series_folder.parent
            if not study_folder.exists():
                changed.append(self.files)
            changed.append(study_folder)
            series_folder.mkdir(parents=True, exist_ok=True)
        os.rename(spooled.path, target)
        try:
            sync(target)
            for folder in [series_folder, *reversed(changed)]:  # deepest first
                sync_folder(folder)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    async def remove(self, relative_paths: Iterable[str]) -> None:
        paths = [self.absolute(p) for p in relative_paths]
        if paths:
            await asyncio.to_thread(_unlink_all, paths)

    def remove_now(self, relative_paths: Iterable[str]) -> None:
        _unlink_all([self.absolute(p) for p in relative_paths])

    async def read(self, relative_path: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in read_chunks(self.absolute(relative_path), start, end):
            yield chunk

    async def read_bytes(self, relative_path: str) -> bytes:
        return await asyncio.to_thread(self.absolute(relative_path).read_bytes)

    def read_ranges_now(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Byte ranges ``(offset, length)`` of the file (blocking); a range cut short by the file's end is short."""
        with self.absolute(relative_path).open("rb") as file:
            descriptor = file.fileno()
            return [os.pread(descriptor, length, offset) for offset, length in ranges]

    async def missing(self, relative_paths: Sequence[str]) -> list[str]:
        """Those of the paths that name no file."""
        paths = [(p, self.absolute(p)) for p in relative_paths]
        return await asyncio.to_thread(lambda: [p for p, path in paths if not path.is_file()])

    def check_writable(self) -> None:
        """Raise OSError unless a file can be created and fsynced in the temp folder (for /readyz)."""
        self.check_temp_writable()


def stored_files(root: Path) -> Iterator[str]:
    """The relative paths of the files under ``root/files`` (files/{Study}/{Series}/{name}), as found now."""
    files = root / "files"
    for study in entries(files):
        for series in entries(study):
            for name in entries(series):
                yield f"files/{study.name}/{series.name}/{name.name}"


def entries(folder: Path) -> list[Path]:
    """What ``folder`` holds now; nothing if it is gone (an emptied series removed) or is a file (a stray one)."""
    try:
        return [Path(entry.path) for entry in os.scandir(folder)]
    except (FileNotFoundError, NotADirectoryError):
        return []
