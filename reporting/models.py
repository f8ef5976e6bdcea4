"""The request and response bodies of /api/radiology, as pydantic models: they validate what comes in, shape what
goes out (camelCase), and are the source of the OpenAPI document, so the documentation cannot drift from the code.

Lengths follow the DICOM value representations the values end up in (PS3.5 §6.2 Table 6.2-1): AccessionNumber is
SH (16), StudyDescription LO (64), BodyPartExamined CS (16), person names PN (64 per component group).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, Field, computed_field, field_validator, model_validator

from dicomweb.db.commitment import State as CommitmentState
from dicomweb.dimse.nodes import check_ae_title
from dicomweb.jsonapi import UID, RequestModel, ResponseModel

from .workflow import PLACEHOLDERS, Modality, ReportStatus, ReportType, StudyStatus, unknown_placeholders


def _dicom_text(value: str) -> str:
    # Backslash separates values in DICOM strings, and control characters are not allowed in SH/LO/CS (PS3.5 §6.2).
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError("must not contain backslashes or control characters")
    return value


ShortString = Annotated[str, Field(min_length=1, max_length=16), AfterValidator(_dicom_text)]
LongString = Annotated[str, Field(max_length=64), AfterValidator(_dicom_text)]
PersonName = Annotated[str, Field(max_length=64), AfterValidator(_dicom_text)]
Reference = Annotated[str, Field(min_length=1, max_length=128)]
Text = Annotated[str, Field(max_length=100_000)]
Colour = Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$", examples=["#FF8800"])]


def _ae_title(value: str) -> str:
    return check_ae_title(value)


AETitle = Annotated[str, AfterValidator(_ae_title)]
Sex = Literal["M", "F", "O"]  # PatientSex (0010,0040), PS3.3 C.7.1.1
# Requested Procedure Priority (0040,1003), PS3.3 C.4.11
Priority = Literal["STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW"]

# ---------------------------------------------------------------------------------------------------- studies


class ProcedureCode(RequestModel):
    """Requested Procedure Code Sequence (0032,1064): one code (PS3.3 Table 8.8-1)."""

    code_value: ShortString
    coding_scheme_designator: ShortString
    code_meaning: LongString


class StudyCreate(RequestModel):
    """A study to schedule; accessionNumber and studyInstanceUID are generated when not given, as are
    requestedProcedureId and scheduledProcedureStepId. scheduledAt is the scheduled procedure step's start, and the
    scheduled* and requested* fields are what a modality's worklist shows of the order (PS3.4 Table K.6-1)."""

    order_id: Reference | None = None
    patient_id: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_dicom_text)]
    patient_name: PersonName | None = None
    accession_number: ShortString | None = None
    study_instance_uid: UID | None = Field(default=None, alias="studyInstanceUID")
    modality: Modality
    study_description: LongString | None = None
    body_part: ShortString | None = None
    referring_physician: PersonName | None = None
    performing_technician: PersonName | None = None
    scheduled_at: datetime.datetime | None = None
    study_date: datetime.date | None = None
    patient_birth_date: datetime.date | None = None
    patient_sex: Sex | None = None
    scheduled_station_ae_title: AETitle | None = Field(default=None, alias="scheduledStationAETitle")
    scheduled_station_name: ShortString | None = None
    scheduled_performing_physician: PersonName | None = None
    requested_procedure_id: ShortString | None = None
    requested_procedure_description: LongString | None = None
    requested_procedure_code: ProcedureCode | None = None
    scheduled_procedure_step_id: ShortString | None = None
    scheduled_procedure_step_description: LongString | None = None
    priority: Priority | None = None


class StudyStatusChange(RequestModel):
    status: StudyStatus


class ProcedureCodeOut(ResponseModel):
    code_value: str
    coding_scheme_designator: str
    code_meaning: str


class Study(ResponseModel):
    id: uuid.UUID
    order_id: str | None
    patient_id: str
    patient_name: str | None
    accession_number: str
    study_instance_uid: str = Field(alias="studyInstanceUID")
    modality: Modality
    study_description: str | None
    body_part: str | None
    referring_physician: str | None
    performing_technician: str | None
    scheduled_at: datetime.datetime | None
    study_date: datetime.date | None
    patient_birth_date: datetime.date | None
    patient_sex: Sex | None
    scheduled_station_ae_title: str | None = Field(alias="scheduledStationAETitle")
    scheduled_station_name: str | None
    scheduled_performing_physician: str | None
    requested_procedure_id: str
    requested_procedure_description: str | None
    requested_procedure_code: ProcedureCodeOut | None
    scheduled_procedure_step_id: str
    scheduled_procedure_step_description: str | None
    priority: Priority | None
    status: StudyStatus
    number_of_series: int
    number_of_images: int
    storage_bytes: int
    created_by: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


