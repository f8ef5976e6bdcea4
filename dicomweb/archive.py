"""The archive's resources (settings, database pool, file storage), created in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

from .config import Settings
from .storage import FileStorage


@dataclass(frozen=True)
class Archive:
    settings: Settings
    pool: asyncpg.Pool
    storage: FileStorage


def archive_of(request: Request) -> Archive:
    archive: Archive = request.state.archive
    return archive
