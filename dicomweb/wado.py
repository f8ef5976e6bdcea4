"""WADO-RS, the Retrieve transaction (PS3.18 §10.4): instances, metadata and bulk data.

Instances stream from storage part by part (``multipart/related; type="application/dicom"``, or a single
``application/dicom`` for one instance). ``transfer-syntax=*`` returns the stored bytes untouched; without a
transfer-syntax parameter the default is Explicit VR Little Endian (PS3.18 §8.7.3.5.2), and instances stored
otherwise are transcoded losslessly (transcode.py) in a worker thread. Metadata is the DICOM JSON computed at
store time, served without opening any file; its BulkDataURIs are made absolute for the client that asks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from . import bulkdata, frames, media
from . import transcode as transcode_module
from .archive import Archive
from .db import retrieve
from .errors import BadRequest, NotAcceptable, NotFound, RangeNotSatisfiable, Unprocessable
from .frame_index import read_indexed
from .responses import (
    MultipartBytesResponse,
    MultipartFilesResponse,
    MultipartRelatedResponse,
    Part,
    StoredPart,
    bytes_part,
    chain,
    warning_headers,
)
from .services.retrieve import NotStored, check_files, locate, read_located, stored_files
from .state import archive_of
from .storage import Storage, local_file
from .transcode import CannotDecode, CannotTranscode, can_transcode, decoding, quick_to_decode, transcode
from .uids import scope_of
from .urls import base_url

log = logging.getLogger("dicomweb")

# A single instance up to this size is read whole and sent in one piece; larger ones (and studies) are streamed.
WHOLE_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Representation:
    """What the client accepts: multipart or single part, the part's media type, and the transfer syntax
    (None: as stored, ``transfer-syntax=*``)."""

    multipart: bool
    part_type: str
    transfer_syntax: str | None


def representation(
    accept: str | None, part_types: tuple[str, ...], single: bool, default_syntax: str
) -> Representation:
    """Choose from the Accept header (PS3.18 §8.7.4); 406 listing what is available when nothing fits. A viewer
    sends the same few headers again and again: the answers for short ones are remembered."""
    if accept is not None and len(accept) <= REMEMBERED_ACCEPT_LENGTH:
        return _remembered_representation(accept, part_types, single, default_syntax)
    return _representation(accept, part_types, single, default_syntax)


REMEMBERED_ACCEPT_LENGTH = 256


@functools.lru_cache(maxsize=256)
def _remembered_representation(
    accept: str, part_types: tuple[str, ...], single: bool, default_syntax: str
) -> Representation:
    return _representation(accept, part_types, single, default_syntax)


def _representation(
    accept: str | None, part_types: tuple[str, ...], single: bool, default_syntax: str
) -> Representation:
    ranges = media.accept_ranges(accept or "*/*")
    for range_ in ranges:
        syntax_param = range_.params.get("transfer-syntax")
        syntax = None if syntax_param == "*" else (syntax_param or default_syntax)
        if range_.type == media.MULTIPART_RELATED:
            part = media.MediaType.parse(range_.params.get("type", part_types[0])).type
            if part in part_types:
                return Representation(True, part, syntax)
        elif range_.type in part_types and single:
            return Representation(False, range_.type, syntax)
        elif range_.type in ("*/*", "multipart/*"):
            return Representation(True, part_types[0], syntax)
    offered = [f'multipart/related; type="{t}"' for t in part_types] + (list(part_types) if single else [])
    raise NotAcceptable(f"Accept: {accept} allows none of: {', '.join(offered)}")


async def retrieve_instances(request: Request) -> Response:
    """GET /studies/{S}[/series/{E}[/instances/{I}]]."""
    study, series, sop = scope_of(request.path_params)
    wanted = representation(request.headers.get("accept"), (media.DICOM,), sop is not None, ExplicitVRLittleEndian)
    archive = archive_of(request)
    target = wanted.transfer_syntax
    if sop is not None and series is not None:
        # One instance as stored and not large: sent whole, from where it is known to be (services/retrieve.py locate).
        located, _ = await locate(archive, study, series, sop)
        if located.file_size <= WHOLE_RESPONSE_BYTES and target in (None, located.transfer_syntax_uid):

            async def one_file(stored: retrieve.StoredFile, index: object) -> Response:
                return await _one_file(archive, stored, wanted.multipart)

            return (await read_located(archive, study, series, sop, one_file))[1]
    files = await stored_files(archive, study, series, sop)
    convertible: list[retrieve.StoredFile] = []
    left_out: list[str] = []  # PS3.18 §10.4.3: instances that cannot be converted are left out, with a warning
    for f in files:
        if target is None or can_transcode(f.transfer_syntax_uid, target):
            convertible.append(f)
        else:
            left_out.append(
                f"instance {f.sop_instance_uid} left out: stored as {UID(f.transfer_syntax_uid).name}, "
                f"which cannot be converted to {UID(target).name}"
            )
    if not convertible:
        stored = sorted({UID(f.transfer_syntax_uid).name for f in files})
        raise NotAcceptable(
            f"stored as {', '.join(stored)}; cannot convert to {UID(target or '').name}: "
            "ask for transfer-syntax=* (as stored) or Explicit VR Little Endian (1.2.840.10008.1.2.1)"
        )
    await check_files(archive, convertible)
    if not wanted.multipart:
        [file] = convertible
        syntax = target or file.transfer_syntax_uid
        content_type = f"{media.DICOM}; transfer-syntax={syntax}"
        if target is not None and target != file.transfer_syntax_uid:
            # Transcode before answering, so that a failure is a clean error status, not a cut-off body.
            body = await _transcoded(archive, file, target)
            return Response(body, media_type=content_type)
        return StreamingResponse(_content(archive, file), media_type=content_type)
    as_stored = all(target in (None, f.transfer_syntax_uid) for f in convertible)
    local = [archive.storage.local_path(f.file_path) for f in convertible] if as_stored else []
    if as_stored and all(path is not None for path in local):  # every file as it is stored, in a local folder
        stored_parts = [
            StoredPart(f"{media.DICOM}; transfer-syntax={f.transfer_syntax_uid}", path, f.file_size)
            for f, path in zip(convertible, local, strict=True) if path is not None
        ]  # fmt: skip
        return MultipartFilesResponse(stored_parts, media.DICOM, headers=warning_headers(request, left_out))
    if as_stored:  # objects: streamed, several in flight ahead of the one being sent
        return MultipartRelatedResponse(
            read_ahead(archive.storage, convertible), media.DICOM, headers=warning_headers(request, left_out)
        )
    parts = _parts(archive, convertible, target, left_out)
    first = await anext(parts, None)  # before answering: when no instance converts, the answer is a 406
    if first is None:
        raise NotAcceptable(f"{'; '.join(left_out[:3])}; ask for transfer-syntax=* (as stored)")
    return MultipartRelatedResponse(chain(first, parts), media.DICOM, headers=warning_headers(request, left_out))


async def _one_file(archive: Archive, file: retrieve.StoredFile, multipart: bool) -> Response:
    """One stored instance, as stored, read whole in one worker-thread call and sent in one piece: no separate
    check that the file exists (read_located turns FileNotFoundError into FilesMissing), no streaming."""
    data = await archive.storage.read_bytes(file.file_path)
    content_type = f"{media.DICOM}; transfer-syntax={file.transfer_syntax_uid}"
    if not multipart:
        return Response(data, media_type=content_type)
    return MultipartBytesResponse([(content_type, data)])


async def _parts(
    archive: Archive, files: list[retrieve.StoredFile], target: str | None, left_out: list[str]
) -> AsyncIterator[Part]:
    """One part per file: streamed from the file when it has the syntax asked for, else transcoded (in the CPU
    process pool) before its part begins. An instance that cannot be transcoded is left out, with why in
    ``left_out``: the body goes on with the next instance and always ends with its closing delimiter."""
    for file in files:
        if target is None or target == file.transfer_syntax_uid:
            yield Part(f"{media.DICOM}; transfer-syntax={file.transfer_syntax_uid}", _content(archive, file))
            continue
        try:
            async with local_file(archive.storage, file.file_path) as path:
                data = await archive.in_process(transcode, path, target)
        except CannotTranscode as exc:
            log.warning("instance %s left out of a retrieve: %s", file.sop_instance_uid, exc)
            left_out.append(f"instance {file.sop_instance_uid} left out: {exc}")
            continue
        yield bytes_part(f"{media.DICOM}; transfer-syntax={target}", data)


async def _content(archive: Archive, file: retrieve.StoredFile) -> AsyncIterator[bytes]:
    async for chunk in archive.storage.read(file.file_path):
        yield chunk


# Objects read ahead of the one being sent in a multipart answer from an object store: each small one whole (its GET's
# latency overlaps the sending of those before it), at most this many at once (memory: READ_AHEAD x SMALL_OBJECT_BYTES).
READ_AHEAD = 8
SMALL_OBJECT_BYTES = 4 * 1024 * 1024


async def read_ahead(storage: Storage, files: list[retrieve.StoredFile]) -> AsyncIterator[Part]:
    """One part per stored file, as stored; the next READ_AHEAD small ones are fetched while one is sent, a large one
    streams when its turn comes."""
    ahead: dict[int, asyncio.Task[bytes]] = {}

    def fetch_until(limit: int) -> None:
        for number in range(limit):
            if number < len(files) and number not in ahead and files[number].file_size <= SMALL_OBJECT_BYTES:
                ahead[number] = asyncio.create_task(storage.read_bytes(files[number].file_path))

    try:
        for number, file in enumerate(files):
            fetch_until(number + 1 + READ_AHEAD)
            content_type = f"{media.DICOM}; transfer-syntax={file.transfer_syntax_uid}"
            task = ahead.pop(number, None)
            if task is None:
                yield Part(content_type, storage.read(file.file_path))
            else:
                yield bytes_part(content_type, await task)
    finally:
        for task in ahead.values():
            task.cancel()
        await asyncio.gather(*ahead.values(), return_exceptions=True)


async def _transcoded(archive: Archive, file: retrieve.StoredFile, target: str) -> bytes:
    try:
        async with local_file(archive.storage, file.file_path) as path:
            return await archive.in_process(transcode, path, target)
    except CannotTranscode as exc:
        raise NotAcceptable(
            f"instance {file.sop_instance_uid}: {exc}; ask for transfer-syntax=* to have it as stored"
        ) from None


async def retrieve_metadata(request: Request) -> Response:
    """GET .../metadata at study, series or instance level: the stored DICOM JSON, with an ETag."""
    study, series, sop = scope_of(request.path_params)
    response_type = media.negotiate(request.headers.get("accept"), (media.DICOM_JSON, media.JSON))
    archive = archive_of(request)
    async with archive.pool.acquire() as conn:
        count, newest = await retrieve.version(conn, study, series, sop)
        if count == 0:
            raise NotStored(study, series, sop)
        etag = f'"{count}-{newest}"'
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers={"etag": etag})
        documents = await retrieve.metadata(conn, study, series, sop)
    base = base_url(request, archive.settings.public_url)
    # Stored BulkDataURIs are relative to the base URL (dicomjson.py); jsonb text writes them as below.
    body = ("[" + ",".join(documents) + "]").replace('"BulkDataURI": "', f'"BulkDataURI": "{base}/')
    return Response(body.encode(), media_type=response_type, headers={"etag": etag})


async def retrieve_bulkdata(request: Request) -> Response:
    """GET .../instances/{I}/bulk/{path}: a value the metadata gave as a BulkDataURI, with Range support."""
    study, series, sop = scope_of(request.path_params)
    path = request.path_params["path"]
    wanted = representation(request.headers.get("accept"), (media.OCTET_STREAM,), True, "*")
    archive = archive_of(request)
    files = await stored_files(archive, study, series, sop)
    await check_files(archive, files)
    stored = files[0].file_path
    try:
        async with local_file(archive.storage, stored) as file:
            value = await asyncio.to_thread(bulkdata.locate, file, path)
    except bulkdata.BulkDataNotFound as exc:
        raise NotFound(f"instance {sop}: {exc}") from None
    except CannotDecode as exc:
        raise Unprocessable(f"instance {sop}: the value at {path} cannot be read: {exc}") from None
    if value.undefined_length:
        raise NotAcceptable("encapsulated pixel data is served frame by frame: use .../frames/{list}")
    start, end, status, headers = 0, value.length, 200, {"accept-ranges": "bytes"}
    if not wanted.multipart and "range" in request.headers:
        start, end = byte_range(request.headers["range"], value.length)
        status = 206
        headers["content-range"] = f"bytes {start}-{end - 1}/{value.length}"
    chunks = _value_chunks(archive.storage, stored, value, start, end)
    if wanted.multipart:
        return MultipartRelatedResponse(
            _one_part(Part(media.OCTET_STREAM, chunks)), media.OCTET_STREAM, headers=headers
        )
    headers["content-length"] = str(end - start)
    return StreamingResponse(chunks, status_code=status, media_type=media.OCTET_STREAM, headers=headers)


async def _one_part(part: Part) -> AsyncIterator[Part]:
    yield part


async def _value_chunks(
    storage: Storage, stored: str, value: bulkdata.BulkValue, start: int, end: int
) -> AsyncIterator[bytes]:
    if value.data is not None:
        yield value.data[start:end]
        return
    assert value.offset is not None
    async for chunk in storage.read(stored, value.offset + start, value.offset + end):
        yield chunk


def byte_range(header: str, size: int) -> tuple[int, int]:
    """One ``Range: bytes=a-b`` (or ``a-``, ``-n``) as [start, end); 416 when it cannot be satisfied (RFC 9110 §14)."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"unsupported Range {header[:80]!r}: one range of bytes is supported", size)
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"Range {header[:80]!r} is outside the {size} bytes of the value", size)
    return start, end


