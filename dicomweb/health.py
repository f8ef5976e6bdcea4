"""Probes for orchestrators: /healthz (the process answers) and /readyz (database reachable, storage writable; the
count of indexed instances without their file, if the last reconciliation found any)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ServiceUnavailable
from .reconcile import read_summary
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
        raise ServiceUnavailable(f"storage not writable: {exc.strerror or exc}") from None
    answer: dict[str, object] = {"status": "ready"}
    # Missing files make some instances unreadable, not the server: it stays ready, and says so.
    summary = await asyncio.to_thread(read_summary, archive.storage.root)
    if summary is not None and summary.missing_files:
        found = datetime.fromtimestamp(summary.finished_at, UTC).isoformat(timespec="seconds")
        answer["missing_files"] = summary.missing_files
        answer["detail"] = (
            f"{summary.missing_files} indexed instance(s) have no file (reconciled at {found}); "
            "`dicomweb check` lists them"
        )
    return JSONResponse(answer)