class StudyQuery(RequestModel):
    """Filters of GET /api/radiology/studies; dates bound studyDate (or the scheduled day when there is none)."""

    status: StudyStatus | None = None
    modality: Modality | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    page: int = Field(default=1, ge=1, le=1_000_000)
    limit: int = Field(default=20, ge=1, le=100)

    @model_validator(mode="after")
    def _range(self) -> StudyQuery:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("dateFrom is after dateTo")
        return self


T = TypeVar("T")


class Page(ResponseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    limit: int


# ---------------------------------------------------------------------------------------------------- series


class SeriesCreate(RequestModel):
    """A series to expect in a study; seriesInstanceUID is generated when not given, modality defaults to the
    study's, seriesNumber to the next free number."""

    series_instance_uid: UID | None = Field(default=None, alias="seriesInstanceUID")
    series_number: int | None = Field(default=None, ge=0, le=2**31 - 1)
    modality: Modality | None = None
    series_description: LongString | None = None
    body_part: ShortString | None = None


class Series(ResponseModel):
    """A series of the study: announced through the API, arrived in the archive, or both."""

    id: str  # the SeriesInstanceUID
    series_instance_uid: str = Field(alias="seriesInstanceUID")
    series_number: int | None
    modality: str | None
    series_description: str | None
    body_part: str | None
    number_of_images: int


class PerformedSeries(ResponseModel):
    """A series an MPPS lists (Performed Series Sequence), with the images it referenced and those the archive
    holds: ``complete`` once every referenced image has arrived."""

    series_instance_uid: str = Field(alias="seriesInstanceUID")
    series_description: str | None
    images: int
    stored_images: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        return self.stored_images >= self.images


class PerformedProcedureStep(ResponseModel):
    """A Modality Performed Procedure Step a modality reported for the study (PS3.4 Annex F)."""

    sop_instance_uid: str = Field(alias="sopInstanceUID")
    status: Literal["IN PROGRESS", "COMPLETED", "DISCONTINUED"]
    calling_ae_title: str = Field(alias="callingAETitle")
    station_ae_title: str | None = Field(alias="stationAETitle")
    procedure_step_id: str | None
    description: str | None
    start_date: datetime.date | None
    start_time: datetime.time | None
    end_date: datetime.date | None
    end_time: datetime.time | None
    discontinuation_reason: str | None
    performed_series: list[PerformedSeries]


class PerformedProcedureStepListed(PerformedProcedureStep):
    """A step as listed on its own: the order it performed (none: an unscheduled procedure) and what it named."""

    study_id: uuid.UUID | None
    study_instance_uid: str | None = Field(alias="studyInstanceUID")
    accession_number: str | None
    patient_id: str | None
    patient_name: str | None


class PerformedStepQuery(RequestModel):
    """Filters of GET /api/radiology/performed-procedure-steps."""

    unscheduled: bool = Field(default=False, description="only the steps that named no order the archive knows")
    page: int = Field(default=1, ge=1, le=1_000_000)
    limit: int = Field(default=20, ge=1, le=100)


class StorageCommitment(ResponseModel):
    """A storage commitment request a modality made (PS3.4 Annex J, N-ACTION) and what became of its report
    (N-EVENT-REPORT)."""

    transaction_uid: str = Field(alias="transactionUID")
    calling_ae_title: str = Field(alias="callingAETitle")
    instances: int = Field(description="the instances it named (its Referenced SOP Sequence)")
    received_at: datetime.datetime
    state: CommitmentState = Field(
        description="pending: its report is not sent yet; reported; abandoned: not sent within "
        "DICOMWEB_COMMIT_RETRY_HOURS"
    )
    attempts: int = Field(description="attempts to send its report begun")
    next_attempt_at: datetime.datetime
    claimed_by: str | None = Field(description="the server process sending its report now (host:pid:listener)")
    lease_until: datetime.datetime | None = Field(description="when another process may take it over")
    last_error: str | None = Field(description="why the last attempt sent nothing")
    event_type_id: int | None = Field(alias="eventTypeID", description="of the report: 1 all committed, 2 some failed")
    failed_instances: int | None = Field(description="the instances the report did not commit to")
    reported_at: datetime.datetime | None


class StorageCommitmentQuery(RequestModel):
    """Filters of GET /api/radiology/storage-commitments."""

    state: CommitmentState | None = None
    page: int = Field(default=1, ge=1, le=1_000_000)
    limit: int = Field(default=20, ge=1, le=100)


# ---------------------------------------------------------------------------------------------------- images


class ImageLinks(ResponseModel):
    """Where a viewer fetches the image: DICOMweb (PS3.18 §10.4) and WADO-URI (§9) URLs, absolute."""

    metadata: str
    frames: str  # the first frame; replace the trailing 1 with a frame number or a comma list
    rendered: str
    thumbnail: str
    file: str
    wado_uri: str = Field(alias="wadoURI")


class Image(ResponseModel):
    id: str  # the SOPInstanceUID
    sop_instance_uid: str = Field(alias="sopInstanceUID")
    series_instance_uid: str = Field(alias="seriesInstanceUID")
    study_instance_uid: str = Field(alias="studyInstanceUID")
    sop_class_uid: str = Field(alias="sopClassUID")
    series_number: int | None
    instance_number: int | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    transfer_syntax_uid: str = Field(alias="transferSyntaxUID")
    file_size: int
    links: ImageLinks


class StructuredReport(ResponseModel):
    """An SR document the archive wrote and stored in the study (retrieve it by DICOMweb or DIMSE)."""

    study_instance_uid: str = Field(alias="studyInstanceUID")
    series_instance_uid: str = Field(alias="seriesInstanceUID")
    sop_instance_uid: str = Field(alias="sopInstanceUID")
    sop_class_uid: str = Field(alias="sopClassUID")
    retrieve_url: str = Field(alias="retrieveURL", description="the instance's WADO-RS URL")
    annotations: int = Field(description="the measurement groups it holds: one per annotation")
    predecessor: str | None = Field(description="the SOPInstanceUID of the earlier export it supersedes, if any")


class UploadResult(ResponseModel):
    image: Image
    converted_from: Literal["image/jpeg", "image/png"] | None = Field(
        description="the media type of an uploaded picture stored as a Secondary Capture instance; null for DICOM"
    )


# ---------------------------------------------------------------------------------------------------- annotations


class Point(RequestModel):
    """Image coordinates in pixels: x along columns, y along rows, from the top left corner of the image."""

    x: float = Field(ge=0, allow_inf_nan=False)
    y: float = Field(ge=0, allow_inf_nan=False)


class PointsShape(RequestModel):
    points: list[Point]


class CircleShape(RequestModel):
    center: Point
    radius: float = Field(gt=0, allow_inf_nan=False)


class _AnnotationBase(RequestModel):
    frame_number: int | None = Field(default=None, ge=1, description="for multi-frame images; null is frame 1")
    label: Annotated[str, Field(max_length=1000)] | None = None
    color: Colour | None = None


def _count(points: list[Point], low: int, high: int | None, what: str) -> None:
    if len(points) < low or (high is not None and len(points) > high):
        raise ValueError(what)


class TextAnnotation(_AnnotationBase):
    type: Literal["text"]
    coordinates: PointsShape

    @field_validator("coordinates")
    @classmethod
    def _one(cls, shape: PointsShape) -> PointsShape:
        _count(shape.points, 1, 1, "a text annotation has exactly one point (where the text is anchored)")
        return shape


class ArrowAnnotation(_AnnotationBase):
    type: Literal["arrow"]
    coordinates: PointsShape

    @field_validator("coordinates")
    @classmethod
    def _two(cls, shape: PointsShape) -> PointsShape:
        _count(shape.points, 2, 2, "an arrow has exactly two points (tail, then head)")
        if shape.points[0] == shape.points[1]:
            raise ValueError("an arrow's two points must differ")
        return shape


class CircleAnnotation(_AnnotationBase):
    type: Literal["circle"]
    coordinates: CircleShape


class MeasurementAnnotation(_AnnotationBase):
    type: Literal["measurement"]
    coordinates: PointsShape

    @field_validator("coordinates")
    @classmethod
    def _path(cls, shape: PointsShape) -> PointsShape:
        _count(shape.points, 2, None, "a measurement has two or more points")
        return shape


class RoiAnnotation(_AnnotationBase):
    type: Literal["roi"]
    coordinates: PointsShape

    @field_validator("coordinates")
    @classmethod
    def _polygon(cls, shape: PointsShape) -> PointsShape:
        points = shape.points
        if len(points) > 1 and points[0] == points[-1]:
            points = points[:-1]  # a polygon given closed (last point = first) is the same polygon
        distinct = {(p.x, p.y) for p in points}
        if len(distinct) < 3:
            raise ValueError("a region of interest is a closed polygon of at least three distinct points")
        return PointsShape(points=points)


AnnotationInput = Annotated[
    TextAnnotation | ArrowAnnotation | CircleAnnotation | MeasurementAnnotation | RoiAnnotation,
    Field(discriminator="type"),
]


class Annotation(ResponseModel):
    id: uuid.UUID
    image_id: str
    frame_number: int | None
    type: Literal["text", "arrow", "circle", "measurement", "roi"]
    coordinates: PointsShape | CircleShape
    label: str | None
    color: str | None
    value: float | None = Field(description="the measured value (a length in mm), when the annotation has one")
    unit: str | None = Field(description="the value's UCUM unit, e.g. mm")
    source_sop_instance_uid: str | None = Field(
        description="the Structured Report the annotation was imported from; null if made through this API"
    )
    tracking_uid: str | None = Field(description="the Tracking Unique Identifier of its SR measurement group")
    created_by: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


# ---------------------------------------------------------------------------------------------------- reports


class ReportCreate(RequestModel):
    """A new report (a draft unless status says preliminary); templateId fills the findings from the template."""

    report_type: Literal[ReportType.PRELIMINARY, ReportType.FINAL] = ReportType.PRELIMINARY
    status: Literal[ReportStatus.DRAFT, ReportStatus.PRELIMINARY] = ReportStatus.DRAFT
    findings: Text | None = None
    impression: Text = ""
    recommendations: Text = ""
    template_id: uuid.UUID | None = None


class ReportUpdate(RequestModel):
    """Changes to a report that is not final; ``version`` (or If-Match) is the version the writer read."""

    status: Literal[ReportStatus.DRAFT, ReportStatus.PRELIMINARY, ReportStatus.FINAL] | None = None
    findings: Text | None = None
    impression: Text | None = None
    recommendations: Text | None = None
    version: int | None = Field(default=None, ge=1)


class AddendumCreate(RequestModel):
    findings: Text = ""
    impression: Text = ""
    recommendations: Text = ""


class ReportVersion(ResponseModel):
    version: int
    action: str
    changed_by: str
    changed_at: datetime.datetime
    status: ReportStatus
    findings: str
    impression: str
    recommendations: str


class Report(ResponseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    parent_report_id: uuid.UUID | None
    report_type: ReportType
    status: ReportStatus
    findings: str
    impression: str
    recommendations: str
    template_id: uuid.UUID | None
    author: str
    verified_by: str | None
    verified_at: datetime.datetime | None
    version: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    sr_series_instance_uid: str | None = Field(
        alias="srSeriesInstanceUID", description="the series of the SR document written when the report was verified"
    )
    sr_sop_instance_uid: str | None = Field(
        alias="srSOPInstanceUID",
        description="the SR document written when the report was verified (in the report's study); null: none (yet)",
    )
    sr_error: str | None = Field(description="why no SR document was written for the verified report, if none was")


class ReportDetail(Report):
    versions: list[ReportVersion]
    addenda: list[Report]


class MeasurementNotImported(ResponseModel):
    """A measurement group of a Structured Report stored in the study that did not become an annotation; it stays on
    the SR (reporting/sr_import.py)."""

    source_sop_instance_uid: str = Field(description="the SR's SOP Instance UID")
    tracking_uid: str | None = Field(description="the group's Tracking Unique Identifier; null: the whole SR")
    reason: str
    waiting_for_image: str | None = Field(
        description="the SOP Instance UID of the image the group is on, not stored yet: the group becomes an "
        "annotation once it is; null: the group will not become one"
    )


class StudyDetail(Study):
    series: list[Series]
    reports: list[Report]
    performed_procedure_steps: list[PerformedProcedureStep]
    measurements_not_imported: list[MeasurementNotImported] = Field(
        description="measurement groups of the study's Structured Reports that are not annotations, and why"
    )


# ---------------------------------------------------------------------------------------------------- templates


def _known_placeholders(content: str) -> str:
    unknown = unknown_placeholders(content)
    if unknown:
        names = ", ".join("{{" + name + "}}" for name in unknown)
        known = ", ".join("{{" + name + "}}" for name in sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholders {names}; the known ones are {known}")
    return content


TemplateContent = Annotated[str, Field(min_length=1, max_length=100_000), AfterValidator(_known_placeholders)]


class TemplateCreate(RequestModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    modality: Modality | None = None
    body_part: ShortString | None = None
    content: TemplateContent
    is_active: bool = True


class TemplateUpdate(RequestModel):
    """Changes to a template; fields left out keep their value."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    modality: Modality | None = None
    body_part: ShortString | None = None
    content: TemplateContent | None = None
    is_active: bool | None = None


class Template(ResponseModel):
    id: uuid.UUID
    name: str
    modality: Modality | None
    body_part: str | None
    content: str
    is_active: bool
    created_by: str
    created_at: datetime.datetime
    updated_at: datetime.datetime


class TemplateQuery(RequestModel):
    """Filters of GET /api/radiology/report-templates: the active templates unless isActive=false, which lists the
    inactive ones (deleted, or made inactive by a PUT)."""

    modality: Modality | None = None
    body_part: str | None = None
    is_active: bool = True


class ModalityInfo(ResponseModel):
    code: Modality
    name: str
