"""The OpenAPI document in version 3.0, for Swagger UI (``swagger.py``): the Swagger UI that ``swagger-ui-bundle``
ships (4.x) renders only 3.0 documents, and ours is 3.1, whose schemas are JSON Schema 2020-12 as pydantic writes
them. The few 2020-12 keywords pydantic uses are rewritten as the 3.0 Schema Object says them (OpenAPI 3.0.3
§4.7.24); everything else is the same document."""

from __future__ import annotations

import copy
from typing import Any

VERSION = "3.0.3"
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_NULL = {"type": "null"}


def downgrade(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the 3.1 ``document`` as OpenAPI 3.0.3."""
    out = copy.deepcopy(document)
    out["openapi"] = VERSION
    schemas = out.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        schemas[name] = schema_30(schema)
    for operations in out["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                parameter["schema"] = schema_30(parameter["schema"])
            bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
            for media in (media for body in bodies for media in body.get("content", {}).values()):
                media["schema"] = schema_30(media["schema"])
    return out


def schema_30(schema: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema 2020-12 schema as a 3.0 Schema Object: ``{"type": "null"}`` in an anyOf/oneOf becomes
    ``nullable``, ``const`` a one-value ``enum``, ``examples`` its first ``example``, a numeric
    ``exclusiveMinimum``/``exclusiveMaximum`` the 3.0 boolean beside ``minimum``/``maximum``."""
    out = dict(schema)
    for key in _SUBSCHEMA_LISTS:
        if key in out:
            choices = [schema_30(choice) for choice in out[key] if choice != _NULL]
            if len(choices) < len(out[key]):
                out["nullable"] = True
            if len(choices) == 1 and key != "allOf":
                del out[key]
                only = choices[0]
                # A 3.0 $ref ignores the keywords beside it (§4.7.25): nullable needs it inside an allOf.
                out.update({"allOf": [only]} if "$ref" in only else only)
            else:
                out[key] = choices
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out:
        out["example"] = out.pop("examples")[0]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
            out[limit], out[bound] = out[bound], True
    if "properties" in out:
        out["properties"] = {name: schema_30(value) for name, value in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = schema_30(out[key])
    return out
