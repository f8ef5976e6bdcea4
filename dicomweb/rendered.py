"""WADO-RS rendered and thumbnail resources (PS3.18 §10.4.1.1.3 and §10.4.1.1.4): images as JPEG, PNG or GIF.

The endpoints parse, look up and respond; the rendering parameters and the pixel pipeline (PS3.4 §N.2) are in
``rendering``, run on a stored file by ``render_stored`` (shared with WADO-URI).

A study or series renders one representative instance, the middle one (by Instance Number) of its first series that
has pixel data, unless the client accepts ``multipart/related; type="image/..."``: then every instance with pixel data
is one part (PS3.18 §10.4.4), as are the frames of a frame list. Thumbnails (always one image, §10.4.3.3.4) are cached
under ``<data-dir>/cache/thumbnails/{StudyInstanceUID}/``, keyed by the stored file, frame and parameters.

An instance without pixel data (e.g. a Structured Report) has no rendered image in the media types offered here: 406,
as for any resource with no representation the client accepts (PS3.18 §8.7.8.1).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from . import frames, media
from .archive import Archive
from .db import retrieve
from .errors import BadRequest, NoImage, NotAcceptable, Unprocessable
from .render_stored import render_instance, render_stored
from .rendering import JPEG, RENDERED_TYPES, Rendering, rendering_from_query
from .responses import MultipartBytesResponse, MultipartRelatedResponse, bytes_part, chain, warning_headers
from .services.retrieve import stored_files
from .state import archive_of
from .uids import scope_of

log = logging.getLogger("dicomweb")

THUMBNAIL_SIZE = (128, 128)  # pixels (width, height) a thumbnail fits in, unless ``viewport`` says otherwise


# Endpoints ------------------------------------------------------------------------------------------------------


def _frame_numbers(request: Request) -> list[int] | None:
    if "frames" not in request.path_params:
        return None
    try:
        return frames.parse_frame_list(request.path_params["frames"])
    except frames.FrameError as exc:
        raise BadRequest(f"frame list: {exc}") from None


def negotiate(request: Request, multipart: bool) -> tuple[str, bool]:
    """The rendered media type, and whether as multipart/related parts. The ``accept`` query parameter (OHIF's
    thumbnailDirect sends ``?accept=image/jpeg``) takes the place of the Accept header (PS3.18 §8.3.3.1)."""
    accept = ",".join(request.query_params.getlist("accept")) or request.headers.get("accept")
    if multipart and accept:
        for range_ in media.accept_ranges(accept):
            if range_.type != media.MULTIPART_RELATED:
                break  # a single-part range is preferred to any multipart range after it
            part = media.MediaType.parse(range_.params.get("type", JPEG)).type
            if part in RENDERED_TYPES:
                return part, True
    return media.negotiate(accept, RENDERED_TYPES), False


# Instances tried after the representatives when none of those renders (their pixel data does not decode).
FURTHER_CANDIDATES = 4


def candidates_of(files: list[retrieve.StoredFile]) -> list[retrieve.StoredFile]:
    """What a study or series renders, in the order tried: each series' representative, then a few others."""
    chosen = representatives(files)
    uids = {file.sop_instance_uid for file in chosen}
    return chosen + [file for file in files if file.sop_instance_uid not in uids][:FURTHER_CANDIDATES]


