"""Where stored instances are, for every retrieve (WADO-RS, rendered, WADO-URI; later C-GET and C-MOVE).

A lookup of what is not stored raises ``NotStored``, naming what is missing; a stored file gone from the storage
raises ``FilesMissing``, a fault of the archive. ``dicomweb/errors.py`` answers them as 404 and 500.

The locations of recently read instances (their file and frame index) are kept in memory, in the archive's
``Locations``: a viewer asks for every frame of a series one request at a time. Stored files never change (every
store has a new name), so an entry is right as long as its file exists; ``read_located`` asks the database again
when it does not.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..db import retrieve as db
from ..db.retrieve import StoredFile

if TYPE_CHECKING:  # archive.py imports this module (for Locations), not the other way round
    from ..archive import Archive

log = logging.getLogger("dicomweb")

T = TypeVar("T")

KEPT_LOCATIONS = 4096  # instances whose locations are kept in memory (a few hundred bytes each, more for
# multi-frame instances: one pair of numbers per fragment)
# The first instance of a series asked for brings the locations of the whole series when it has at most this many
# instances: one query instead of one per instance for a viewer that reads them all.
SERIES_LOCATIONS = 1000

# A stored instance's file, and its frame index (None when the store recorded none).
Location = tuple[StoredFile, list[Any] | None]


class NotStored(LookupError):
    """The study, series or instance asked for is not stored; the message names which."""

    def __init__(self, study: str, series: str | None = None, sop: str | None = None) -> None:
        if sop is not None:
            message = f"instance {sop} of series {series} in study {study} is not stored"
        elif series is not None:
            message = f"series {series} of study {study} is not stored"
        else:
            message = f"study {study} is not stored"
        super().__init__(message)
        self.study_instance_uid = study
        self.series_instance_uid = series
        self.sop_instance_uid = sop


class FilesMissing(Exception):
    """Files the index names are gone from the storage: a fault of the archive, not of the request (logged loudly
    where found); nothing the caller can change."""


class Locations:
    """Where recently read instances are, by (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID); the least
    recently used are dropped past KEPT_LOCATIONS. One per archive (``open_archive`` makes it)."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str, str], Location] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> Location | None:
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
        return found

    def keep(self, key: tuple[str, str, str], location: Location) -> None:
        self._kept[key] = location
        self._kept.move_to_end(key)
        if len(self._kept) > KEPT_LOCATIONS:
            self._kept.popitem(last=False)

    def forget(self, key: tuple[str, str, str]) -> None:
        self._kept.pop(key, None)

    def __len__(self) -> int:
        return len(self._kept)


async def locate(archive: Archive, study: str, series: str, sop: str, fresh: bool = False) -> Location:
    """Where one stored instance is: its file and frame index; NotStored when it is not stored. Kept in memory for
    the next request (``fresh`` asks the database again)."""
    key = (study, series, sop)
    if not fresh and (found := archive.locations.get(key)) is not None:
        return found
    whole_series = 0 if fresh else SERIES_LOCATIONS  # a fresh look is for an instance replaced or deleted
    async with archive.pool.acquire() as conn:
        rows = await db.instance_frames(conn, study, series, sop, whole_series)
    if not rows:
        archive.locations.forget(key)
        raise NotStored(study, series, sop)
    located = {uid: (stored, orjson.loads(frames) if frames is not None else None)
               for uid, (stored, frames) in rows.items()}  # fmt: skip
    for uid, location in located.items():
        if uid != sop:
            archive.locations.keep((study, series, uid), location)
    archive.locations.keep(key, located[sop])  # last: the most recently used
    return located[sop]


async def read_located(
    archive: Archive,
    study: str,
    series: str,
    sop: str,
    read: Callable[[StoredFile, list[Any] | None], Awaitable[T]],
) -> tuple[StoredFile, T]:
    """``read`` the instance where it is known to be. Its file gone means it was replaced or deleted since: ask
    the database where it is now and read there (NotStored if it is no more); a file still missing is the
    FilesMissing of ``check_files``."""
    stored, index = await locate(archive, study, series, sop)
    try:
        return stored, await read(stored, index)
    except FileNotFoundError:
        stored, index = await locate(archive, study, series, sop, fresh=True)
    try:
        return stored, await read(stored, index)
    except FileNotFoundError:
        await check_files(archive, [stored])  # logs and raises FilesMissing
        raise


async def stored_files(archive: Archive, study: str, series: str | None, sop: str | None) -> list[StoredFile]:
    """The stored files in scope, in series and instance order; NotStored naming what is not stored."""
    async with archive.pool.acquire() as conn:
        files = await db.files(conn, study, series, sop)
    if not files:
        raise NotStored(study, series, sop)
    return files


async def check_files(archive: Archive, files: list[StoredFile]) -> None:
    """A stored file gone missing is a fault of the archive (FilesMissing), found before an answer starts, and
    logged loudly."""
    missing = await archive.storage.missing([f.file_path for f in files])
    if missing:
        log.error("stored files missing: %s", ", ".join(map(str, missing[:20])))
        raise FilesMissing(f"{len(missing)} stored files are missing from the archive's storage")
