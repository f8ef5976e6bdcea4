"""Rendering a stored instance: the archive's half of rendering, shared by WADO-RS rendered/thumbnail and WADO-URI.

It resolves the stored file's path, runs ``rendering.render`` in a worker thread (a small native or RLE frame: a few
milliseconds of work) or in the archive's CPU process pool (the rest) and turns the pipeline's failures into HTTP
errors. It is not a transaction, so both transactions import it instead of each other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from . import frames
from .archive import Archive
from .db import retrieve
from .errors import BadRequest, DicomwebError, NoImage, NotAcceptable, Unprocessable
from .rendering import Rendering, render
from .services.retrieve import read_located
from .storage import local_file
from .transcode import CannotDecode, can_transcode, quick_to_decode

log = logging.getLogger("dicomweb")


async def render_stored(
    archive: Archive, file: retrieve.StoredFile, frame: int, rendering: Rendering, media_type: str
) -> bytes:
    """``render_located`` without the frame index; 500 when the file is gone."""
    try:
        return await render_located(archive, file, None, frame, rendering, media_type)
    except FileNotFoundError:
        log.error("stored file missing: %s", file.file_path)
        raise DicomwebError(
            f"the stored file of instance {file.sop_instance_uid} is missing from the archive's storage"
        ) from None


async def render_instance(
    archive: Archive, study: str, series: str, sop: str, frame: int, rendering: Rendering, media_type: str
) -> bytes:
    """One instance's frame rendered, from where it is known to be (services/retrieve.py read_located: its file and
    frame index kept in memory, asked again of the database when the file has gone)."""

    async def rendered(file: retrieve.StoredFile, index: list[Any] | None) -> bytes:
        return await render_located(archive, file, index, frame, rendering, media_type)

    return (await read_located(archive, study, series, sop, rendered))[1]


async def render_located(
    archive: Archive,
    file: retrieve.StoredFile,
    index: list[Any] | None,
    frame: int,
    rendering: Rendering,
    media_type: str,
) -> bytes:
    """Render a stored instance's frame in a worker thread or the CPU process pool; a native frame whose location
    is in ``index`` is read from there. 406 without pixel data or decoder, 422 when its pixel data cannot be decoded,
    400 for a frame it does not have; FileNotFoundError when its file is gone."""
    sop = file.sop_instance_uid
    if not can_transcode(file.transfer_syntax_uid, ExplicitVRLittleEndian):
        raise NotAcceptable(f"instance {sop}: no decoder for {UID(file.transfer_syntax_uid).name} is available")
    native = file.transfer_syntax_uid in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    location = index[frame - 1] if native and index is not None and 1 <= frame <= len(index) else None
    try:
        async with local_file(archive.storage, file.file_path) as path:
            if quick_to_decode(file.transfer_syntax_uid, file.pixels_per_frame):
                return await asyncio.to_thread(render, path, frame, rendering, media_type, location)
            return await archive.in_process(render, path, frame, rendering, media_type, location)
    except frames.NoPixelData:
        raise NoImage(
            f"instance {sop} ({UID(file.sop_class_uid).name}) has no pixel data, so no rendered image"
        ) from None
    except frames.FrameNotFound as exc:
        raise BadRequest(f"instance {sop}: {exc}") from None
    except CannotDecode as exc:
        raise Unprocessable(
            f"instance {sop}: {exc}; it has no rendered image (retrieve it as stored instead)"
        ) from None