# Frames: native pixel data as application/octet-stream; compressed frames keep their image media type
# (frames.py) when the stored syntax is acceptable. Every part names its transfer syntax (Cornerstone reads it).
FRAME_TYPES = (media.OCTET_STREAM, "image/jpeg", "image/jls", "image/jp2", "image/jpx", "image/jphc",
               "image/dicom-rle", "image/jxl")  # fmt: skip


def _read_frames(
    storage: Storage, stored: str, index: list[Any] | None, transfer_syntax_uid: str, numbers: list[int]
) -> list[frames.Frame]:
    """The frames as stored (blocking); CannotDecode when the file cannot be parsed as far as its pixel data
    (frames.FrameError for frames it does not hold)."""
    with decoding("the stored file", passing=(frames.FrameError,)):
        if index is not None:  # byte ranges recorded at store time: no parsing, only those bytes read
            return read_indexed(partial(storage.read_ranges_now, stored), index, transfer_syntax_uid, numbers)
        with storage.local_copy(stored) as path:
            return frames.read_frames(path, numbers)


def _read_and_decode(
    storage: Storage, index: list[Any] | None, stored: retrieve.StoredFile, numbers: list[int]
) -> list[frames.Frame]:
    """One small RLE frame read and decoded to native pixels in one worker-thread call: from the bytes read when
    decode_rle takes them, else from the file by pydicom (CannotDecode when it cannot be decoded)."""
    [frame] = _read_frames(storage, stored.file_path, index, stored.transfer_syntax_uid, numbers)
    decoded: bytes | CannotDecode | None = None
    if stored.pixels_per_frame and stored.bits_allocated:
        decoded = transcode_module.decode_rle(frame.data, stored.pixels_per_frame, stored.bits_allocated)
    if decoded is None:
        with storage.local_copy(stored.file_path) as path:
            [decoded] = transcode_module.decode_frames(path, numbers)
    if isinstance(decoded, CannotDecode):
        raise decoded
    return [frames.Frame(decoded, media.OCTET_STREAM, ExplicitVRLittleEndian)]


