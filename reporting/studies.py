"""Workflow studies: schedule, list, read, move through the status workflow, delete; announce series; list images.

A workflow study is a scheduled examination with an accession number; its images are the archive's instances of
its StudyInstanceUID, so DICOMweb viewers and this API always see the same images.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from dicomweb.audit import note_study
from dicomweb.db import mpps as mpps_db
from dicomweb.errors import Conflict
from dicomweb.services.delete import delete_rows, remove_files
from dicomweb.state import archive_of

from . import http
from .db import reports as reports_db
from .db import sr_unimported
from .db import studies as db
from .lookup import image_model, load_study
from .models import (
    MeasurementNotImported,
    ModalityInfo,
    Page,
    PerformedProcedureStep,
    PerformedProcedureStepListed,
    PerformedStepQuery,
    Report,
    Series,
    SeriesCreate,
    Study,
    StudyCreate,
    StudyDetail,
    StudyQuery,
    StudyStatusChange,
)
from .workflow import (
    MODALITY_NAMES,
    StudyStatus,
    accession_number,
    check_study_transition,
    new_uid,
    procedure_id,
)

log = logging.getLogger("dicomweb")

GENERATED_ACCESSION_ATTEMPTS = 5  # a generated accession number is random; retry on the rare collision


async def create_study(request: Request) -> Response:
    """POST /api/radiology/studies: schedule a study (201)."""
    body = await http.json_body(request, StudyCreate)
    values = body.model_dump()
    values["modality"] = str(body.modality)
    values["study_instance_uid"] = body.study_instance_uid or new_uid()
    values["requested_procedure_id"] = body.requested_procedure_id or procedure_id("RP")
    values["scheduled_procedure_step_id"] = body.scheduled_procedure_step_id or procedure_id("SPS")
    note_study(request, values["study_instance_uid"], body.patient_id)
    archive = archive_of(request)
    created_by = http.caller(request).subject
    async with archive.pool.acquire() as conn:
        for _ in range(GENERATED_ACCESSION_ATTEMPTS):
            values["accession_number"] = body.accession_number or accession_number()
            try:
                study = await db.insert(conn, values, created_by)
                break
            except db.Taken as taken:
                if taken.column == "study_instance_uid":
                    uid = values["study_instance_uid"]
                    raise Conflict(f"a radiology study with StudyInstanceUID {uid} exists") from None
                if body.accession_number:
                    raise Conflict(f"accession number {body.accession_number} is already in use") from None
        else:  # pragma: no cover - five collisions in a million
            raise Conflict("could not generate a unique accession number; try again")
    location = f"/api/radiology/studies/{study['id']}"
    return http.ModelResponse(Study.model_validate(study), status_code=201, headers={"location": location})


async def list_studies(request: Request) -> Response:
    """GET /api/radiology/studies?status=&modality=&patientId=&accessionNumber=&dateFrom=&dateTo=&page=&limit="""
    params = http.query(request, StudyQuery)
    filters = db.Filters(
        status=params.status,
        modality=params.modality,
        patient_id=params.patient_id,
        accession_number=params.accession_number,
        date_from=params.date_from,
        date_to=params.date_to,
        limit=params.limit,
        offset=(params.page - 1) * params.limit,
    )
    async with archive_of(request).pool.acquire() as conn:
        rows, total = await db.search(conn, filters)
    items = [Study.model_validate(row) for row in rows]
    return http.ModelResponse(Page[Study](items=items, total=total, page=params.page, limit=params.limit))


async def list_performed_steps(request: Request) -> Response:
    """GET /api/radiology/performed-procedure-steps?unscheduled=&page=&limit=: what modalities reported by MPPS."""
    params = http.query(request, PerformedStepQuery)
    async with archive_of(request).pool.acquire() as conn:
        rows, total = await mpps_db.search(conn, params.unscheduled, params.limit, (params.page - 1) * params.limit)
    items = [PerformedProcedureStepListed.model_validate(row) for row in rows]
    page = Page[PerformedProcedureStepListed](items=items, total=total, page=params.page, limit=params.limit)
    return http.ModelResponse(page)


async def get_study(request: Request) -> Response:
    """GET /api/radiology/studies/{id}: the study with its series, reports and performed procedure steps (MPPS)."""
    study_id = http.path_id(request, "id", "radiology study")
    async with archive_of(request).pool.acquire() as conn:
        study = await load_study(request, study_id, conn)
        series = await db.series(conn, study_id, study["study_instance_uid"])
        reports = await reports_db.for_study(conn, study_id)
        steps = await mpps_db.for_study(conn, study_id)
        not_imported = await sr_unimported.for_study(conn, study["study_instance_uid"])
    detail = StudyDetail.model_validate(
        {
            **study,
            "series": [Series.model_validate({**s, "id": s["series_instance_uid"]}) for s in series],
            "reports": [Report.model_validate(r) for r in reports],
            "performed_procedure_steps": [PerformedProcedureStep.model_validate(s) for s in steps],
            "measurements_not_imported": [MeasurementNotImported.model_validate(n) for n in not_imported],
        }
    )
    return http.ModelResponse(detail)


async def change_status(request: Request) -> Response:
    """PUT /api/radiology/studies/{id}/status: one step of the workflow; 409 lists the allowed next states."""
    study_id = http.path_id(request, "id", "radiology study")
    body = await http.json_body(request, StudyStatusChange)
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        study = await load_study(request, study_id, conn, lock=True)
        check_study_transition(StudyStatus(study["status"]), body.status)
        await db.set_status(conn, study_id, body.status)
        study = await load_study(request, study_id, conn)
    return http.ModelResponse(Study.model_validate(study))


async def delete_study(request: Request) -> Response:
    """DELETE /api/radiology/studies/{id}: the workflow study, its reports, annotations, and its images in the
    archive (files included), in one transaction; the files are unlinked once it has committed."""
    study_id = http.path_id(request, "id", "radiology study")
    archive = archive_of(request)
    async with archive.pool.acquire() as conn, conn.transaction():
        study = await load_study(request, study_id, conn, lock=True)
        paths = await delete_rows(conn, study["study_instance_uid"], None, None)
        await db.delete(conn, study_id)
    await remove_files(archive, study["study_instance_uid"], paths)
    log.info("deleted radiology study %s with %d images", study_id, len(paths))
    return Response(status_code=204)


async def create_series(request: Request) -> Response:
    """POST /api/radiology/studies/{studyId}/series: announce a series of the study (201)."""
    study_id = http.path_id(request, "studyId", "radiology study")
    body = await http.json_body(request, SeriesCreate)
    async with archive_of(request).pool.acquire() as conn, conn.transaction():
        study = await load_study(request, study_id, conn, lock=True)
        values = body.model_dump()
        values["series_instance_uid"] = body.series_instance_uid or new_uid()
        values["modality"] = str(body.modality or study["modality"])
        if body.series_number is None:
            values["series_number"] = await db.next_series_number(conn, study_id, study["study_instance_uid"])
        elif await db.series_by_number(conn, study_id, study["study_instance_uid"], body.series_number):
            raise Conflict(f"the study already has a series number {body.series_number}")
        if await db.find_series(conn, values["series_instance_uid"]) is not None:
            raise Conflict(f"series {values['series_instance_uid']} exists")
        if not await db.insert_series(conn, study_id, values, http.caller(request).subject):
            raise Conflict(f"series {values['series_instance_uid']} or number {values['series_number']} is taken")
    series = Series.model_validate({**values, "id": values["series_instance_uid"], "number_of_images": 0})
    return http.ModelResponse(series, status_code=201)


async def study_images(request: Request) -> Response:
    """GET /api/radiology/studies/{id}/images: every image of the study, with what a viewer needs."""
    study_id = http.path_id(request, "id", "radiology study")
    async with archive_of(request).pool.acquire() as conn:
        study = await load_study(request, study_id, conn)
        rows = await db.images(conn, study["study_instance_uid"])
    return http.ModelResponse([image_model(request, row) for row in rows])


async def modalities(request: Request) -> Response:
    """GET /api/radiology/modalities: the modalities a study may be scheduled for."""
    return http.ModelResponse([ModalityInfo(code=code, name=name) for code, name in MODALITY_NAMES.items()])
