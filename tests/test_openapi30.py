"""dicomweb/openapi30.py: the JSON Schema 2020-12 keywords pydantic writes, said as OpenAPI 3.0 says them, so that
Swagger UI 4 renders the models as they are (the whole document's validity: tests/reporting/test_openapi.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from dicomweb import openapi30
from dicomweb.openapi30 import schema_30

REF = "#/components/schemas/{model}"


class Point(BaseModel):
    x: float


class Shape(BaseModel):
    kind: Literal["circle"] = "circle"
    radius: float = Field(gt=0, examples=[2.5])
    label: str | None = None
    center: Point | None = None
    points: list[Point | None] = []


def pydantic_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(model).json_schema(ref_template=REF)
    schema.pop("$defs", None)
    return schema


class TestSchema:
    """One model's schema, as pydantic writes it and in its 3.0 form."""

    def test_optional_value(self) -> None:
        """str | None: a nullable string."""
        label = schema_30(pydantic_schema(Shape))["properties"]["label"]
        assert label == {"type": "string", "nullable": True, "default": None, "title": "Label"}

    def test_optional_model(self) -> None:
        """Point | None: a nullable reference, the reference in an allOf (3.0 ignores what stands beside a $ref)."""
        center = schema_30(pydantic_schema(Shape))["properties"]["center"]
        assert center == {"allOf": [{"$ref": REF.format(model="Point")}], "nullable": True, "default": None}

    def test_nested(self) -> None:
        """Inside an array's items as well."""
        points = schema_30(pydantic_schema(Shape))["properties"]["points"]
        assert points["items"] == {"allOf": [{"$ref": REF.format(model="Point")}], "nullable": True}

    def test_const_examples_and_exclusive_bound(self) -> None:
        """A Literal is a one-value enum, examples its first example, gt=0 a minimum with exclusiveMinimum true."""
        properties = schema_30(pydantic_schema(Shape))["properties"]
        assert properties["kind"]["enum"] == ["circle"] and "const" not in properties["kind"]
        radius = properties["radius"]
        assert (radius["minimum"], radius["exclusiveMinimum"], radius["example"]) == (0, True, 2.5)
        assert "examples" not in radius

    def test_a_union_of_several_stays(self) -> None:
        """int | str | None: anyOf the two, nullable."""
        schema = schema_30(TypeAdapter(int | str | None).json_schema())
        assert schema == {"anyOf": [{"type": "integer"}, {"type": "string"}], "nullable": True}

    def test_unchanged(self) -> None:
        """A schema with nothing of 2020-12's own is left as it is, and the input is not changed."""
        original = pydantic_schema(Point)
        before = repr(original)
        assert schema_30(original) == original and repr(original) == before


def test_downgrade_document() -> None:
    """Every place of a document that holds a schema: components, parameters, request and response bodies."""
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    content = {"application/json": {"schema": nullable}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "paths": {
            "/a": {
                "get": {
                    "parameters": [{"name": "q", "in": "query", "schema": nullable}],
                    "requestBody": {"content": content},
                    "responses": {"200": {"description": "ok", "content": content}, "204": {"description": "none"}},
                }
            }
        },
        "components": {"schemas": {"A": nullable}},
    }
    out = openapi30.downgrade(document)
    expected = {"type": "string", "nullable": True}
    operation = out["paths"]["/a"]["get"]
    assert out["openapi"] == "3.0.3" and out["components"]["schemas"]["A"] == expected
    assert operation["parameters"][0]["schema"] == expected
    assert operation["requestBody"]["content"]["application/json"]["schema"] == expected
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == expected
    assert document["openapi"] == "3.1.0" and document["components"]["schemas"]["A"] == nullable
