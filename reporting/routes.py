"""The reporting URL table (/api/radiology): each endpoint with the models it reads and answers, the permission it
needs and the action its audit event records, from which the routes and the OpenAPI document are generated
(openapi.py), so that the documentation is the code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount

from dicomweb.actions import Action
from dicomweb.permissions import Permission
from dicomweb.routing import Route

from . import annotations as annotation_endpoints  # "annotations" is taken by the __future__ import
from . import images, models, openapi, reports, studies, templates, uploads

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
    permission: Permission = field(kw_only=True)  # every operation needs a token (no public endpoint here)
    action: Action = field(kw_only=True)  # and leaves an audit event


ENDPOINTS: list[Endpoint] = [
    # Studies and their workflow
    Endpoint(
        "POST",
        "/studies",
        studies.create_study,
        "Schedule a study",
        models.StudyCreate,
        models.Study,
        status=201,
        permission=Permission.CREATE,
        action=Action.CREATE,
    ),
    Endpoint(
        "GET",
        "/studies",
        studies.list_studies,
        "Search studies",
        None,
        models.Page[models.Study],
        query=models.StudyQuery,
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "GET",
        "/studies/{id}",
        studies.get_study,
        "A study with its series and reports",
        None,
        models.StudyDetail,
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "PUT",
        "/studies/{id}/status",
        studies.change_status,
        "Move a study through its workflow (409 lists the allowed next states)",
        models.StudyStatusChange,
        models.Study,
        permission=Permission.EDIT,
        action=Action.UPDATE,
    ),
    Endpoint(
        "DELETE",
        "/studies/{id}",
        studies.delete_study,
        "Delete a study with its images (files included), annotations and reports",
        status=204,
        permission=Permission.MANAGE,
        action=Action.DELETE,
    ),
    Endpoint(
        "GET",
        "/studies/{id}/images",
        studies.study_images,
        "The study's images",
        None,
        list[models.Image],
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "POST",
        "/studies/{studyId}/series",
        studies.create_series,
        "Announce a series of the study",
        models.SeriesCreate,
        models.Series,
        status=201,
        permission=Permission.CREATE,
        action=Action.CREATE,
    ),
    Endpoint(
        "GET",
        "/modalities",
        studies.modalities,
        "The modalities a study may have",
        None,
        list[models.ModalityInfo],
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    # Reports: written, edited under If-Match (428 without, 409 when stale), signed, amended by addenda
    Endpoint(
        "POST",
        "/studies/{studyId}/report",
        reports.create_report,
        "Write a report on the study (a template fills the findings)",
        models.ReportCreate,
        models.Report,
        status=201,
        permission=Permission.REPORT,
        action=Action.CREATE,
    ),
    Endpoint(
        "GET",
        "/studies/{studyId}/reports",
        reports.study_reports,
        "The study's reports",
        None,
        list[models.Report],
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "GET",
        "/reports/{id}",
        reports.get_report,
        "A report with its versions and addenda (ETag: its version)",
        None,
        models.ReportDetail,
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "PUT",
        "/reports/{id}",
        reports.update_report,
        "Change a report that is not final, naming the version read (If-Match or version)",
        models.ReportUpdate,
        models.Report,
        permission=Permission.REPORT,
        action=Action.UPDATE,
    ),
    Endpoint(
        "POST",
        "/reports/{id}/verify",
        reports.verify_report,
        "Sign the report as final (the completed study becomes reported)",
        None,
        models.Report,
        permission=Permission.VERIFY,
        action=Action.CREATE,
    ),
    Endpoint(
        "POST",
        "/reports/{id}/addendum",
        reports.create_addendum,
        "Add an addendum to a final report",
        models.AddendumCreate,
        models.Report,
        status=201,
        permission=Permission.REPORT,
        action=Action.CREATE,
    ),
    # Report templates
    Endpoint(
        "GET",
        "/report-templates",
        templates.list_templates,
        "Search report templates",
        None,
        list[models.Template],
        query=models.TemplateQuery,
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "POST",
        "/report-templates",
        templates.create_template,
        "Add a report template (400 names unknown placeholders)",
        models.TemplateCreate,
        models.Template,
        status=201,
        permission=Permission.MANAGE,
        action=Action.CREATE,
    ),
    Endpoint(
        "GET",
        "/report-templates/{id}",
        templates.get_template,
        "A report template",
        None,
        models.Template,
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "PUT",
        "/report-templates/{id}",
        templates.update_template,
        "Change a report template (fields left out keep their value)",
        models.TemplateUpdate,
        models.Template,
        permission=Permission.MANAGE,
        action=Action.UPDATE,
    ),
    Endpoint(
        "DELETE",
        "/report-templates/{id}",
        templates.delete_template,
        "Delete a report template (reports made from it keep its id)",
        status=204,
        permission=Permission.MANAGE,
        action=Action.DELETE,
    ),
    # Uploads: multipart/form-data with one file field "file" (a DICOM file, or a JPEG/PNG picture stored as a
    # Secondary Capture instance) and optional text fields; at most DICOMWEB_MAX_UPLOAD_MB (413)
    Endpoint(
        "POST",
        "/series/{seriesId}/images",
        uploads.upload_to_series,
        "Upload an image into a series (multipart/form-data: file; instanceNumber, optional)",
        None,
        models.UploadResult,
        status=201,
        permission=Permission.UPLOAD,
        action=Action.STORE,
    ),
    Endpoint(
        "POST",
        "/studies/{studyId}/upload",
        uploads.upload_to_study,
        "Upload an image into the study (multipart/form-data: file; seriesNumber and instanceNumber, optional; "
        "the series is announced when needed, pictures without seriesNumber go to an 'Uploaded pictures' series)",
        None,
        models.UploadResult,
        status=201,
        permission=Permission.UPLOAD,
        action=Action.STORE,
    ),
    # Images and their annotations (an image is an archived instance, named by its SOPInstanceUID)
    Endpoint(
        "GET",
        "/images/{imageId}/file",
        images.image_file,
        "The image's stored DICOM file (application/dicom)",
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "POST",
        "/images/{imageId}/annotations",
        annotation_endpoints.create_annotation,
        "Annotate an image (text, arrow, circle, measurement or roi)",
        models.AnnotationInput,
        models.Annotation,
        status=201,
        permission=Permission.ANNOTATE,
        action=Action.CREATE,
    ),
    Endpoint(
        "GET",
        "/images/{imageId}/annotations",
        annotation_endpoints.image_annotations,
        "The image's annotations",
        None,
        list[models.Annotation],
        permission=Permission.VIEW,
        action=Action.READ,
    ),
    Endpoint(
        "PUT",
        "/annotations/{id}",
        annotation_endpoints.update_annotation,
        "Replace an annotation (its author or an admin; 403 for anyone else)",
        models.AnnotationInput,
        models.Annotation,
        permission=Permission.ANNOTATE,
        action=Action.UPDATE,
    ),
    Endpoint(
        "DELETE",
        "/annotations/{id}",
        annotation_endpoints.delete_annotation,
        "Delete an annotation (its author or an admin; 403 for anyone else)",
        status=204,
        permission=Permission.ANNOTATE,
        action=Action.DELETE,
    ),
]


def routes() -> list[BaseRoute]:
    openapi_json, api_docs = openapi.handlers(openapi.document(ENDPOINTS, API_ROOT))
    return [
        # The document and its page: no patient data, for clients to read before they have a token.
        Route("/api/openapi.json", openapi_json, methods=["GET"], permission=None, action=None),
        Route("/api-docs", api_docs, methods=["GET"], permission=None, action=None),
        Mount(
            API_ROOT,
            routes=[
                Route(e.path, e.handler, methods=[e.method], permission=e.permission, action=e.action)
                for e in ENDPOINTS
            ],
        ),
    ]
