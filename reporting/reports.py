"""Radiology reports: write (from a template or not), edit under optimistic concurrency, sign, add addenda.

A report is a draft or preliminary until it is verified (signed), which makes it final and immutable; corrections
are addenda linked to it. Every write is a new version of the report, kept in full, so nothing a radiologist wrote
is lost. An update names the version it read (``If-Match: "<version>"``, the ETag a GET answered, or ``version``
in the body; RFC 9110 §13.1.1): a writer who read an older version gets 409 instead of overwriting the other's
work (a lost update), and one who names none gets 428 (RFC 6585 §3).
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest, Conflict, InvalidFields, NotFound, PreconditionRequired
from dicomweb.state import archive_of

from . import http
from .db import reports as db
from .db import studies as studies_db
from .db import templates as templates_db
from .lookup import load_study
from .models import AddendumCreate, Report, ReportCreate, ReportDetail, ReportUpdate, ReportVersion
from .sr_export import report_sr_after_verification
from .workflow import (
    ReportStatus,
    ReportType,
    StudyStatus,
    check_addendum,
    check_report_edit,
    check_study_transition,
    check_verification,
    fill,
)

REPORTS = "/api/radiology/reports"
_ETAG = re.compile(r'\s*"(\d{1,9})"\s*')  # a strong entity tag holding a version: "3" (weak W/"3" never matches)


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(request: Request) -> int | None:
    """The version an If-Match header names, if there is one; 400 for anything but one ETag of a report."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    match = _ETAG.fullmatch(header)
    if match is None:
        raise BadRequest(f'If-Match must be the ETag a GET of the report answered, e.g. "3", not {header[:40]!r}')
    return int(match.group(1))


def expected_version(request: Request, body_version: int | None) -> int:
    """The version the writer read: If-Match or the body's ``version`` (428 when neither, 400 if they differ)."""
    header_version = if_match(request)
    if header_version is not None and body_version is not None and header_version != body_version:
        raise BadRequest(f"If-Match names version {header_version} but the body version {body_version}")
    version = header_version if header_version is not None else body_version
    if version is None:
        raise PreconditionRequired(
            'name the version of the report you read: If-Match: "<version>" (the ETag of GET) or "version" in the '
            "body, so that a concurrent edit is refused rather than overwritten"
        )
    return version


def stale(report: Mapping[str, Any], version: int) -> Conflict:
    """409 for a writer who read an older version; the body and the ETag name the current one."""
    return Conflict(
        f"the report was changed since you read it (you read version {version}, it is at version "
        f"{report['version']}); read it again and reapply your changes",
        headers={"etag": etag(report["version"])},
        extra={"currentVersion": report["version"], "currentStatus": report["status"]},
    )


def _iso(day: datetime.date | None) -> str | None:
    return day.isoformat() if day else None


def placeholder_values(
    study: Mapping[str, Any],
    patient: Mapping[str, Any] | None,
    archived: Mapping[str, Any] | None,
    today: datetime.date,
) -> dict[str, str | None]:
    """What each template placeholder (workflow.PLACEHOLDERS) stands for in a report on ``study``: the patient's
    demographics from the archive's DICOM data (``patient``) when it holds the study, the rest from the workflow
    record, falling back to the archive's study attributes (``archived``); dates in ISO 8601."""
    patient = patient or {}
    archived = archived or {}
    return {
        "patientName": patient.get("patient_name") or study["patient_name"],
        "patientId": study["patient_id"],
        "patientBirthDate": _iso(patient.get("patient_birth_date")),
        "patientSex": patient.get("patient_sex"),
        "accessionNumber": study["accession_number"],
        "studyDate": _iso(study["study_date"] or archived.get("study_date")),
        "modality": study["modality"],
        "studyDescription": study["study_description"] or archived.get("study_description"),
        "bodyPart": study["body_part"],
        "referringPhysician": study["referring_physician"] or archived.get("referring_physician_name"),
        "performingTechnician": study["performing_technician"],
        "studyInstanceUID": study["study_instance_uid"],
        "reportDate": today.isoformat(),
    }


async def _report(request: Request, conn: Any, report_id: uuid.UUID) -> dict[str, Any]:
    """The report (404 if unknown); its study is named in the request's audit event."""
    report = await db.get(conn, report_id)
    if report is None:
        raise NotFound(f"no radiology report with id {report_id}")
    await load_study(request, report["study_id"], conn)
    return report


def _answer(report: Mapping[str, Any], status_code: int = 200) -> Response:
    headers = {"etag": etag(report["version"])}
    if status_code == 201:
        headers["location"] = f"{REPORTS}/{report['id']}"
    return http.ModelResponse(Report.model_validate(report), status_code=status_code, headers=headers)


