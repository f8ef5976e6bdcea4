"""DELETE of a study, series or instance: not in PS3.18, but what Google's and Microsoft's DICOMweb services and
dicomweb-client's ``delete_*`` methods expect (204 on success, 404 for unknown UIDs).

The workflow (rows in one transaction, files unlinked after the commit) is services/delete.py's.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .services.delete import delete_instances
from .state import archive_of
from .uids import scope_of


async def delete(request: Request) -> Response:
    study, series, sop = scope_of(request.path_params)
    await delete_instances(archive_of(request), study, series, sop)
    return Response(status_code=204)
