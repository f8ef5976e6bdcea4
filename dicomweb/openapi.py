"""The OpenAPI 3.1 document of the JSON APIs (the reporting API, the DICOM nodes) and a plain page of it, both
generated at start-up from their endpoint tables (``jsonapi.EndpointTable``) and pydantic models, so that neither can
drift from the code; Swagger UI, the page to try them in, is ``swagger.py``. The DICOMweb services themselves
(``/dicomweb``) are the standard's, PS3.18, and not in it."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute

from . import __version__, openapi30
from .jsonapi import Endpoint, EndpointTable
from .routing import Route

_REF = "#/components/schemas/{model}"
TITLE = "DICOMweb archive: JSON APIs"
# What each error status means, for the operations that may answer it (EndpointTable.errors, Endpoint.errors).
_ERROR_STATUSES = {
    400: "Invalid request: the body lists each invalid field (errors[].field, errors[].message)",
    401: "No token, or a token that is not valid (WWW-Authenticate: Bearer)",
    403: "The token's roles lack the permission this operation needs",
    404: "No such resource",
    409: "The change conflicts with the workflow or with a concurrent change",
    502: "The DICOM node did not answer, or refused the association (the detail says which)",
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["status", "error", "detail"],
    "properties": {
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "allowedTransitions": {"type": "array", "items": {"type": "string"}},
    },
}


def _schema(annotation: Any, components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(annotation).json_schema(by_alias=True, ref_template=_REF, mode=mode)  # type: ignore[arg-type]
    components.update(schema.pop("$defs", {}))
    if "title" in schema and "properties" in schema:  # a model: refer to it, as its fields are shown once
        # A component's name matches [a-zA-Z0-9._-]+ (OpenAPI 3.1, Components Object): a generic model, whose title
        # is Page[Study], is named Page_Study_, as pydantic names it in $defs.
        name = re.sub(r"[^a-zA-Z0-9._-]", "_", schema["title"])
        components[name] = schema
        return {"$ref": _REF.format(model=name)}
    return schema


def _parameters(endpoint: Endpoint, components: dict[str, Any]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", endpoint.path)
    ]
    if endpoint.query is not None:
        schema = TypeAdapter(endpoint.query).json_schema(by_alias=True, ref_template=_REF)
        components.update(schema.pop("$defs", {}))
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return parameters


def _tag(table: EndpointTable, endpoint: Endpoint) -> str:
    """The operation's group: the first segment of its path below the root, else (the root itself, or a parameter
    first) the root's last segment."""
    first = endpoint.path.strip("/").split("/")[0]
    return first if first and not first.startswith("{") else table.root.rstrip("/").rsplit("/", 1)[-1]


def _operation(table: EndpointTable, endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "Success"}
    if endpoint.response is not None:
        success["content"] = {"application/json": {"schema": _schema(endpoint.response, components, "serialization")}}
    responses: dict[str, Any] = {str(status): success for status in (endpoint.status, *endpoint.also)}
    for status in sorted({*table.errors, *endpoint.errors}):
        description = _ERROR_STATUSES[status]
        if status == 403:
            description = f"The token's roles lack {endpoint.permission}, which this operation needs"
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
        }
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "description": (endpoint.handler.__doc__ or "").strip(),
        "operationId": endpoint.handler.__name__,
        "tags": [_tag(table, endpoint)],
        "parameters": _parameters(endpoint, components),
        "responses": responses,
        "security": [{"bearer": []}],
        "x-permission": endpoint.permission.value,
        "x-audit-action": endpoint.action.value,
    }
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(endpoint.body, components, "validation")}},
        }
    return operation