async def retrieve_frames(request: Request) -> Response:
    """GET .../instances/{I}/frames/{list}: one part per frame, in the order asked. A frame that cannot be read or
    decoded is a 406 naming the cause when it is the only one asked for; among several, it is left out of the
    multipart answer and a Warning names it (PS3.18 §10.4.3)."""
    study, series, sop = scope_of(request.path_params)
    try:
        numbers = frames.parse_frame_list(request.path_params["frames"])
    except frames.FrameError as exc:
        raise BadRequest(f"frame list: {exc}") from None
    wanted = representation(request.headers.get("accept"), FRAME_TYPES, True, ExplicitVRLittleEndian)
    archive = archive_of(request)
    assert series is not None and sop is not None  # the route names both

    storage = archive.storage

    async def read(stored: retrieve.StoredFile, index: list[Any] | None) -> list[frames.Frame]:
        if (
            len(numbers) == 1
            and stored.transfer_syntax_uid == RLELossless
            and wanted.part_type == media.OCTET_STREAM
            and wanted.transfer_syntax == ExplicitVRLittleEndian
            and quick_to_decode(stored.transfer_syntax_uid, stored.pixels_per_frame)
        ):  # About a millisecond of work: handing it to another process (and the frame back) costs more.
            return await asyncio.to_thread(_read_and_decode, storage, index, stored, numbers)
        return await asyncio.to_thread(
            _read_frames, storage, stored.file_path, index, stored.transfer_syntax_uid, numbers
        )

    unreadable = "; ask for the instance as stored (transfer-syntax=*) instead"
    try:
        stored, found = await read_located(archive, study, series, sop, read)
    except (frames.InvalidFrameList, frames.FrameNotFound) as exc:
        raise BadRequest(f"instance {sop}: {exc}") from None
    except frames.NoPixelData as exc:
        raise NotFound(f"instance {sop}: {exc}") from None
    except frames.FramesNotExtractable as exc:
        raise NotAcceptable(f"instance {sop}: {exc}") from None
    except (frames.BrokenPixelData, CannotDecode) as exc:
        log.warning("frames %s of instance %s cannot be read: %s", numbers, sop, exc)
        raise NotAcceptable(f"instance {sop}: frames cannot be read: {exc}{unreadable}") from None
    stored_syntax = found[0].transfer_syntax_uid
    as_stored = wanted.transfer_syntax is None or wanted.transfer_syntax == stored_syntax
    left_out: list[str] = []
    if as_stored and (wanted.part_type in (media.OCTET_STREAM, found[0].media_type)):
        payloads = [(f.media_type, f.transfer_syntax_uid, f.data) for f in found]
    elif wanted.part_type == media.OCTET_STREAM and wanted.transfer_syntax == ExplicitVRLittleEndian:
        if not can_transcode(stored.transfer_syntax_uid, ExplicitVRLittleEndian):
            raise NotAcceptable(f"instance {sop}: no decoder for {UID(stored_syntax).name} is available")
        async with local_file(archive.storage, stored.file_path) as path:
            decoded = await archive.in_process(transcode_module.decode_frames, path, numbers)
        payloads = []
        for number, frame in zip(numbers, decoded, strict=True):
            if isinstance(frame, CannotDecode):
                log.warning("frame %d of instance %s cannot be decoded: %s", number, sop, frame)
                left_out.append(f"instance {sop}: {frame}")
            else:
                payloads.append((media.OCTET_STREAM, ExplicitVRLittleEndian, frame))
        if not payloads or (left_out and not wanted.multipart):
            raise NotAcceptable(f"{left_out[0]}{unreadable}")
    else:
        raise NotAcceptable(
            f"frames of instance {sop} are stored as {UID(stored_syntax).name} ({found[0].media_type}); ask for "
            f'multipart/related; type="{found[0].media_type}"; transfer-syntax=* or type=application/octet-stream'
        )
    if "range" in request.headers and len(payloads) == 1 and not left_out:
        # Progressive loading (Cornerstone3D): a byte range of one frame, as a single part with Content-Range.
        media_type, syntax, data = payloads[0]
        start, end = byte_range(request.headers["range"], len(data))
        headers = {"content-range": f"bytes {start}-{end - 1}/{len(data)}", "accept-ranges": "bytes"}
        return Response(data[start:end], 206, headers, f"{media_type}; transfer-syntax={syntax}")
    if not wanted.multipart:
        if len(payloads) != 1:
            raise NotAcceptable("several frames need multipart/related; ask for one frame or accept multipart")
        media_type, syntax, data = payloads[0]
        return Response(data, media_type=f"{media_type}; transfer-syntax={syntax}")
    warnings = warning_headers(request, left_out)
    return MultipartBytesResponse([(f"{m}; transfer-syntax={t}", d) for m, t, d in payloads], headers=warnings)