async def create_report(request: Request) -> Response:
    """POST /api/radiology/studies/{studyId}/report: a new report (201); a template fills the findings."""
    study_id = http.path_id(request, "studyId", "radiology study")
    body = await http.json_body(request, ReportCreate)
    author = http.caller(request).subject
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        study = await load_study(request, study_id, conn)
        findings = body.findings
        if body.template_id is not None:
            template = await templates_db.get(conn, body.template_id)
            if template is None:
                raise NotFound(f"no report template with id {body.template_id}")
            if not template["is_active"]:
                raise InvalidFields([{"field": "templateId", "message": "the template is not active"}])
            if findings is None:
                uid = study["study_instance_uid"]
                patient = await studies_db.patient_attributes(conn, uid)
                archived = await templates_db.archive_study(conn, uid)
                today = datetime.datetime.now(datetime.UTC).date()
                findings = fill(template["content"], placeholder_values(study, patient, archived, today))
        values = {
            "study_id": study_id,
            "report_type": str(body.report_type),
            "status": str(body.status),
            "findings": findings or "",
            "impression": body.impression,
            "recommendations": body.recommendations,
            "template_id": body.template_id,
        }
        report = await db.insert(conn, values, author)
    return _answer(report, 201)


async def study_reports(request: Request) -> Response:
    """GET /api/radiology/studies/{studyId}/reports: the study's reports and addenda, oldest first."""
    study_id = http.path_id(request, "studyId", "radiology study")
    async with archive_of(request).pool.acquire() as conn:
        await load_study(request, study_id, conn)
        rows = await db.for_study(conn, study_id)
    return http.ModelResponse([Report.model_validate(row) for row in rows])


async def get_report(request: Request) -> Response:
    """GET /api/radiology/reports/{id}: the report with every version (oldest first) and its addenda."""
    report_id = http.path_id(request, "id", "radiology report")
    async with archive_of(request).pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        report = await _report(request, conn, report_id)
        versions = await db.versions(conn, report_id)
        addenda = await db.addenda(conn, report_id)
    detail = ReportDetail.model_validate(
        {
            **report,
            "versions": [ReportVersion.model_validate(v) for v in versions],
            "addenda": [Report.model_validate(a) for a in addenda],
        }
    )
    return http.ModelResponse(detail, headers={"etag": etag(report["version"])})


async def update_report(request: Request) -> Response:
    """PUT /api/radiology/reports/{id}: change a report that is not final, as the version the writer read."""
    report_id = http.path_id(request, "id", "radiology report")
    body = await http.json_body(request, ReportUpdate)
    # A field left out or null keeps its value.
    changes = {k: v for k, v in body.model_dump(exclude={"version"}).items() if v is not None}
    if body.status is not None:
        changes["status"] = str(body.status)
    subject = http.caller(request).subject
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        report = await _report(request, conn, report_id)  # an unknown report is 404 before any precondition
        version = expected_version(request, body.version)
        current = ReportStatus(report["status"])
        check_report_edit(current, body.status or current)
        if report["version"] != version:
            raise stale(report, version)
        updated = await db.update(conn, report_id, version, changes, subject)
        if updated is None:  # another writer committed between our read and our update
            now = await db.get(conn, report_id)
            if now is None:
                raise NotFound(f"no radiology report with id {report_id}")
            check_report_edit(ReportStatus(now["status"]), body.status or current)
            raise stale(now, version)
    return _answer(updated)


async def verify_report(request: Request) -> Response:
    """POST /api/radiology/reports/{id}/verify: sign the report as final; a completed study becomes reported.

    The study and the report are locked in that order (as deleting a study does), so that the study's status that
    allowed the signature holds until the signature commits, with no deadlock between the two. The report is then
    written as an SR document in the study (``sr_export.write_report_sr``), after the signature commits: a crash in
    between leaves a verified report without SR (``srSOPInstanceUID`` null), never an SR of an unsigned report.
    """
    report_id = http.path_id(request, "id", "radiology report")
    expected = if_match(request)
    subject = http.caller(request).subject
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        found = await db.get(conn, report_id)
        if found is None:
            raise NotFound(f"no radiology report with id {report_id}")
        study = await load_study(request, found["study_id"], conn, lock=True)
        report = await db.get(conn, report_id, lock=True)
        if report is None:  # deleted with its study meanwhile
            raise NotFound(f"no radiology report with id {report_id}")
        study_status = StudyStatus(study["status"])
        check_verification(ReportStatus(report["status"]), study_status)
        if expected is not None and expected != report["version"]:
            raise stale(report, expected)
        signed = await db.verify(conn, report_id, subject)
        if study_status is StudyStatus.COMPLETED:
            check_study_transition(study_status, StudyStatus.REPORTED)
            await studies_db.set_status(conn, study["id"], StudyStatus.REPORTED)
    # The signature has committed; its SR document follows (sr_export: written and recorded, or why not recorded).
    signed = await report_sr_after_verification(archive_of(request), signed)
    return _answer(signed)


async def create_addendum(request: Request) -> Response:
    """POST /api/radiology/reports/{id}/addendum: a draft addendum to a final report (201).

    An addendum to an addendum is linked to the report they both amend, so a report lists all of its addenda.
    """
    report_id = http.path_id(request, "id", "radiology report")
    body = await http.json_body(request, AddendumCreate)
    author = http.caller(request).subject
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        parent = await _report(request, conn, report_id)
        check_addendum(ReportStatus(parent["status"]))  # final is terminal: no lock needed to keep it so
        values = {
            **body.model_dump(),
            "study_id": parent["study_id"],
            "parent_report_id": parent["parent_report_id"] or parent["id"],
            "report_type": str(ReportType.ADDENDUM),
            "status": str(ReportStatus.DRAFT),
        }
        addendum = await db.insert(conn, values, author)
    return _answer(addendum, 201)
