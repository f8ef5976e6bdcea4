"""The archive's own Structured Reports, written into the study they are about: its annotations on request
(``POST /studies/{id}/annotations/sr``), and each report when it is verified (``reports.verify_report``).

An SR takes the patient and study attributes from the archive's stored instances (highdicom's ``evidence``: the
header of the first annotated image, or of the study's first image, and the UIDs of the others; the annotated
images' headers give their Pixel Spacing and frames), is built and encoded in
a worker thread (``reporting/sr.py``), and is then stored exactly as an upload or a STOW-RS instance
(``dicomweb.services.store``: spooled, validated, placed, indexed), so that QIDO-RS lists it, WADO-RS and C-GET/C-MOVE
retrieve it, and the audit log has it. One SR series per study and kind ("Annotations", "Reports"): the first SR
starts it, the next ones join it, each naming the SRs it supersedes in its Predecessor Documents Sequence (PS3.3
C.17.2.3), so that a viewer that shows the newest SR of a series (OHIF) shows the current one.

Order, and what a crash leaves: a study's exports are serialized by its row lock, held while the SR is built and
stored. The annotations' Tracking UIDs commit first (on a connection of their own), then the SR (the store's own
transaction), then the study's record of it as its newest export (this transaction). A crash after the first leaves
annotations with the UIDs they will be exported with anyway (2.25.<annotation id>); after the second, a stored SR
that the next export does not name as predecessor (that one starts a new series).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from pydicom import Dataset, dcmread
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.archive import Archive
from dicomweb.errors import Conflict, DicomwebError
from dicomweb.instance import InvalidInstance
from dicomweb.services import store
from dicomweb.state import archive_of
from dicomweb.storage import Storage
from dicomweb.urls import base_url

from . import http, sr
from .db import reports as reports_db
from .db import sr as db
from .db import studies as studies_db
from .lookup import load_study
from .models import StructuredReport
from .workflow import new_uid

log = logging.getLogger("dicomweb")

ANNOTATIONS_SERIES = "Annotations"
REPORTS_SERIES = "Reports"
NO_EVIDENCE = (
    "the archive holds no image of the study yet, and an SR takes its patient and study attributes from the "
    "study's stored instances; no SR document was written"
)
# The patient and study attributes highdicom copies from the first evidence instance (Type 2 in the SR: present,
# maybe empty; PS3.3 C.7.1.1, C.7.2.1).
_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _header(storage: Storage, row: dict[str, Any]) -> Dataset:
    """A stored instance's attributes, without its pixels (blocking; an object is read from a temp copy)."""
    try:
        with storage.local_copy(row["file_path"]) as path:
            header = dcmread(path, stop_before_pixels=True)
    except (OSError, ValueError) as exc:
        raise DicomwebError(f"the stored file of instance {row['sop_instance_uid']} cannot be read: {exc}") from None
    for keyword in _COPIED:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _measured(row: dict[str, Any]) -> Dataset:
    """What an SR needs of an image it only measures on (``sr.measurement_group``: its UIDs, frames and spacing),
    from the index: reading 50 images' headers from their files cost a tenth of an export, and on S3 a download
    each."""
    image = Dataset()
    image.SOPClassUID = row["sop_class_uid"]
    image.SOPInstanceUID = row["sop_instance_uid"]
    if row["number_of_frames"] is not None:
        image.NumberOfFrames = row["number_of_frames"]
    if row["pixel_spacing"] is not None:
        with contextlib.suppress(TypeError, ValueError):  # malformed: the spacing is not known (pixels, as in sr.py)
            image.PixelSpacing = orjson.loads(row["pixel_spacing"])
    return image


def _reference(row: dict[str, Any]) -> Dataset:
    return sr.reference(
        row["sop_class_uid"], row["sop_instance_uid"], row["series_instance_uid"], row["study_instance_uid"]
    )


