"""The records an endpoint acts on, found by the ids in its path (404 when unknown) and named in the request's audit
event; and an archived image as the API shows it. Shared by the endpoint modules, which do not import each other."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request

from dicomweb.audit import note_study
from dicomweb.errors import NotFound
from dicomweb.state import archive_of
from dicomweb.urls import DICOMWEB_ROOT, base_url

from .db import studies as db
from .models import Image, ImageLinks


async def load_study(request: Request, study_id: uuid.UUID, conn: Any, lock: bool = False) -> dict[str, Any]:
    """The workflow study (with ``lock``, its row locked for the transaction)."""
    study = await db.get(conn, study_id, lock=lock)
    if study is None:
        raise NotFound(f"no radiology study with id {study_id}")
    note_study(request, study["study_instance_uid"], study["patient_id"])
    return study


async def load_image(request: Request, sop_instance_uid: str, conn: Any) -> dict[str, Any]:
    """The archived instance named by its SOPInstanceUID."""
    image = await db.image(conn, sop_instance_uid)
    if image is None:
        raise NotFound(f"no image with SOPInstanceUID {sop_instance_uid[:80]!r} is stored")
    note_study(request, image["study_instance_uid"], image["patient_id"])
    return image


def image_model(request: Request, row: dict[str, Any]) -> Image:
    """An archived instance with the absolute URLs a viewer fetches it by: DICOMweb (PS3.18 §10.4), WADO-URI (§9)
    and the file endpoint."""
    root = base_url(request, archive_of(request).settings.public_url)
    study, series, sop = row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]
    instance = f"{root}/studies/{study}/series/{series}/instances/{sop}"
    server = root.removesuffix(DICOMWEB_ROOT)
    links = ImageLinks(
        metadata=f"{instance}/metadata",
        frames=f"{instance}/frames/1",
        rendered=f"{instance}/rendered",
        thumbnail=f"{instance}/thumbnail",
        file=f"{server}/api/radiology/images/{sop}/file",
        wado_uri=f"{server}/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
        "&contentType=application%2Fdicom",
    )
    return Image.model_validate({**row, "id": sop, "links": links})
