"""The archive's resources (settings, database pool, file storage), created in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from starlette.requests import Request

from .config import Settings
from .storage import FileStorage

T = TypeVar("T")


@dataclass(frozen=True)
class Archive:
    settings: Settings
    pool: asyncpg.Pool
    storage: FileStorage
    # Processes for CPU-heavy pixel work (transcoding, decoding), so it neither holds the GIL of the process that
    # serves requests nor stalls its event loop.
    cpu: Executor

    async def in_process(self, function: Callable[..., T], *args: Any) -> T:
        """Run a picklable top-level function in the CPU process pool."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, function, *args)


def archive_of(request: Request) -> Archive:
    archive: Archive = request.state.archive
    return archive
