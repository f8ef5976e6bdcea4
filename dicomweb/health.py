"""Probes for orchestrators: /healthz (the process answers) and /readyz (database reachable, storage writable)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ServiceUnavailable
from .state import archive_of

READY_TIMEOUT = 5.0  # seconds the readiness checks may take together


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    archive = archive_of(request)
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with archive.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:
        raise ServiceUnavailable(f"database not reachable: {exc}") from None
    try:
        await asyncio.to_thread(archive.storage.check_writable)
    except OSError as exc:
        raise ServiceUnavailable(f"storage not writable: {exc.strerror}") from None
    return JSONResponse({"status": "ready"})
