"""The HTTP app's lifespan state: the archive its lifespan opened (app.py), reached by endpoints with ``archive_of``."""

from __future__ import annotations

from typing import TypedDict

from starlette.requests import Request

from .archive import Archive


class State(TypedDict):
    archive: Archive


def archive_of(request: Request) -> Archive:
    """The archive this request is served from (Starlette copies the lifespan state into ``request.state``)."""
    archive: Archive = request.state.archive
    return archive
