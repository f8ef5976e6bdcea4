"""The reporting URL table (/api/radiology): each endpoint with the models it reads and answers, from which the
OpenAPI document is generated (openapi.py), so that the documentation is the code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from . import models, openapi, studies

API_ROOT = "/api/radiology"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # below API_ROOT
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    body: Any = None  # the request body's model (a pydantic model or annotated type); None: no body
    response: Any = None  # the success response's model; None: no body
    status: int = 200  # the success status
    query: Any = None  # the model of the query parameters


ENDPOINTS: list[Endpoint] = [
    # Studies and their workflow
    Endpoint(
        "POST", "/studies", studies.create_study, "Schedule a study", models.StudyCreate, models.Study, status=201
    ),
    Endpoint(
        "GET",
        "/studies",
        studies.list_studies,
        "Search studies",
        None,
        models.Page[models.Study],
        query=models.StudyQuery,
    ),
    Endpoint(
        "GET", "/studies/{id}", studies.get_study, "A study with its series and reports", None, models.StudyDetail
    ),
    Endpoint(
        "PUT",
        "/studies/{id}/status",
        studies.change_status,
        "Move a study through its workflow (409 lists the allowed next states)",
        models.StudyStatusChange,
        models.Study,
    ),
    Endpoint(
        "DELETE",
        "/studies/{id}",
        studies.delete_study,
        "Delete a study with its images (files included), annotations and reports",
        status=204,
    ),
    Endpoint("GET", "/studies/{id}/images", studies.study_images, "The study's images", None, list[models.Image]),
    Endpoint(
        "POST",
        "/studies/{studyId}/series",
        studies.create_series,
        "Announce a series of the study",
        models.SeriesCreate,
        models.Series,
        status=201,
    ),
    Endpoint(
        "GET", "/modalities", studies.modalities, "The modalities a study may have", None, list[models.ModalityInfo]
    ),
]


def routes() -> list[BaseRoute]:
    openapi_json, api_docs = openapi.handlers(openapi.document(ENDPOINTS, API_ROOT))
    return [
        Route("/api/openapi.json", openapi_json, methods=["GET"]),
        Route("/api-docs", api_docs, methods=["GET"]),
        Mount(API_ROOT, routes=[Route(e.path, e.handler, methods=[e.method]) for e in ENDPOINTS]),
    ]
