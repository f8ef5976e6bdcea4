"""Images of the reporting API: archived instances named by their SOPInstanceUID, and their stored files."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from dicomweb.errors import DicomwebError
from dicomweb.state import archive_of

from .lookup import load_image

log = logging.getLogger("dicomweb")

DICOM_MEDIA_TYPE = "application/dicom"  # PS3.10 files (RFC 3240)


async def image_file(request: Request) -> Response:
    """GET /api/radiology/images/{imageId}/file: the stored PS3.10 file, byte for byte, as a download."""
    archive = archive_of(request)
    async with archive.pool.acquire() as conn:
        image = await load_image(request, request.path_params["imageId"], conn)
    storage = archive.storage
    if await storage.missing([image["file_path"]]):
        log.error("stored file missing: %s", image["file_path"])
        raise DicomwebError(f"the stored file of image {image['sop_instance_uid']} is missing from the storage")
    path = storage.local_path(image["file_path"])
    if path is None:  # an object: streamed as it is read (no Range support on S3 yet)
        filename = f"{image['sop_instance_uid']}.dcm"
        return StreamingResponse(
            storage.read(image["file_path"]),
            media_type=DICOM_MEDIA_TYPE,
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )
    # Streamed from disk in chunks (never whole in memory), with Range support for resumed downloads.
    return FileResponse(
        path,
        media_type=DICOM_MEDIA_TYPE,
        filename=f"{image['sop_instance_uid']}.dcm",
        content_disposition_type="attachment",
    )