def representatives(files: list[retrieve.StoredFile]) -> list[retrieve.StoredFile]:
    """For each series in order, its middle instance by Instance Number (the lower middle of an even count)."""
    by_series: dict[str, list[retrieve.StoredFile]] = {}
    for file in files:
        by_series.setdefault(file.series_instance_uid, []).append(file)
    return [series[(len(series) - 1) // 2] for series in by_series.values()]


async def retrieve_rendered(request: Request) -> Response:
    """GET .../rendered of a study, series, instance or frame list."""
    study, series, sop = scope_of(request.path_params)
    numbers = _frame_numbers(request)
    media_type, multipart = negotiate(request, multipart=True)
    rendering = rendering_from_query(request.query_params)
    archive = archive_of(request)
    if sop is not None and series is not None and not multipart:  # the request a viewer repeats: as quick as can be
        body = await render_instance(archive, study, series, sop, numbers[0] if numbers else 1, rendering, media_type)
        return Response(body, media_type=media_type)
    files = await stored_files(archive, study, series, sop)
    if multipart:
        if numbers is None:
            return await _multipart(archive, [(file, 1) for file in files], rendering, media_type, request)
        count = files[0].number_of_frames or 1
        beyond = [n for n in numbers if n > count]
        if beyond:  # checked before the first part leaves: a later failure could only cut the response short
            raise BadRequest(f"instance {sop}: frame {beyond[0]} does not exist: the instance has {count} frame(s)")
        return await _multipart(archive, [(files[0], n) for n in numbers], rendering, media_type, request, whole=True)
    first = numbers[0] if numbers else 1
    candidates = files if sop is not None else candidates_of(files)
    body = await _first_rendered(archive, [(f, first) for f in candidates], rendering, media_type, cache=False)
    return Response(body, media_type=media_type)


async def retrieve_thumbnail(request: Request) -> Response:
    """GET .../thumbnail of a study, series, instance or frame list: one small image, cached on disk."""
    study, series, sop = scope_of(request.path_params)
    numbers = _frame_numbers(request)
    media_type, _ = negotiate(request, multipart=False)  # a thumbnail is a single image (PS3.18 §10.4.3.3.4)
    rendering = rendering_from_query(request.query_params, THUMBNAIL_SIZE)
    archive = archive_of(request)
    files = await stored_files(archive, study, series, sop)
    first = numbers[0] if numbers else 1
    candidates = files if sop is not None else candidates_of(files)
    body = await _first_rendered(archive, [(f, first) for f in candidates], rendering, media_type, cache=True)
    return Response(body, media_type=media_type)


async def _first_rendered(
    archive: Archive,
    candidates: list[tuple[retrieve.StoredFile, int]],
    rendering: Rendering,
    media_type: str,
    cache: bool,
) -> bytes:
    """The first candidate that renders; instances without pixel data, or whose pixel data cannot be decoded, are
    passed over (an SR series first)."""
    refusals: list[NotAcceptable | Unprocessable] = []
    for file, frame in candidates:
        cached = thumbnail_path(archive, file, frame, rendering, media_type) if cache else None
        if cached is not None:
            body = await asyncio.to_thread(_read_cached, cached)
            if body is not None:
                return body
        try:
            body = await render_stored(archive, file, frame, rendering, media_type)
        except (NotAcceptable, Unprocessable) as exc:
            refusals.append(exc)
            continue
        if cached is not None:
            await asyncio.to_thread(_write_cached, cached, body)
        return body
    failures = [refusal for refusal in refusals if not isinstance(refusal, NoImage)]
    if len(candidates) == 1 or failures:
        raise (failures or refusals)[0]  # the one instance's reason, or the first that is not "no pixel data"
    raise NotAcceptable("no instance here has pixel data that can be rendered")


async def _multipart(
    archive: Archive,
    targets: list[tuple[retrieve.StoredFile, int]],
    rendering: Rendering,
    media_type: str,
    request: Request,
    whole: bool = False,
) -> Response:
    """One part per renderable target. Instances without pixel data, or whose pixel data cannot be decoded, are left
    out, and a Warning names the latter (PS3.18 §10.4.3). A frame list (``whole``) is rendered before answering, so
    that the Warning names every frame left out; the instances of a study or series stream, the first rendered before
    answering so that nothing to render is a clean status, and a failure after it is only logged."""
    left_out: list[str] = []
    rendered = _rendered(archive, targets, rendering, media_type, left_out)
    if whole:
        images = [image async for image in rendered]
        if images:
            pieces = [(media_type, image) for image in images]
            return MultipartBytesResponse(pieces, headers=warning_headers(request, left_out))
    else:
        first = await anext(rendered, None)
        if first is not None:
            parts = (bytes_part(media_type, image) async for image in rendered)
            return MultipartRelatedResponse(
                chain(bytes_part(media_type, first), parts), media_type, headers=warning_headers(request, left_out)
            )
    if not left_out:
        raise NotAcceptable("no instance here has pixel data that can be rendered")
    raise Unprocessable(f"nothing here can be rendered: {'; '.join(left_out[:3])}")


async def _rendered(
    archive: Archive,
    targets: list[tuple[retrieve.StoredFile, int]],
    rendering: Rendering,
    media_type: str,
    left_out: list[str],
) -> AsyncIterator[bytes]:
    """The image of each target that renders; why each other one is left out goes to ``left_out``."""
    for file, frame in targets:
        try:
            yield await render_stored(archive, file, frame, rendering, media_type)
        except NoImage:
            continue  # not an image: nothing is missing
        except (NotAcceptable, Unprocessable) as exc:
            log.warning("rendered: left out: %s", exc.detail)
            left_out.append(f"left out: {exc.detail}")


# Thumbnail cache ------------------------------------------------------------------------------------------------


def thumbnail_path(
    archive: Archive, file: retrieve.StoredFile, frame: int, rendering: Rendering, media_type: str
) -> Path:
    """``cache/thumbnails/{StudyInstanceUID}/{SOPInstanceUID}.{key}.{ext}``: the key covers the stored file's path
    (which changes when an instance is replaced), the frame and every parameter, so a stale entry is never read."""
    key = hashlib.sha256(f"{file.file_path}|{frame}|{media_type}|{rendering!r}".encode()).hexdigest()[:16]
    extension = media_type.split("/")[1]
    return (
        archive.storage.root
        / "cache"
        / "thumbnails"
        / file.study_instance_uid
        / f"{file.sop_instance_uid}.{key}.{extension}"
    )


def _read_cached(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_cached(path: Path, body: bytes) -> None:
    """Write beside, then rename: a reader sees the whole image or none (no fsync: it is only a cache)."""
    temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(body)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        log.warning("thumbnail not cached at %s: %s", path, exc)
