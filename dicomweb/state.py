"""The HTTP app's lifespan state: the archive its lifespan opened (app.py), reached by endpoints with ``archive_of``;
and who is calling (``subject_of``), as the authentication middleware left it in the request's state."""

from __future__ import annotations

from typing import TypedDict

from starlette.requests import Request

from .archive import Archive

ANONYMOUS = "anonymous"  # the caller's name when authentication is disabled (local demos only)


class State(TypedDict):
    archive: Archive


def archive_of(request: Request) -> Archive:
    """The archive this request is served from (Starlette copies the lifespan state into ``request.state``)."""
    archive: Archive = request.state.archive
    return archive


def subject_of(request: Request) -> str:
    """Who is calling: the verified token's subject (auth.py), or ANONYMOUS with authentication disabled."""
    principal = getattr(request.state, "principal", None)
    return principal.subject if principal is not None else ANONYMOUS
