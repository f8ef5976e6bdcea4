"""What every reporting endpoint does at its edges: read a JSON body or query into a model (400 listing each invalid
field), answer with a model as camelCase JSON, and know who is calling."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest, InvalidFields, NotFound, PayloadTooLarge, UnsupportedMediaType
from dicomweb.permissions import Role
from dicomweb.tokens import Principal

M = TypeVar("M")

MAX_JSON_BYTES = 2 * 1024 * 1024  # a JSON body larger than this is refused (413); reports are text, not images
ANONYMOUS = "anonymous"  # the caller's name when authentication is disabled (local demos only)


def _errors(exc: ValidationError) -> InvalidFields:
    errors = []
    for error in exc.errors(include_url=False):
        # Discriminated unions put the tag ("roi") in the location; the field path reads better without it.
        location = [str(part) for part in error["loc"] if part not in _UNION_TAGS]
        if not location and error["type"].startswith("union_tag"):  # a missing or unknown "type" of a union
            location = ["type"]
        errors.append({"field": ".".join(location) or "(body)", "message": error["msg"]})
    return InvalidFields(errors)


_UNION_TAGS = frozenset({"text", "arrow", "circle", "measurement", "roi"})


async def json_body(request: Request, model: type[M] | TypeAdapter[M]) -> M:
    """The request's JSON body as ``model``; 415 for another media type, 400 naming each invalid field."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"send the body as application/json, not {media_type or 'no Content-Type'}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"a JSON body may have at most {MAX_JSON_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    return validate(data, model)


def validate(data: Any, model: type[M] | TypeAdapter[M]) -> M:
    adapter: TypeAdapter[M] = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise _errors(exc) from None


def query(request: Request, model: type[M]) -> M:
    """The query string as ``model``: each parameter once; unknown parameters are 400 like unknown fields."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params:
            raise InvalidFields([{"field": name, "message": "given more than once"}])
        params[name] = value
    return validate(params, model)


def path_id(request: Request, name: str, what: str) -> uuid.UUID:
    """A UUID path parameter; anything else names no resource (404)."""
    value = request.path_params[name]
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} with id {value[:80]!r}") from None


class ModelResponse(Response):
    """A model (or a list of them) as camelCase JSON."""

    media_type = "application/json"

    def render(self, content: BaseModel | Sequence[BaseModel]) -> bytes:
        if isinstance(content, BaseModel):
            return orjson.dumps(content.model_dump(mode="json", by_alias=True))
        return orjson.dumps([item.model_dump(mode="json", by_alias=True) for item in content])


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