def document(tables: Sequence[EndpointTable]) -> dict[str, Any]:
    """The OpenAPI document of the endpoints of ``tables``, each below its root."""
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for table in tables:
        for endpoint in table.endpoints:
            path = table.root + endpoint.path
            paths.setdefault(path, {})[endpoint.method.lower()] = _operation(table, endpoint, components)
    apis = "; ".join(f"{table.root}: {table.summary}" for table in tables)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": __version__,
            "description": f"The JSON APIs around the DICOMweb archive ({apis}). Every operation needs a bearer "
            "token (JWT) whose roles grant the permission named in x-permission, and leaves an event in the audit "
            "trail (GET /api/audit) with the action named in x-audit-action. Errors have one shape: {status, "
            "error, detail}, plus errors[] for invalid fields. The DICOMweb services (/dicomweb) follow PS3.18 and "
            "are not described here.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def routes(tables: Sequence[EndpointTable]) -> list[BaseRoute]:
    """The document of ``tables`` as JSON (/api/openapi.json), in its 3.0 form for Swagger UI (/api/openapi-3.0.json,
    ``openapi30.py``; the UI itself is ``swagger.py``'s /api-docs) and as a plain page to read (/api-docs/plain: no
    scripts, nothing loaded from elsewhere); all rendered once, as the tables do not change. They hold no patient
    data, and clients read them before they have a token: public, not audited."""
    doc = document(tables)
    body, body_30, page = orjson.dumps(doc), orjson.dumps(openapi30.downgrade(doc)), _page(doc)

    async def openapi_json(request: Request) -> Response:
        return Response(body, media_type="application/json")

    async def openapi_30_json(request: Request) -> Response:
        return Response(body_30, media_type="application/json")

    async def plain_page(request: Request) -> Response:
        return HTMLResponse(page)

    return [
        Route("/api/openapi.json", openapi_json, methods=["GET"], permission=None, action=None),
        Route("/api/openapi-3.0.json", openapi_30_json, methods=["GET"], permission=None, action=None),
        Route("/api-docs/plain", plain_page, methods=["GET"], permission=None, action=None),
    ]


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{html.escape(name)}">{html.escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if "oneOf" in schema:
        return " | ".join(_type(s) for s in schema["oneOf"])
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(html.escape(repr(v)) for v in schema["enum"])
    if "const" in schema:
        return html.escape(repr(schema["const"]))
    kind = str(schema.get("type", "any"))
    if "format" in schema:
        kind += f" ({schema['format']})"
    return html.escape(kind)


def _page(doc: dict[str, Any]) -> str:
    out = [
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(doc['info']['title'])}</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
        "code,td{font-family:ui-monospace,monospace;font-size:13px}table{border-collapse:collapse;margin:.5rem 0}"
        "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}"
        ".m{font-weight:bold;display:inline-block;width:4.5rem}h3{margin-bottom:.2rem}</style>",
        f"<h1>{html.escape(doc['info']['title'])} <small>{html.escape(doc['info']['version'])}</small></h1>",
        f"<p>{html.escape(doc['info']['description'])}</p>",
        '<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI 3.1). To try the calls: '
        '<a href="/api-docs">/api-docs</a> (Swagger UI).</p>',
        "<h2>Operations</h2>",
    ]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            out.append(f"<h3><span class=m>{method.upper()}</span><code>{html.escape(path)}</code></h3>")
            out.append(
                f"<p>{html.escape(op['summary'])}. Needs <code>{op['x-permission']}</code>; "
                f"audited as <code>{op['x-audit-action']}</code>.</p>"
            )
            if op["description"]:
                out.append(f"<p><small>{html.escape(op['description'])}</small></p>")
            query = [p for p in op["parameters"] if p["in"] == "query"]
            if query:
                out.append("<table><tr><th>query parameter<th>type")
                out.extend(f"<tr><td>{html.escape(p['name'])}<td>{_type(p['schema'])}" for p in query)
                out.append("</table>")
            if "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]["schema"]
                out.append(f"<p>Body: {_type(body)}</p>")
            for status, response in op["responses"].items():
                if status.startswith("2"):
                    content = response.get("content", {}).get("application/json")
                    shown = _type(content["schema"]) if content else "no body"
                    out.append(f"<p>Answer: {status}, {shown}</p>")
    out.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        out.append(f'<h3 id="schema-{html.escape(name)}">{html.escape(name)}</h3>')
        if schema.get("description"):
            out.append(f"<p>{html.escape(schema['description'])}</p>")
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", []))
            out.append("<table><tr><th>field<th>type<th>required<th>notes")
            for field, prop in properties.items():
                notes = html.escape(str(prop.get("description", "")))
                out.append(
                    f"<tr><td>{html.escape(field)}<td>{_type(prop)}<td>{'yes' if field in required else ''}<td>{notes}"
                )
            out.append("</table>")
        elif "enum" in schema:
            out.append(f"<p>One of {_type(schema)}.</p>")
    return "\n".join(out)
