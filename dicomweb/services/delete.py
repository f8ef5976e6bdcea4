"""Deleting stored instances, for DICOMweb's DELETE (dicomweb/delete.py) and the reporting API's study deletion.

Rows go first, in one transaction that keeps the aggregates exact; the files are unlinked after the commit. A crash
in between leaves files no row names, never a row without its file.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

import asyncpg

from ..archive import Archive
from ..db import index
from ..db import retrieve as db
from .retrieve import NotStored

log = logging.getLogger("dicomweb")


async def delete_instances(archive: Archive, study: str, series: str | None, sop: str | None) -> int:
    """Delete the study, series or instance with its files; how many instances were deleted (NotStored if none)."""
    async with archive.pool.acquire() as conn, conn.transaction():
        paths = await delete_rows(conn, study, series, sop)
        if not paths:
            raise NotStored(study, series, sop)
    archive.known_series.forget()  # a series may be gone with its rows
    await remove_files(archive, study, paths)
    log.info("deleted %d instances of study %s", len(paths), study)
    return len(paths)


async def delete_rows(conn: asyncpg.Connection, study: str, series: str | None, sop: str | None) -> list[str]:
    """Delete the rows of the instances in scope (aggregates kept exact) in the caller's transaction; their file
    paths, for ``remove_files`` once the transaction has committed."""
    instances = await db.instance_keys(conn, study, series, sop)
    for pk, _ in instances:
        await index.delete_instance(conn, pk)
    return [path for _, path in instances]


async def remove_files(archive: Archive, study: str, paths: list[str]) -> None:
    """After the commit of a deletion: unlink the instances' files and the study's cached thumbnails."""
    await archive.storage.remove(paths)
    # Cached thumbnails are keyed by the stored file, so stale ones are never served; remove the study's anyway.
    await asyncio.to_thread(shutil.rmtree, archive.storage.root / "cache" / "thumbnails" / study, True)
