"""Uploads into a workflow study: a DICOM file is stored as STOW-RS stores it; a JPEG or PNG picture is converted
into a Secondary Capture instance (capture.py) carrying the study's patient and study attributes, and stored the
same way, so that DICOMweb viewers show it too.

Both endpoints take ``multipart/form-data`` (RFC 7578) with one file field ``file`` and optional text fields:

- ``POST /series/{seriesId}/images``: ``instanceNumber``. The series is one announced through
  ``POST /studies/{studyId}/series`` or one the archive holds for a workflow study.
- ``POST /studies/{studyId}/upload``: ``seriesNumber`` and ``instanceNumber``. A picture goes to the study's series
  with that number, announced (modality OT) when the study has none; without ``seriesNumber``, to the study's
  "Uploaded pictures" series, announced with the next free number by the first picture sent without one.

A DICOM file keeps its own series and instance number (the text fields apply to pictures); its StudyInstanceUID
must be the study's and, sent to a series, its SeriesInstanceUID that series' (409 otherwise, nothing stored).
A picture gets a new SOPInstanceUID and the next instance number of its series unless ``instanceNumber`` says.
What a file is, is read from its bytes (a PS3.10 preamble, a JPEG or PNG signature), not from its Content-Type.

The file part streams to a temp file in the archive's storage as it arrives (at most ``PART_BUFFER_BYTES`` of it in
memory), within DICOMWEB_MAX_UPLOAD_MB for the whole body (413), and is then validated, placed and indexed by
``dicomweb.store`` exactly as a STOW-RS instance (``prepare``, the checks here, then ``commit``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from dicomweb import store
from dicomweb.archive import Archive, archive_of
from dicomweb.errors import BadRequest, Conflict, DicomwebError, NotFound, PayloadTooLarge, UnsupportedMediaType
from dicomweb.instance import InvalidInstance
from dicomweb.status import FailureReason
from dicomweb.storage import FileStorage, SpooledFile, TempWriter

from . import capture, http
from .db import studies as db
from .models import UploadResult
from .studies import image_model, load_study
from .workflow import new_uid

log = logging.getLogger("dicomweb")

FILE_FIELD = "file"
PART_BUFFER_BYTES = 1024 * 1024  # bytes of the file held in memory before they go to its temp file
MAX_FIELD_BYTES = 1024  # bytes of a text field (a number)
MAX_PARTS = 8  # parts of a form: the file and a few text fields
UPLOAD_SERIES_DESCRIPTION = "Uploaded pictures"  # the series pictures go to when no seriesNumber is given
PICTURE_SERIES_MODALITY = "OT"  # PS3.3 C.7.3.1.1.1 "Other": a series announced for pictures holds no modality's images
ACCEPTED = "a DICOM PS3.10 file (application/dicom), a JPEG (image/jpeg) or a PNG (image/png) picture"


class _Fields(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    # InstanceNumber and SeriesNumber are IS: up to 2^31 - 1 (PS3.5 Table 6.2-1).
    instance_number: int | None = Field(default=None, ge=0, le=2**31 - 1)


class _StudyFields(_Fields):
    series_number: int | None = Field(default=None, ge=0, le=2**31 - 1)


# ---------------------------------------------------------------------------------------------------- the form


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    name: str = ""
    is_file: bool = False
    data: list[bytes] = field(default_factory=list)
    size: int = 0
    ended: bool = False


class _FormEvents:
    """Collects the parser's callbacks during one ``write``; the async side writes the file part afterwards."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.count = 0
        self.files = 0
        self.finished = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise BadRequest(f"the form has more than {MAX_PARTS} fields; send one file and its numbers")
        self.parts.append(_Part())

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
        self.parts[-1].header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
        self.parts[-1].header_value += data[start:end]

    def _header_bytes(self, size: int) -> None:
        part = self.parts[-1]
        if len(part.header_field) + len(part.header_value) + size > MAX_FIELD_BYTES:
            raise BadRequest(f"a form part has a header longer than {MAX_FIELD_BYTES} bytes")

    def on_header_end(self) -> None:
        part = self.parts[-1]
        part.headers[part.header_field.decode("latin-1").strip().lower()] = part.header_value.decode("latin-1")
        part.header_field.clear()
        part.header_value.clear()

    def on_headers_finished(self) -> None:
        part = self.parts[-1]
        _, options = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if not part.name:
            raise BadRequest("a form part has no name (Content-Disposition: form-data; name=...)")
        part.is_file = part.name == FILE_FIELD
        if part.is_file:
            self.files += 1
            if self.files > 1:
                raise BadRequest(f"send one file per request (the form has more than one {FILE_FIELD!r} field)")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        part.data.append(data[start:end])
        part.size += end - start
        if not part.is_file and part.size > MAX_FIELD_BYTES:
            raise BadRequest(f"form field {part.name[:40]!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        self.parts[-1].ended = True

    def on_end(self) -> None:
        self.finished = True


@dataclass(frozen=True)
class _Form:
    file: SpooledFile
    content_type: str | None  # what the client said the file is (a hint only: the bytes decide)
    fields: dict[str, str]


def _boundary(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    media_type, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType(
            f"send multipart/form-data with the file in a field named {FILE_FIELD!r}, "
            f"not {content_type.split(';')[0] or 'no Content-Type'}"
        )
    return boundary


async def _read_form(request: Request, storage: FileStorage, max_bytes: int, max_mib: int) -> _Form:
    """Stream the form in: the file part to a temp file, the text fields into memory; 413 past ``max_bytes``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"the upload of {declared} bytes exceeds the {max_mib} MiB limit (DICOMWEB_MAX_UPLOAD_MB)"
        )
    events = _FormEvents()
    parser = MultipartParser(_boundary(request), events.callbacks())  # type: ignore[arg-type]
    writer: TempWriter | None = None
    spooled: SpooledFile | None = None
    content_type: str | None = None
    fields: dict[str, str] = {}
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"the upload exceeds the {max_mib} MiB limit (DICOMWEB_MAX_UPLOAD_MB)")
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise BadRequest(f"malformed multipart/form-data body: {exc}") from None
            for part in events.parts:
                if part.is_file and (part.ended or part.size >= PART_BUFFER_BYTES):
                    writer = writer or storage.temp_writer()
                    data = b"".join(part.data)
                    part.data.clear()
                    part.size = 0
                    if part.ended:
                        spooled = await writer.close(data)
                        writer = None
                        content_type = part.headers.get("content-type")
                    else:
                        await writer.write(data)
                elif not part.is_file and part.ended:
                    try:
                        fields[part.name] = b"".join(part.data).decode("utf-8").strip()
                    except UnicodeDecodeError:
                        raise BadRequest(f"form field {part.name[:40]!r} is not UTF-8 text") from None
            events.parts = [part for part in events.parts if not part.ended]
        if not events.finished:
            raise BadRequest("the multipart/form-data body ends before its closing boundary (truncated request?)")
        if spooled is None:
            raise BadRequest(f"the form has no file field named {FILE_FIELD!r}")
        return _Form(spooled, content_type, fields)
    except BaseException:
        if writer is not None:
            await writer.abort()
        if spooled is not None:
            await storage.discard([spooled])
        raise


# ---------------------------------------------------------------------------------------------------- storing


async def _store(
    archive: Archive, spooled: SpooledFile, study_instance_uid: str, series_instance_uid: str | None
) -> store.StoreResult:
    """Validate, check the UIDs against the target, place and index: STOW-RS's path for one instance."""
    prepared = await store.prepare(spooled, None)
    if isinstance(prepared, InvalidInstance):
        await archive.storage.discard([spooled])
        raise BadRequest(f"the DICOM file cannot be stored: {prepared.detail}")
    instance = prepared.instance
    mismatch = ""
    if instance.study_instance_uid != study_instance_uid:
        mismatch = f"its StudyInstanceUID {instance.study_instance_uid} is not the study's {study_instance_uid}"
    elif series_instance_uid is not None and instance.series_instance_uid != series_instance_uid:
        mismatch = f"its SeriesInstanceUID {instance.series_instance_uid} is not {series_instance_uid}"
    if mismatch:
        await archive.storage.discard([spooled])
        raise Conflict(f"the DICOM file belongs elsewhere: {mismatch}; nothing was stored")
    result = (await store.commit(archive, [prepared]))[0]
    if result.failure is None:
        return result
    detail = f"the instance was not stored: {result.detail}"
    if result.failure in (FailureReason.DUPLICATE_SOP_INSTANCE, FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS):
        raise Conflict(detail)
    raise DicomwebError(detail)


async def _sniff(path: Path) -> capture.FileType | None:
    def head() -> bytes:
        with path.open("rb") as file:
            return file.read(capture.SNIFF_BYTES)

    return capture.sniff(await asyncio.to_thread(head))


def _convert_file(path: Path, picture_type: capture.PictureType, attributes: dict[str, object]) -> bytes:
    """Read a spooled picture and convert it (in a worker thread: decoding is CPU work, mostly outside the GIL)."""
    return capture.convert(path.read_bytes(), picture_type, attributes)


async def _convert(
    archive: Archive, spooled: SpooledFile, picture_type: capture.PictureType, attributes: dict[str, object]
) -> SpooledFile:
    """The Secondary Capture instance of a spooled picture, spooled in its turn (400 for a broken picture)."""
    try:
        data = await asyncio.to_thread(_convert_file, spooled.path, picture_type, attributes)
    except capture.PictureError as exc:
        raise BadRequest(str(exc)) from None
    return await archive.storage.temp_writer().close(data)


async def _picture_attributes(
    conn: Any, study: dict[str, Any], series: dict[str, Any], instance_number: int | None
) -> dict[str, object]:
    """The Secondary Capture's patient, study and series attributes (DICOM keywords): the patient as the archive
    already holds it for the study, else the workflow study's; the study's as the workflow schedules it."""
    study_instance_uid = study["study_instance_uid"]
    patient = await db.patient_attributes(conn, study_instance_uid)
    if instance_number is None:
        numbers = [
            image["instance_number"] or 0
            for image in await db.images(conn, study_instance_uid)
            if image["series_instance_uid"] == series["series_instance_uid"]
        ]
        instance_number = max(numbers, default=0) + 1
    scheduled = study["scheduled_at"]
    return {
        "SOPInstanceUID": new_uid(),
        "StudyInstanceUID": study_instance_uid,
        "SeriesInstanceUID": series["series_instance_uid"],
        "SeriesNumber": series["series_number"],
        "SeriesDescription": series["series_description"],
        "BodyPartExamined": series["body_part"] or study["body_part"],
        "Modality": series["modality"] or PICTURE_SERIES_MODALITY,
        "InstanceNumber": instance_number,
        "PatientID": patient["patient_id"] if patient else study["patient_id"],
        "PatientName": patient["patient_name"] if patient else study["patient_name"],
        "PatientBirthDate": patient["patient_birth_date"] if patient else None,
        "PatientSex": patient["patient_sex"] if patient else None,
        "AccessionNumber": study["accession_number"],
        "StudyDate": study["study_date"] or (scheduled.date() if scheduled else None),
        "StudyDescription": study["study_description"],
        "ReferringPhysicianName": study["referring_physician"],
    }


async def _series(conn: Any, study: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """A series of the study as db.series shows it (the archive's attributes, else the announced ones)."""
    for series in await db.series(conn, study["id"], study["study_instance_uid"]):
        if series["series_instance_uid"] == found["series_instance_uid"]:
            return series
    return {**found, "series_description": None, "body_part": None}  # pragma: no cover - deleted meanwhile


async def _picture_series(request: Request, conn: Any, study: dict[str, Any], number: int | None) -> dict[str, Any]:
    """The series a picture uploaded to the study goes to, announced when the study has none (study row locked)."""
    all_series = await db.series(conn, study["id"], study["study_instance_uid"])
    if number is not None:
        found = [s for s in all_series if s["series_number"] == number]
    else:
        found = [s for s in all_series if s["series_description"] == UPLOAD_SERIES_DESCRIPTION]
    if found:
        return found[0]
    values: dict[str, Any] = {
        "series_instance_uid": new_uid(),
        "series_number": number
        if number is not None
        else await db.next_series_number(conn, study["id"], study["study_instance_uid"]),
        "modality": PICTURE_SERIES_MODALITY,
        "series_description": None if number is not None else UPLOAD_SERIES_DESCRIPTION,
        "body_part": None,
    }
    if not await db.insert_series(conn, study["id"], values, http.caller(request).subject):
        raise Conflict(f"series number {values['series_number']} was taken meanwhile; try again")
    return values


async def _respond(request: Request, result: store.StoreResult, converted_from: capture.PictureType | None) -> Response:
    assert result.instance is not None
    async with archive_of(request).pool.acquire() as conn:
        rows = await db.images(conn, result.instance.study_instance_uid, result.instance.sop_instance_uid)
    body = UploadResult(image=image_model(request, rows[0]), converted_from=converted_from)
    # An identical instance stored before is a success too (as in STOW-RS), but nothing new was created.
    return http.ModelResponse(body, status_code=200 if result.already_stored else 201)


# ---------------------------------------------------------------------------------------------------- endpoints


async def _receive(request: Request, archive: Archive) -> tuple[_Form, capture.FileType]:
    settings = archive.settings
    try:
        form = await _read_form(request, archive.storage, settings.max_upload_bytes, settings.max_upload_mb)
    except ClientDisconnect:
        raise BadRequest("the client disconnected during the upload; nothing was stored") from None
    kind = await _sniff(form.file.path)
    if kind is None and (form.content_type or "").split(";")[0].strip().lower() == "application/dicom":
        kind = "application/dicom"  # without a preamble: let the DICOM reader say what is wrong with it
    if kind is None:
        await archive.storage.discard([form.file])
        what = "empty" if form.file.size == 0 else "not one of them"
        raise UnsupportedMediaType(f"uploads accept {ACCEPTED}; the file is {what}")
    return form, kind


async def upload_to_series(request: Request) -> Response:
    """POST /api/radiology/series/{seriesId}/images: a DICOM file or a picture into an existing series (201)."""
    series_instance_uid = request.path_params["seriesId"]
    archive = archive_of(request)
    async with archive.pool.acquire() as conn:
        found = await db.find_series(conn, series_instance_uid)
        if found is None:
            raise NotFound(
                f"no series {series_instance_uid[:80]!r} in a radiology study; announce it with "
                "POST /api/radiology/studies/{studyId}/series"
            )
        study = await load_study(request, found["study_id"], conn)
    form, kind = await _receive(request, archive)
    spooled = [form.file]
    try:  # every spooled file is gone afterwards: placed in the archive, or removed
        fields = http.validate(form.fields, _Fields)
        if kind == "application/dicom":
            result = await _store(archive, form.file, study["study_instance_uid"], series_instance_uid)
            return await _respond(request, result, None)
        async with archive.pool.acquire() as conn:
            series = await _series(conn, study, found)
            attributes = await _picture_attributes(conn, study, series, fields.instance_number)
        converted = await _convert(archive, form.file, kind, attributes)
        spooled.append(converted)
        result = await _store(archive, converted, study["study_instance_uid"], series_instance_uid)
        return await _respond(request, result, kind)
    finally:
        await archive.storage.discard(spooled)


async def upload_to_study(request: Request) -> Response:
    """POST /api/radiology/studies/{studyId}/upload: a DICOM file, or a picture into the series with seriesNumber
    (announced when needed; by default the study's "Uploaded pictures" series) (201)."""
    study_id = http.path_id(request, "studyId", "radiology study")
    archive = archive_of(request)
    async with archive.pool.acquire() as conn:
        study = await load_study(request, study_id, conn)
    form, kind = await _receive(request, archive)
    spooled = [form.file]
    try:  # every spooled file is gone afterwards: placed in the archive, or removed
        fields = http.validate(form.fields, _StudyFields)
        if kind == "application/dicom":
            result = await _store(archive, form.file, study["study_instance_uid"], None)
            return await _respond(request, result, None)
        async with archive.pool.acquire() as conn:
            async with conn.transaction():
                study = await load_study(request, study_id, conn, lock=True)  # one announcement per series
                series = await _picture_series(request, conn, study, fields.series_number)
            attributes = await _picture_attributes(conn, study, series, fields.instance_number)
        converted = await _convert(archive, form.file, kind, attributes)
        spooled.append(converted)
        result = await _store(archive, converted, study["study_instance_uid"], series["series_instance_uid"])
        return await _respond(request, result, kind)
    finally:
        await archive.storage.discard(spooled)
