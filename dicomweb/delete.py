"""DELETE of a study, series or instance: not in PS3.18, but what Google's and Microsoft's DICOMweb services and
dicomweb-client's ``delete_*`` methods expect (204 on success, 404 for unknown UIDs).

Rows go first, in one transaction that keeps the aggregates exact; the files are unlinked after the commit
(archive.delete_rows, Archive.remove_files).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from .archive import archive_of, delete_rows, not_stored
from .uids import scope_of

log = logging.getLogger("dicomweb")


async def delete(request: Request) -> Response:
    study, series, sop = scope_of(request.path_params)
    archive = archive_of(request)
    async with archive.pool.acquire() as conn, conn.transaction():
        paths = await delete_rows(conn, study, series, sop)
        if not paths:
            raise not_stored(study, series, sop)
    await archive.remove_files(study, paths)
    log.info("deleted %d instances of study %s", len(paths), study)
    return Response(status_code=204)
