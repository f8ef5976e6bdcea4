"""Stored files made present elsewhere under the same relative paths, for ``dicomweb backup`` and ``restore``: an
archive's files (a data folder's, a bucket's) in a backup folder and a backup's files in a data folder (``Mirror``),
or a backup's files in a bucket (``Upload``).

A stored file is never changed in place and its name has a random part (``storage/``), so a file already present
under its name, and of its size where the listing gives one, is the same file: it is not copied again, and a second
backup into the same folder, or a restore run again after it stopped, costs only what is new. A copy is written as a
``.part`` file, fsynced and renamed, so a file present under its name is whole; an upload is an object that appears
whole or not at all, never over another. Copies, downloads and uploads go IN_FLIGHT at once, each in a worker
thread: they wait on the disk or the object store, and release the GIL meanwhile.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from pathlib import Path
from typing import TypeVar

from .storage import FileStorage, Storage, sync, sync_folder
from .storage.s3 import S3Storage

IN_FLIGHT = 8  # files copied, downloaded or uploaded at once (worker threads)
PART_SUFFIX = ".part"  # a copy being written; renamed into place once complete and fsynced
# Errors of os.link that say "copy instead": another file system, one without hard links, too many links to the file.
NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})

Item = TypeVar("Item")
Result = TypeVar("Result")


class Added(enum.Enum):
    """What making one file present did."""

    PRESENT = "present"  # it was there already: nothing done
    LINKED = "linked"
    COPIED = "copied"  # copied from a folder, or downloaded from a bucket
    GONE = "gone"  # the source no longer has it (deleted since it was listed)


class Mirror:
    """Files of a storage area (an archive's data folder or bucket, a backup folder) made present in a folder under
    the same relative paths: hard-linked where both are folders on one file system (instant, no space), else copied
    or downloaded, and fsynced."""

    def __init__(self, source: Storage, target: Path, link: bool = True) -> None:
        self.source = source
        self.target = target
        self.link = link
        self.linked = 0
        self.copied = 0
        self._changed: set[Path] = set()

    def add_all(self, files: Iterable[tuple[str, int | None]]) -> list[str]:
        """Make each file (a relative path and its size, None for any size) present; those the source no longer
        has (blocking). Whether a file is there, and a hard link, are quicker done here than handed to a thread; only
        copies and downloads are."""
        gone: list[str] = []

        def lacking() -> Iterator[str]:
            for relative, size in files:
                added = self._present_or_linked(relative, size)
                if added is None:
                    yield relative
                else:
                    self._count(relative, added, gone)

        for relative, added in in_flight(self._copy, lacking()):
            self._count(relative, added, gone)
        return gone

    def _present_or_linked(self, relative: str, size: int | None) -> Added | None:
        """PRESENT, LINKED or GONE; None if the file is to be copied."""
        target = self.target / relative
        if _present(target, size):
            return Added.PRESENT
        local = self.source.local_path(relative) if self.link else None
        if local is None:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(local, target)
        except FileNotFoundError:
            return Added.GONE
        except OSError as exc:
            if exc.errno not in NO_LINK:
                raise
            self.link = False  # copy this file and every later one
            return None
        return Added.LINKED

    def _copy(self, relative: str) -> tuple[str, Added]:
        """Copy or download the file into a ``.part``, fsync it and rename it into place (in a worker thread)."""
        target = self.target / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + PART_SUFFIX)
        try:
            self.source.copy_now(relative, part)
        except FileNotFoundError:
            return relative, Added.GONE
        sync(part)
        os.rename(part, target)
        return relative, Added.COPIED

    def _count(self, relative: str, added: Added, gone: list[str]) -> None:
        if added is Added.GONE:
            gone.append(relative)
            return
        if added is Added.LINKED:
            self.linked += 1
        elif added is Added.COPIED:
            self.copied += 1
        else:
            return
        self._changed.add((self.target / relative).parent)

    def sync(self) -> None:
        """Make the new names durable: each changed folder fsynced once, deepest first (then the ones naming it)."""
        folders = set(self._changed)
        for folder in self._changed:
            folders.update(p for p in folder.parents if p.is_relative_to(self.target))
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder.exists():  # not emptied and removed by ``backup.prune`` meanwhile
                sync_folder(folder)
        self._changed.clear()


def _present(target: Path, size: int | None) -> bool:
    """Whether ``target`` is there (of ``size``, unless None); a file of another size, damaged, is removed."""
    try:
        found = target.stat().st_size
    except FileNotFoundError:
        return False
    if size is None or found == size:
        return True
    target.unlink()
    return False


class Upload:
    """A backup's files put into a bucket under the same keys, never over an object (``S3Storage.put_now``); an
    object the bucket held under a key before, of the file's size (``present``), is that file, put there by a
    restore that stopped part way, and is not put again."""

    def __init__(self, source: FileStorage, target: S3Storage, present: Mapping[str, int]) -> None:
        self.source = source
        self.target = target
        self.present = present
        self.copied = 0

    def add_all(self, files: Iterable[tuple[str, int]]) -> None:
        """Upload each file (a relative path and its size) the bucket lacks (blocking)."""
        lacking = (relative for relative, size in files if self.present.get(relative) != size)
        for _ in in_flight(self._put, lacking):
            self.copied += 1

    def _put(self, relative: str) -> None:
        self.target.put_now(self.source.absolute(relative), relative)


def in_flight(work: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
    """``work`` on every item, IN_FLIGHT at once in worker threads, the next item taken only as one is done (a
    listing of a million objects is never held whole); the results as they come. An error ends it once the work in
    flight is done."""
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        running: set[Future[Result]] = set()
        for item in items:
            if len(running) == IN_FLIGHT:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
            running.add(pool.submit(work, item))
        for future in as_completed(running):
            yield future.result()
