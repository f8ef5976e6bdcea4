"""jsonapi.py: validation errors name the field a client has to fix (the reporting API's models as the cases)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from dicomweb.errors import InvalidFields
from dicomweb.jsonapi import validate
from reporting.models import AnnotationInput, StudyCreate

ANNOTATION = TypeAdapter(AnnotationInput)


def fields(data: object, model: Any) -> list[str]:
    with pytest.raises(InvalidFields) as raised:
        validate(data, model)
    return [error["field"] for error in raised.value.extra["errors"]]


class TestValidate:
    def test_union_type_missing_or_unknown(self) -> None:
        """An annotation without a known type: the field to fix is "type", not the whole body."""
        assert fields({"coordinates": {"points": []}}, ANNOTATION) == ["type"]
        assert fields({"type": "star"}, ANNOTATION) == ["type"]

    def test_nested_field_path_without_the_tag(self) -> None:
        """A bad point of an ROI is named by its path, without the union's tag."""
        body = {"type": "roi", "coordinates": {"points": [{"x": -1, "y": 0}, {"x": 1, "y": 0}, {"x": 0, "y": 1}]}}
        assert fields(body, ANNOTATION) == ["coordinates.points.0.x"]

    def test_body_not_an_object(self) -> None:
        assert fields([1, 2], StudyCreate) == ["(body)"]