async def _store(archive: Archive, build: Callable[[], Dataset], study_instance_uid: str) -> Dataset:
    """Build and encode an SR in a worker thread, then store it as any instance; the SR (its UIDs)."""
    document, data = await asyncio.to_thread(lambda: _encoded(build()))
    spooled = await archive.storage.temp_writer().close(data)
    try:
        # Without the archive's on_store hook: what the SR holds is the archive's own (its annotations, a report),
        # so there is nothing to import from it, and reading it back would cost highdicom's reading of every group.
        # Sent back from outside, the import skips its groups by their Tracking UIDs (sr_import.py).
        prepared = await store.prepare(archive.storage, spooled, study_instance_uid)
        if isinstance(prepared, InvalidInstance):  # what highdicom built, the archive refuses: a bug of ours
            raise DicomwebError(f"the SR document written is not valid: {prepared.detail}")
        result = (await store.commit(archive, [prepared]))[0]
        if result.failure is not None:
            raise DicomwebError(f"the SR document was not stored: {result.detail}")
    finally:
        await archive.storage.discard([spooled])
    return document


def _encoded(document: Dataset) -> tuple[Dataset, bytes]:
    return document, sr.encode(document)


async def _place(conn: Any, study: dict[str, Any], series_instance_uid: str | None) -> tuple[str, int, int]:
    """The series an SR joins (the given one while the archive holds it, else a new one with the study's next
    series number) and its series and instance numbers."""
    if series_instance_uid is not None:
        place = await db.series_place(conn, series_instance_uid)
        if place is not None:
            number, instance = place
            return series_instance_uid, number or 0, instance
    number = await studies_db.next_series_number(conn, study["id"], study["study_instance_uid"])
    return new_uid(), number, 1


def _document(
    archive: Archive,
    place: tuple[str, int, int, str],
    series_description: str,
    first: Dataset,
    others: list[dict[str, Any]],
    predecessors: list[dict[str, Any]],
) -> sr.Document:
    """Where an SR goes (``place``: its series UID and number, instance number and SOP Instance UID) and its evidence:
    the ``first`` instance's header gives the patient and study, the ``others`` are named by their UIDs, which is all
    highdicom reads of them (copying 50 full headers cost tens of ms)."""
    series_instance_uid, series_number, instance_number, sop_instance_uid = place
    return sr.Document(
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        series_description=series_description,
        evidence=[first, *(_reference(row) for row in others)],
        predecessors=[_reference(p) for p in predecessors],
        institution_name=archive.settings.institution_name or None,
    )


def _organization(archive: Archive) -> str:
    return archive.settings.institution_name or archive.settings.dimse_aet


# ---------------------------------------------------------------------------------------------------- annotations


async def export_annotations(request: Request) -> Response:
    """POST /api/radiology/studies/{id}/annotations/sr: the annotations on the study's images as one TID 1500 SR
    (201); 409 when the study has none (RFC 9110 §15.5.10: the study's state, not the request, is what is missing;
    annotate an image and try again)."""
    study_id = http.path_id(request, "id", "radiology study")
    archive = archive_of(request)
    author = http.caller(request).subject
    async with archive.pool.acquire() as conn, conn.transaction():
        study = await load_study(request, study_id, conn, lock=True)  # one export of a study at a time
        study_instance_uid = study["study_instance_uid"]
        annotations = await db.study_annotations(conn, study_instance_uid)
        if not annotations:
            raise Conflict(
                "the study has no annotations to export; annotate its images first "
                "(POST /api/radiology/images/{imageId}/annotations)"
            )
        previous = await db.last_export(conn, study_id)
        predecessors = await db.stored(conn, [previous["sop_instance_uid"]]) if previous else []
        series_instance_uid, series_number, instance_number = await _place(
            conn, study, predecessors[0]["series_instance_uid"] if predecessors else None
        )
        images = list({a["sop_instance_uid"]: a for a in annotations}.values())
        for image in images:
            image["study_instance_uid"] = study_instance_uid
        sop_instance_uid = new_uid()
        # The annotations get their Tracking UIDs committed before the SR is stored, where the SR import looks for
        # them: it skips the groups of annotations the archive has, so it never imports its own export back.
        uids = [(a["id"], sr.tracking_uid(a)) for a in annotations if not a["tracking_uid"]]
        if uids:
            async with archive.pool.acquire() as other:
                await db.set_tracking_uids(other, uids)

        def build() -> Dataset:
            # The first image gives the SR its patient and study (read whole); the others only their UIDs,
            # frames and spacing.
            headers = {images[0]["sop_instance_uid"]: _header(archive.storage, images[0])}
            headers.update((image["sop_instance_uid"], _measured(image)) for image in images[1:])
            where = _document(
                archive,
                (series_instance_uid, series_number, instance_number, sop_instance_uid),
                ANNOTATIONS_SERIES,
                headers[images[0]["sop_instance_uid"]],
                images[1:],
                predecessors,
            )
            return sr.annotation_report(annotations, headers, author, where)

        document = await _store(archive, build, study_instance_uid)
        await db.record_export(conn, study_id, sop_instance_uid, series_instance_uid, author)
    url = f"{base_url(request, archive.settings.public_url)}/studies/{study_instance_uid}/series/{series_instance_uid}"
    url += f"/instances/{sop_instance_uid}"
    body = StructuredReport(
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=str(document.SOPClassUID),
        retrieve_url=url,
        annotations=len(annotations),
        predecessor=predecessors[0]["sop_instance_uid"] if predecessors else None,
    )
    return http.ModelResponse(body, status_code=201, headers={"location": url})


