"""Images of the reporting API: archived instances named by their SOPInstanceUID, and their stored files."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from dicomweb.archive import archive_of
from dicomweb.audit import note_study
from dicomweb.errors import DicomwebError, NotFound

from .db import studies as db

log = logging.getLogger("dicomweb")

DICOM_MEDIA_TYPE = "application/dicom"  # PS3.10 files (RFC 3240)


async def load_image(request: Request, sop_instance_uid: str, conn: Any) -> dict[str, Any]:
    """The archived instance (404 if unknown), named in the request's audit event."""
    image = await db.image(conn, sop_instance_uid)
    if image is None:
        raise NotFound(f"no image with SOPInstanceUID {sop_instance_uid[:80]!r} is stored")
    note_study(request, image["study_instance_uid"], image["patient_id"])
    return image


async def image_file(request: Request) -> Response:
    """GET /api/radiology/images/{imageId}/file: the stored PS3.10 file, byte for byte, as a download."""
    archive = archive_of(request)
    async with archive.pool.acquire() as conn:
        image = await load_image(request, request.path_params["imageId"], conn)
    path = archive.storage.absolute(image["file_path"])
    if not await asyncio.to_thread(path.is_file):
        log.error("stored file missing: %s", path)
        raise DicomwebError(f"the stored file of image {image['sop_instance_uid']} is missing from the storage")
    # Streamed from disk in chunks (never whole in memory), with Range support for resumed downloads.
    return FileResponse(
        path,
        media_type=DICOM_MEDIA_TYPE,
        filename=f"{image['sop_instance_uid']}.dcm",
        content_disposition_type="attachment",
    )
