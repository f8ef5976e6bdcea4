"""The storage commitment requests modalities made, and what became of their reports (``dicomweb/dimse/
commitment_reports.py``): for managers to see which are pending, and which were abandoned."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from dicomweb.db import commitment as db
from dicomweb.state import archive_of

from . import http
from .models import Page, StorageCommitment, StorageCommitmentQuery


async def list_storage_commitments(request: Request) -> Response:
    """GET /api/radiology/storage-commitments?state=&page=&limit=: newest first."""
    params = http.query(request, StorageCommitmentQuery)
    async with archive_of(request).pool.acquire() as conn:
        rows, total = await db.search(conn, params.state, params.limit, (params.page - 1) * params.limit)
    items = [StorageCommitment.model_validate(row) for row in rows]
    return http.ModelResponse(Page[StorageCommitment](items=items, total=total, page=params.page, limit=params.limit))
