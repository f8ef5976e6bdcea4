"""DELETE of a study, series or instance: not in PS3.18, but what Google's and Microsoft's DICOMweb services and
dicomweb-client's ``delete_*`` methods expect (204 on success, 404 for unknown UIDs).

Rows go first, in one transaction that keeps the aggregates exact (db.index.delete_instance); the files are
unlinked after the commit. A crash in between leaves files no row names (never a row without its file).
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from starlette.requests import Request
from starlette.responses import Response

from .archive import archive_of, not_stored
from .db import index, retrieve
from .uids import scope_of

log = logging.getLogger("dicomweb")


async def delete(request: Request) -> Response:
    study, series, sop = scope_of(request.path_params)
    archive = archive_of(request)
    async with archive.pool.acquire() as conn, conn.transaction():
        instances = await retrieve.instance_keys(conn, study, series, sop)
        if not instances:
            raise not_stored(study, series, sop)
        for pk, _ in instances:
            await index.delete_instance(conn, pk)
    await archive.storage.remove(path for _, path in instances)
    # Cached thumbnails are keyed by the stored file, so stale ones are never served; remove the study's anyway.
    await asyncio.to_thread(shutil.rmtree, archive.storage.root / "cache" / "thumbnails" / study, True)
    log.info("deleted %d instances of study %s", len(instances), study)
    return Response(status_code=204)
