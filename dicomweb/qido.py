"""QIDO-RS, the Search transaction (PS3.18 §10.6): studies, series and instances, as DICOM JSON.

The endpoints parse the query parameters (query.py) and the UIDs of the path, and answer what the search service
(services/search.py: matching, the attributes returned, the caps) finds. No match: 200 with ``[]`` (PS3.18 2026a
Table 11.9.3-1). Ignored match keys and answers cut by the server's cap are named in ``Warning: 299`` headers.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from . import media
from .attributes import Level
from .query import Query, parse
from .responses import DicomJSONResponse
from .services.search import SearchResult, search
from .state import archive_of
from .uids import require_uid
from .urls import base_url


async def search_studies(request: Request) -> Response:
    return await _search(request, Level.STUDY)


async def search_series(request: Request) -> Response:
    return await _search(request, Level.SERIES)


async def search_instances(request: Request) -> Response:
    return await _search(request, Level.INSTANCE)


async def _search(request: Request, level: Level) -> Response:
    response_type = media.negotiate(request.headers.get("accept"), (media.DICOM_JSON, media.JSON))
    scope = {k: require_uid(v, k) for k, v in request.path_params.items()}
    query = parse(request.query_params.multi_items(), level)
    archive = archive_of(request)
    found = await search(archive, query, scope, base_url(request, archive.settings.public_url))
    return DicomJSONResponse(found.results, headers=_warnings(request, query, found), media_type=response_type)


def _warnings(request: Request, query: Query, found: SearchResult) -> dict[str, str]:
    """Warning: 299 headers (RFC 7234 §5.5) for ignored keys and capped answers, as dcm4chee words them."""
    agent = request.url.netloc or "dicomweb"
    texts = []
    if query.ignored:
        names = ", ".join(sorted(set(query.ignored)))[:500]
        texts.append(f"The following attributes are not supported for matching and were ignored: {names}")
    if found.more > 0:
        at_least = "at least " if found.more_at_least else ""
        texts.append(f"There are {at_least}{found.more} additional results that can be requested")
    if not texts:
        return {}
    return {"warning": ", ".join(f'299 {agent} "{t}"' for t in texts)}
