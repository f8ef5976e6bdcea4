"""Rendering a stored instance: the archive's half of rendering, shared by WADO-RS rendered/thumbnail and WADO-URI.

It resolves the stored file's path, runs ``rendering.render`` in a worker thread (a small native or RLE frame: a few
milliseconds of work) or in the archive's CPU process pool (the rest) and turns the pipeline's failures into HTTP
errors. It is not a transaction, so both transactions import it instead of each other.
"""

from __future__ import annotations

import asyncio
import logging

from pydicom.uid import UID, ExplicitVRLittleEndian

from . import frames
from .archive import Archive
from .db import retrieve
from .errors import BadRequest, DicomwebError, NotAcceptable
from .rendering import Rendering, render
from .transcode import can_transcode, quick_to_decode

log = logging.getLogger("dicomweb")


async def render_stored(
    archive: Archive, file: retrieve.StoredFile, frame: int, rendering: Rendering, media_type: str
) -> bytes:
    """Render a stored instance's frame in the CPU process pool; 406 without pixel data or decoder, 400 for a frame
    it does not have, 500 when its file is gone."""
    sop = file.sop_instance_uid
    if not can_transcode(file.transfer_syntax_uid, ExplicitVRLittleEndian):
        raise NotAcceptable(f"instance {sop}: no decoder for {UID(file.transfer_syntax_uid).name} is installed")
    path = archive.storage.absolute(file.file_path)
    try:
        if quick_to_decode(file.transfer_syntax_uid, file.pixels_per_frame):
            return await asyncio.to_thread(render, path, frame, rendering, media_type)
        return await archive.in_process(render, path, frame, rendering, media_type)
    except frames.NoPixelData:
        raise NotAcceptable(
            f"instance {sop} ({UID(file.sop_class_uid).name}) has no pixel data, so no rendered image"
        ) from None
    except frames.FrameNotFound as exc:
        raise BadRequest(f"instance {sop}: {exc}") from None
    except FileNotFoundError:
        log.error("stored file missing: %s", path)
        raise DicomwebError(f"the stored file of instance {sop} is missing from the archive's storage") from None
