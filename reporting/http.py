"""What the reporting endpoints share at their edges besides what every JSON API does (``dicomweb.jsonapi``: bodies and
queries read into models, models answered as camelCase JSON, re-exported here): UUID path parameters, and who is
calling."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from starlette.requests import Request

from dicomweb.errors import NotFound
from dicomweb.jsonapi import ModelResponse as ModelResponse
from dicomweb.jsonapi import json_body as json_body
from dicomweb.jsonapi import query as query
from dicomweb.jsonapi import validate as validate
from dicomweb.permissions import Role
from dicomweb.state import ANONYMOUS
from dicomweb.tokens import Principal


def path_id(request: Request, name: str, what: str) -> uuid.UUID:
    """A UUID path parameter; anything else names no resource (404)."""
    value = request.path_params[name]
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} with id {value[:80]!r}") from None


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's subject and roles (with authentication disabled, an anonymous admin)."""

    subject: str
    roles: frozenset[Role]

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


def caller(request: Request) -> Caller:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        return Caller(ANONYMOUS, frozenset({Role.ADMIN}))
    return Caller(principal.subject, principal.roles)
