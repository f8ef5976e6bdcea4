"""Report templates: text with placeholders (workflow.PLACEHOLDERS) that a new report's findings are filled from.

An unknown placeholder is refused when the template is written (models.TemplateContent), not discovered when a
report is made. Deleting a template is soft, as the product describes it for a model with isActive: the template
becomes inactive (listed only under isActive=false, still read by id, no longer usable for a new report), the
reports made from it keep naming it, and a PUT of isActive true restores it.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import InvalidFields, NotFound
from dicomweb.state import archive_of

from . import http
from .db import templates as db
from .models import Template, TemplateCreate, TemplateQuery, TemplateUpdate

TEMPLATES = "/api/radiology/report-templates"
# Fields an update may not clear: the template needs them (null is refused, not taken as "unchanged").
_REQUIRED = ("name", "content", "is_active")


def _not_found(template_id: uuid.UUID) -> NotFound:
    return NotFound(f"no report template with id {template_id}")


async def list_templates(request: Request) -> Response:
    """GET /api/radiology/report-templates?modality=&bodyPart=&isActive=: the templates that match, by name (the
    active ones unless isActive=false)."""
    params = http.query(request, TemplateQuery)
    filters = db.Filters(
        modality=str(params.modality) if params.modality else None,
        body_part=params.body_part,
        is_active=params.is_active,
    )
    async with archive_of(request).pool.acquire() as conn:
        rows = await db.search(conn, filters)
    return http.ModelResponse([Template.model_validate(row) for row in rows])


async def get_template(request: Request) -> Response:
    """GET /api/radiology/report-templates/{id}: one template, active or not (so a deleted one can be found)."""
    template_id = http.path_id(request, "id", "report template")
    async with archive_of(request).pool.acquire() as conn:
        template = await db.get(conn, template_id)
    if template is None:
        raise _not_found(template_id)
    return http.ModelResponse(Template.model_validate(template))


async def create_template(request: Request) -> Response:
    """POST /api/radiology/report-templates: a new template (201); 400 names unknown placeholders."""
    body = await http.json_body(request, TemplateCreate)
    values = body.model_dump()
    values["modality"] = str(body.modality) if body.modality else None
    async with archive_of(request).pool.acquire() as conn:
        template = await db.insert(conn, values, http.caller(request).subject)
    location = f"{TEMPLATES}/{template['id']}"
    return http.ModelResponse(Template.model_validate(template), status_code=201, headers={"location": location})


async def update_template(request: Request) -> Response:
    """PUT /api/radiology/report-templates/{id}: change the fields given; the others keep their value (isActive true
    restores a deleted template)."""
    template_id = http.path_id(request, "id", "report template")
    body = await http.json_body(request, TemplateUpdate)
    changes = body.model_dump(exclude_unset=True)
    nulls = [name for name in _REQUIRED if name in changes and changes[name] is None]
    if nulls:
        fields = [Template.model_fields[name].alias or name for name in nulls]
        raise InvalidFields([{"field": field, "message": "may not be null"} for field in fields])
    if "modality" in changes:
        changes["modality"] = str(body.modality) if body.modality else None
    async with archive_of(request).pool.acquire() as conn:
        template = await db.update(conn, template_id, changes)
    if template is None:
        raise _not_found(template_id)
    return http.ModelResponse(Template.model_validate(template))


async def delete_template(request: Request) -> Response:
    """DELETE /api/radiology/report-templates/{id}: soft delete (204): the template becomes inactive; reports made
    from it keep its id."""
    template_id = http.path_id(request, "id", "report template")
    async with archive_of(request).pool.acquire() as conn:
        if not await db.soft_delete(conn, template_id):
            raise _not_found(template_id)
    return Response(status_code=204)
