"""WADO-URI, the URI Service (PS3.18 §9): ``GET /wado?requestType=WADO&studyUID=&seriesUID=&objectUID=``.

Two transactions share the URL and differ by the selected media type (§9.3): Retrieve DICOM Instance
(``application/dicom``, §9.4) and Retrieve Rendered Instance (``image/jpeg``, ``image/png``, ``image/gif``, §9.5).
The ``contentType`` parameter chooses, else the ``accept`` parameter or the Accept header; with neither (or ``*/*``)
the default is ``image/jpeg`` (§9.3). Cornerstone's ``wadouri:`` loader asks for
``contentType=application/dicom&transferSyntax=*``.

For ``application/dicom`` the transfer syntax is ``transferSyntax`` (``*``: the stored bytes), by default Explicit VR
Little Endian (§8.7.3.4). A syntax the archive cannot produce falls back to Explicit VR Little Endian, and, with no
decoder for the stored pixel data, to the stored syntax (§8.7.3.4 Note 2 allows that for compressed data): this
transaction returns one file, and legacy clients expect a file rather than an error. Pixel data that turns out not
to decode is sent as stored in the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping

from pydicom.uid import ExplicitVRLittleEndian
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from . import frames, media
from .archive import Archive
from .db import retrieve
from .errors import BadRequest, DicomwebError
from .render_stored import render_instance
from .rendering import DEFAULT_QUALITY, MAX_VIEWPORT, RENDERED_TYPES, Rendering, make_window, parse_int, parse_number
from .services.retrieve import stored_files
from .state import archive_of
from .storage import local_file
from .transcode import CannotTranscode, can_transcode, transcode
from .uids import require_uid

log = logging.getLogger("dicomweb")

# PS3.18 §9.3: image/jpeg first, so that no contentType and Accept */* (or none) select Retrieve Rendered Instance.
OFFERED = (RENDERED_TYPES[0], media.DICOM, *RENDERED_TYPES[1:])
UID_PARAMETERS = ("studyUID", "seriesUID", "objectUID")  # PS3.18 Table 9.1.2-1, all mandatory


async def retrieve_wado(request: Request) -> Response:
    """GET /wado?requestType=WADO&studyUID=...&seriesUID=...&objectUID=...[&contentType=...]."""
    params = request.query_params
    request_type = params.get("requestType")
    if request_type != "WADO":
        # PS3.18 §9.1.2.1.1: another value is 400 when the server does not support it.
        shown = "missing" if request_type is None else f"{request_type[:40]!r}"
        raise BadRequest(f"requestType is {shown}; this URI service answers requestType=WADO")
    missing = [name for name in UID_PARAMETERS if not params.get(name)]
    if missing:
        raise BadRequest(f"missing query parameter{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    study, series, sop = (require_uid(params[name], name) for name in UID_PARAMETERS)
    if params.get("anonymize") is not None:
        # Answering with the identifiable instance the client asked to have de-identified would be worse than 400.
        raise BadRequest("anonymize is not supported by this archive")
    media_type = _media_type(request)
    rendering, frame = _rendering(params) if media_type != media.DICOM else (Rendering(), 1)
    archive = archive_of(request)
    if media_type == media.DICOM:
        files = await stored_files(archive, study, series, sop)
        return await _dicom(archive, files[0], params.get("transferSyntax"))
    try:
        body = await render_instance(archive, study, series, sop, frame, rendering, media_type)
    except BadRequest as exc:  # the one the renderer raises: a frame the instance does not have
        raise BadRequest(f"frameNumber: {exc.detail}") from None
    return Response(body, media_type=media_type)


def _media_type(request: Request) -> str:
    """``contentType`` (one or more media types), else ``accept``, else the Accept header (PS3.18 §9.3, §8.3.3.1)."""
    params = request.query_params
    for name in ("contentType", "accept"):
        values = params.getlist(name)
        if values:
            return media.negotiate(",".join(values), OFFERED)
    return media.negotiate(request.headers.get("accept"), OFFERED)


def _rendering(params: Mapping[str, str]) -> tuple[Rendering, int]:
    """PS3.18 §9.5.1.2 rendering parameters: rows, columns, region, windowCenter/windowWidth, frameNumber,
    imageQuality. ``annotation``, ``charset``, ``presentationUID`` and ``presentationSeriesUID`` are ignored."""
    get = params.get
    center, width = get("windowCenter"), get("windowWidth")
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth go together: send both or neither")
    window = None
    if center is not None and width is not None:
        # The URI service's window is the linear one of PS3.3 C.11.2.1.2.1.
        center_value, width_value = parse_number(center, "windowCenter"), parse_number(width, "windowWidth")
        window = make_window(center_value, width_value, "linear", "windowWidth")
    rows, columns, region, quality = get("rows"), get("columns"), get("region"), get("imageQuality")
    rendering = Rendering(
        window=window,
        max_width=parse_int(columns, "columns", 1, MAX_VIEWPORT) if columns is not None else None,
        max_height=parse_int(rows, "rows", 1, MAX_VIEWPORT) if rows is not None else None,
        region=_region(region) if region is not None else None,
        quality=parse_int(quality, "imageQuality", 1, 100) if quality is not None else DEFAULT_QUALITY,
    )
    frame_number = get("frameNumber")
    frame = parse_int(frame_number, "frameNumber", 1, frames.MAX_FRAME_NUMBER) if frame_number is not None else 1
    return rendering, frame


def _region(text: str) -> tuple[float, float, float, float]:
    """PS3.18 §9.5.1.2 ``region=x0,y0,x1,y1``: the top left and bottom right corners as fractions of the columns and
    rows (0.0 to 1.0)."""
    values = [parse_number(v, "region") for v in text.split(",")]
    if len(values) != 4:
        raise BadRequest(f"region: {text[:80]!r} is not four numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise BadRequest(f"region: {text[:80]!r} is not a region inside 0.0 to 1.0 with x0 < x1 and y0 < y1")
    return x0, y0, x1, y1


async def _dicom(archive: Archive, file: retrieve.StoredFile, requested: str | None) -> Response:
    """The instance as a PS3.10 file, as stored or transcoded (module docstring)."""
    stored = file.transfer_syntax_uid
    if requested is not None and requested != "*":
        require_uid(requested, "transferSyntax")
    target = stored if requested in ("*", stored) else requested or ExplicitVRLittleEndian
    if not can_transcode(stored, target):
        target = ExplicitVRLittleEndian if can_transcode(stored, ExplicitVRLittleEndian) else stored
    storage = archive.storage
    path = storage.local_path(file.file_path)
    try:
        if target != stored:
            try:
                async with local_file(storage, file.file_path) as copy:
                    body = await archive.in_process(transcode, copy, target)
                return Response(body, media_type=f"{media.DICOM}; transfer-syntax={target}")
            except CannotTranscode as exc:
                # Pixel data that cannot be decoded: the file as stored, as for a syntax with no decoder (above).
                log.warning("WADO-URI: instance %s sent as stored: %s", file.sop_instance_uid, exc)
        content_type = f"{media.DICOM}; transfer-syntax={stored}"
        if path is None:  # an object: streamed, its first bytes read before answering (a missing one is a 500)
            chunks = storage.read(file.file_path)
            first = await anext(chunks, b"")
            headers = {"content-length": str(file.file_size)}
            return StreamingResponse(_then(first, chunks), media_type=content_type, headers=headers)
        stat = await asyncio.to_thread(os.stat, path)
        return FileResponse(path, media_type=content_type, stat_result=stat)
    except FileNotFoundError:
        log.error("stored file missing: %s", file.file_path)
        raise DicomwebError(
            f"the stored file of instance {file.sop_instance_uid} is missing from the archive's storage"
        ) from None


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