# ---------------------------------------------------------------------------------------------------- reports


def _text(report: dict[str, Any]) -> sr.ReportText:
    return sr.ReportText(report["findings"] or "", report["impression"] or "", report["recommendations"] or "")


async def write_report_sr(archive: Archive, report_id: uuid.UUID) -> dict[str, Any]:
    """Write a verified report (or addendum) as an SR document in its study and record its UIDs on the report, or
    why none was written; the report's row as it is then.

    An addendum's SR holds the report it amends and every addendum verified so far, and names the SRs written for
    them before as predecessors. Without a stored image of the study (no evidence) nothing is written: the report
    says why (``sr_error``), and it stays so; the signature is what counts, the SR is its copy for DICOM clients.
    """
    async with archive.pool.acquire() as conn, conn.transaction():
        report = await reports_db.get(conn, report_id)
        if report is None:
            raise DicomwebError(f"the verified report {report_id} is gone")
        study = await studies_db.get(conn, report["study_id"], lock=True)  # one SR of a study at a time
        assert study is not None  # the report would have gone with it
        root = await reports_db.get(conn, report["parent_report_id"]) if report["parent_report_id"] else report
        assert root is not None
        study_instance_uid = study["study_instance_uid"]
        evidence = await db.study_evidence(conn, study_instance_uid)
        if not evidence:
            return await db.record_report_sr(conn, report_id, None, None, NO_EVIDENCE)
        addenda = await db.verified_addenda(conn, root["id"]) if report["parent_report_id"] else []
        predecessors = await db.stored(conn, await db.report_srs(conn, root["id"]))
        series_instance_uid, series_number, instance_number = await _place(
            conn, study, await db.report_series(conn, study["id"])
        )
        sop_instance_uid = new_uid()
        signed = sr.Verification(
            author=root["author"],
            verified_by=report["verified_by"],
            organization=_organization(archive),
            verified_at=report["verified_at"],
            modality=study["modality"],
        )

        def build() -> Dataset:
            where = _document(
                archive,
                (series_instance_uid, series_number, instance_number, sop_instance_uid),
                REPORTS_SERIES,
                _header(archive.storage, evidence[0]),
                evidence[1:],
                predecessors,
            )
            return sr.diagnostic_report(_text(root), [_text(a) for a in addenda], signed, where)

        await _store(archive, build, study_instance_uid)
        return await db.record_report_sr(conn, report_id, sop_instance_uid, series_instance_uid, None)


async def report_sr_after_verification(archive: Archive, report: dict[str, Any]) -> dict[str, Any]:
    """``write_report_sr`` for a report whose verification has committed: a failure is logged and recorded on the
    report (``sr_error``), never raised, since the signature stands and a retried verification would be refused."""
    try:
        return await write_report_sr(archive, report["id"])
    except Exception as exc:  # the database may be gone too: then answer with the report as verified
        log.exception("the SR of verified report %s could not be written", report["id"])
        error = f"the SR document could not be written: {exc}"
        try:
            async with archive.pool.acquire() as conn:
                return await db.record_report_sr(conn, report["id"], None, None, error[:1000])
        except Exception:
            log.exception("the failure to write the SR of report %s could not be recorded", report["id"])
            return {**report, "sr_error": error}
