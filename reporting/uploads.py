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

The file part streams to a temp file in the archive's storage as it arrives (dicomweb.multipart, as STOW-RS bodies),
within DICOMWEB_MAX_UPLOAD_MB for the whole body (413), and is then validated, placed and indexed by
``dicomweb.services.store`` exactly as a STOW-RS instance (``prepare``, the checks here, then ``commit``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from dicomweb.archive import Archive
from dicomweb.config import Settings
from dicomweb.errors import BadRequest, Conflict, DicomwebError, NotFound, PayloadTooLarge, UnsupportedMediaType
from dicomweb.instance import InvalidInstance
from dicomweb.multipart import ReceivedPart, read_multipart
from dicomweb.services import store
from dicomweb.state import archive_of, subject_of
from dicomweb.status import FailureReason
from dicomweb.storage import SpooledFile, Storage

from . import capture, http
from .db import studies as db
from .lookup import image_model, load_study
from .models import UploadResult
from .workflow import new_uid

log = logging.getLogger("dicomweb")

FILE_FIELD = "file"
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


async def _read_form(request: Request, storage: Storage, settings: Settings) -> _Form:
    """Stream the form in (dicomweb.multipart, as STOW-RS bodies): the file part to a temp file, the text fields
    into memory; 413 past DICOMWEB_MAX_UPLOAD_MB."""
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the upload of {declared} bytes exceeds the {settings.max_upload_mb} MiB limit (DICOMWEB_MAX_UPLOAD_MB)"
        )
    parts = read_multipart(
        request.stream(),
        boundary,
        storage,
        settings.max_upload_bytes,
        max_parts=MAX_PARTS,
        max_header_bytes=settings.max_part_header_bytes,
    )
    file: ReceivedPart | None = None
    fields: dict[str, str] = {}
    try:
        async for part in parts:
            _, options = parse_options_header(part.headers.get("content-disposition", ""))
            name = options.get(b"name", b"").decode("utf-8", "replace")
            if name == FILE_FIELD and file is None:
                file = part
                continue
            try:
                fields[name] = await _field_text(part, name)
            finally:
                await storage.discard([part.file])
    except BaseException:
        if file is not None:
            await storage.discard([file.file])
        raise
    if file is None:
        raise BadRequest(f"the form has no file field named {FILE_FIELD!r}")
    return _Form(file.file, file.content_type, fields)


async def _field_text(part: ReceivedPart, name: str) -> str:
    """A text field's value (a number); 400 for a nameless part, a second file, or a long or non-UTF-8 value."""
    if not name:
        raise BadRequest("a form part has no name (Content-Disposition: form-data; name=...)")
    if name == FILE_FIELD:
        raise BadRequest(f"send one file per request (the form has more than one {FILE_FIELD!r} field)")
    if part.file.size > MAX_FIELD_BYTES:
        raise BadRequest(f"form field {name[:40]!r} is longer than {MAX_FIELD_BYTES} bytes")
    try:
        return (await asyncio.to_thread(part.file.path.read_bytes)).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadRequest(f"form field {name[:40]!r} is not UTF-8 text") from None


# ---------------------------------------------------------------------------------------------------- storing


async def _store(
    archive: Archive, spooled: SpooledFile, study_instance_uid: str, series_instance_uid: str | None, stored_by: str
) -> store.StoreResult:
    """Validate, check the UIDs against the target, place and index: STOW-RS's path for one instance (an SR's
    measurements become annotations by ``stored_by``, as through STOW-RS)."""
    prepared = await store.prepare(archive.storage, spooled, None, archive.on_store)
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
        await store.discard(archive, [prepared])
        raise Conflict(f"the DICOM file belongs elsewhere: {mismatch}; nothing was stored")
    result = (await store.commit(archive, [prepared], stored_by=stored_by))[0]
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
        form = await _read_form(request, archive.storage, settings)
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
            result = await _store(
                archive, form.file, study["study_instance_uid"], series_instance_uid, subject_of(request)
            )
            return await _respond(request, result, None)
        async with archive.pool.acquire() as conn:
            series = await _series(conn, study, found)
            attributes = await _picture_attributes(conn, study, series, fields.instance_number)
        converted = await _convert(archive, form.file, kind, attributes)
        spooled.append(converted)
        result = await _store(archive, converted, study["study_instance_uid"], series_instance_uid, subject_of(request))
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
            result = await _store(archive, form.file, study["study_instance_uid"], None, subject_of(request))
            return await _respond(request, result, None)
        async with archive.pool.acquire() as conn:
            async with conn.transaction():
                study = await load_study(request, study_id, conn, lock=True)  # one announcement per series
                series = await _picture_series(request, conn, study, fields.series_number)
            attributes = await _picture_attributes(conn, study, series, fields.instance_number)
        converted = await _convert(archive, form.file, kind, attributes)
        spooled.append(converted)
        result = await _store(
            archive, converted, study["study_instance_uid"], series["series_instance_uid"], subject_of(request)
        )
        return await _respond(request, result, kind)
    finally:
        await archive.storage.discard(spooled)
