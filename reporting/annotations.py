"""Image annotations: text, arrows, circles, measurements and regions of interest drawn on an archived image.

The shapes are validated by the models (``AnnotationInput``); this module checks the image (it must be stored, and
a frame number within its frames) and who may change an annotation: its author, or an admin.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import Forbidden, InvalidFields, NotFound
from dicomweb.state import archive_of

from . import http
from .db import annotations as db
from .lookup import load_image
from .models import Annotation, AnnotationInput

_INPUT: TypeAdapter[AnnotationInput] = TypeAdapter(AnnotationInput)


def _shape(body: AnnotationInput, number_of_frames: int) -> db.Shape:
    """What the body draws; 400 when it names a frame the image does not have."""
    if body.frame_number is not None and body.frame_number > number_of_frames:
        frames = "1 frame" if number_of_frames == 1 else f"{number_of_frames} frames"
        raise InvalidFields(
            [{"field": "frameNumber", "message": f"the image has {frames}; frameNumber {body.frame_number} is beyond"}]
        )
    return db.Shape(
        type=body.type,
        coordinates=body.coordinates.model_dump(mode="json"),
        frame_number=body.frame_number,
        label=body.label,
        color=body.color,
    )


def _model(row: dict[str, Any]) -> Annotation:
    return Annotation.model_validate({**row, "image_id": row["sop_instance_uid"]})


async def create_annotation(request: Request) -> Response:
    """POST /api/radiology/images/{imageId}/annotations (201)."""
    body = await http.json_body(request, _INPUT)
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        image = await load_image(request, request.path_params["imageId"], conn)
        frames = await db.lock_image(conn, image["sop_instance_uid"])
        if frames is None:  # deleted since it was read
            raise NotFound(f"no image with SOPInstanceUID {image['sop_instance_uid']} is stored")
        row = await db.insert(conn, image["sop_instance_uid"], _shape(body, frames), http.caller(request).subject)
    location = f"/api/radiology/annotations/{row['id']}"
    return http.ModelResponse(_model(row), status_code=201, headers={"location": location})


async def image_annotations(request: Request) -> Response:
    """GET /api/radiology/images/{imageId}/annotations: the image's annotations, oldest first."""
    async with archive_of(request).pool.acquire() as conn:
        image = await load_image(request, request.path_params["imageId"], conn)
        rows = await db.for_image(conn, image["sop_instance_uid"])
    return http.ModelResponse([_model(row) for row in rows])


async def _load_own(request: Request, conn: Any) -> tuple[dict[str, Any], int]:
    """The annotation the path names, locked, and its image's number of frames, if the caller may change it:
    404 if unknown, 403 if not theirs. The image is locked before the annotation, in the order a deletion of the
    image takes them (instance row, then its annotations), so the two wait for each other instead of deadlocking."""
    annotation_id: uuid.UUID = http.path_id(request, "id", "annotation")
    row = await db.get(conn, annotation_id)
    frames = await db.lock_image(conn, row["sop_instance_uid"]) if row else None
    row = await db.get(conn, annotation_id, lock=True) if frames is not None else None
    if row is None or frames is None:
        raise NotFound(f"no annotation with id {annotation_id}")
    await load_image(request, row["sop_instance_uid"], conn)  # names the study in the audit event
    caller = http.caller(request)
    if row["created_by"] != caller.subject and not caller.is_admin:
        raise Forbidden(f"only the annotation's author ({row['created_by']}) or an admin may change or delete it")
    return row, frames


async def update_annotation(request: Request) -> Response:
    """PUT /api/radiology/annotations/{id}: replace what the annotation draws (author or admin)."""
    body = await http.json_body(request, _INPUT)
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        row, frames = await _load_own(request, conn)
        row = await db.update(conn, row["id"], _shape(body, frames))
    return http.ModelResponse(_model(row))


async def delete_annotation(request: Request) -> Response:
    """DELETE /api/radiology/annotations/{id} (author or admin; 204)."""
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        row, _ = await _load_own(request, conn)
        await db.delete(conn, row["id"])
    return Response(status_code=204)
