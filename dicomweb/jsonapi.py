"""The JSON APIs beside DICOMweb (the reporting API, the DICOM nodes): each described once as a table of endpoints,
from which its routes and its part of the OpenAPI document (``openapi.py``) are made, so that the documentation is
the code; and what every such endpoint does at its edges: read a JSON body or a query into a pydantic model (400
naming each invalid field), answer with a model as camelCase JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .actions import Action
from .errors import BadRequest, InvalidFields, PayloadTooLarge, UnsupportedMediaType
from .permissions import Permission
from .routing import Route
from .uids import is_valid_uid

M = TypeVar("M")

MAX_JSON_BYTES = 2 * 1024 * 1024  # a JSON body larger than this is refused (413); reports are text, not images


@dataclass(frozen=True)
class Endpoint:
    """One operation: its method and path (below its table's root; "" is the root itself), the models it reads
    and answers, and what the route needs (``routing.Route``)."""

    method: str
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    body: Any = None  # the request body's model (a pydantic model or annotated type); None: no body
    response: Any = None  # the success response's model; None: no body
    status: int = 200  # the success status
    query: Any = None  # the model of the query parameters
    also: tuple[int, ...] = ()  # other success statuses with the same body (201 when a PUT created the resource)
    errors: tuple[int, ...] = ()  # error statuses of this operation besides its table's
    permission: Permission = field(kw_only=True)  # every operation needs a token (no public endpoint here)
    action: Action = field(kw_only=True)  # and leaves an audit event


@dataclass(frozen=True)
class EndpointTable:
    """The endpoints of one API below ``root``, what the API is for (a line of the OpenAPI document), and the
    error statuses any of its operations may answer."""

    root: str
    summary: str
    endpoints: Sequence[Endpoint]
    errors: tuple[int, ...] = (400, 401, 403, 404)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(self.root + e.path, e.handler, methods=[e.method], permission=e.permission, action=e.action)
            for e in self.endpoints
        ]


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise ValueError("not a valid DICOM UID (PS3.5 §9.1: digits and dots, at most 64 characters)")
    return value


UID = Annotated[str, AfterValidator(_uid)]  # a field holding a DICOM UID


class RequestModel(BaseModel):
    """A request body: camelCase on the wire, snake_case in Python; unknown fields are refused (a typo is not
    silently dropped)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ResponseModel(BaseModel):
    """A response body: camelCase on the wire, built from database rows (whose other columns are not shown)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


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
    """``data`` as ``model``, or InvalidFields naming each invalid field (a dotted path) and why."""
    adapter: TypeAdapter[M] = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise _errors(exc, _union_tags(adapter.core_schema, set())) from None


def query(request: Request, model: type[M]) -> M:
    """The query string as ``model``: each parameter once; unknown parameters are 400 like unknown fields."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params:
            raise InvalidFields([{"field": name, "message": "given more than once"}])
        params[name] = value
    return validate(params, model)


class ModelResponse(Response):
    """A model (or a list of them) as camelCase JSON."""

    media_type = "application/json"

    def render(self, content: BaseModel | Sequence[BaseModel]) -> bytes:
        if isinstance(content, BaseModel):
            return orjson.dumps(content.model_dump(mode="json", by_alias=True))
        return orjson.dumps([item.model_dump(mode="json", by_alias=True) for item in content])


def _errors(exc: ValidationError, tags: set[str]) -> InvalidFields:
    errors = []
    for error in exc.errors(include_url=False):
        # Discriminated unions put the tag ("roi") in the location; the field path reads better without it.
        location = [str(part) for part in error["loc"] if part not in tags]
        if not location and error["type"].startswith("union_tag"):  # a missing or unknown "type" of a union
            location = ["type"]
        errors.append({"field": ".".join(location) or "(body)", "message": error["msg"]})
    return InvalidFields(errors)


def _union_tags(schema: Any, found: set[str]) -> set[str]:
    """The tags of the discriminated unions anywhere in a pydantic core schema."""
    if isinstance(schema, dict):
        if schema.get("type") == "tagged-union":
            found.update(str(tag) for tag in schema["choices"])
        for value in schema.values():
            _union_tags(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _union_tags(value, found)
    return found
