"""Structured Reports the archive writes: annotations as a TID 1500 Imaging Measurement Report that OHIF loads as
measurements, and verified reports as a TID 2000 Basic Diagnostic Imaging Report (PS3.16). Pure and blocking (CPU
work: call from a worker thread); highdicom builds every document and content item, nothing here encodes DICOM
by hand.

An annotation becomes one TID 1501 measurement group, shaped as OHIF 3.13's Cornerstone3D adapters write and read
them (``@cornerstonejs/adapters``, dcmjs ``TID300``): a Tracking Identifier naming the tool, a Tracking Unique
Identifier, and one NUM inferred from a SCOORD in the image's pixel coordinates (PS3.3 C.18.6.1.2: (0,0) is the top
left corner of the top left pixel) selected from the image (and frame):

============  ===========================  ==================================================================
annotation    Tracking Identifier          NUM, from which SCOORD
============  ===========================  ==================================================================
measurement   ``...:Length``               Length (410668003, SCT), 2-point POLYLINE; with more points
              ``...:PlanarFreehandROI``    the path's length, an open POLYLINE
arrow         ``...:ArrowAnnotate``        Center (111010, DCM) = 0 {no units}, POLYLINE head then tail; the
                                           label as Finding (121071, DCM) = (CORNERSTONEFREETEXT, CORNERSTONEJS)
circle        ``...:CircleROI``            Area (42798000, SCT), CIRCLE: centre, a point on the circle
roi           ``...:PlanarFreehandROI``    Area (42798000, SCT), POLYLINE closed (the first point repeated)
text          ``...:Probe``                Center (111010, DCM) = 0 {no units}, POINT; the label as for arrows
============  ===========================  ==================================================================

A label also goes in a Comment (121106, DCM) TEXT, which OHIF shows as the measurement's label. Values: a
measurement's own ``value`` (and ``unit``, mm if none) when it has one; otherwise computed from the points and the
image's Pixel Spacing (mm, mm2), or in pixels ({pixel}, {pixel2}) for an image without one.
"""

from __future__ import annotations

import datetime
import io
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from highdicom import sr
from pydicom import Dataset, dcmwrite
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.valuerep import DT

TOOLS = "Cornerstone3DTools@^0.1.0"  # the tracking identifier prefix OHIF 3.13 maps to its tools
FREE_TEXT = "CORNERSTONEFREETEXT"  # OHIF's free-text "code" for a label (its CodeMeaning is the text)
FREE_TEXT_SCHEME = "CORNERSTONEJS"
MAX_CODE_MEANING = 64  # LO (PS3.5 Table 6.2-1)
MANUFACTURER = "dicomweb"
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
NO_UNITS = Code("1", "UCUM", "no units")
MM = Code("mm", "UCUM", "mm")
MM2 = Code("mm2", "UCUM", "mm2")
PIXEL = Code("{pixel}", "UCUM", "pixel")
PIXEL2 = Code("{pixel2}", "UCUM", "square pixel")
ENGLISH = sr.CodedConcept("en-US", "RFC5646", "English (United States)")
SOURCE = Code("260753009", "SCT", "Source")
CONTAINS = sr.RelationshipTypeValues.CONTAINS

# TID 2000 (Basic Diagnostic Imaging Report): a section container (CID 7001) holding one TEXT (CID 7002).
FINDINGS = (codes.DCM.Findings, codes.DCM.Finding)  # 121070, 121071
IMPRESSIONS = (Code("121072", "DCM", "Impressions"), codes.DCM.Impression)  # 121072, 121073
RECOMMENDATIONS = (Code("121074", "DCM", "Recommendations"), codes.DCM.Recommendation)  # 121074, 121075
ADDENDUM = codes.DCM.Addendum  # 121078

# Procedure Reported (121058) by the study's modality (SNOMED CT, as CID 100 codes procedures); others: an imaging
# procedure.
PROCEDURES = {
    "CT": Code("77477000", "SCT", "Computerized axial tomography"),
    "MR": Code("113091000", "SCT", "Magnetic resonance imaging"),
    "US": Code("16310003", "SCT", "Ultrasonography"),
    "CR": Code("363680008", "SCT", "Radiographic imaging procedure"),
    "DX": Code("363680008", "SCT", "Radiographic imaging procedure"),
    "MG": Code("71651007", "SCT", "Mammography"),
}


def tracking_uid(annotation: Mapping[str, Any]) -> str:
    """The annotation's Tracking Unique Identifier: the one it came with, else 2.25.<its id> (PS3.5 §B.2). Part of
    the contract with the SR import, which skips a group whose UID names an annotation (the archive's own export)."""
    uid = annotation.get("tracking_uid")
    return str(uid) if uid else f"2.25.{uuid.UUID(str(annotation['id'])).int}"


def person_name(subject: str) -> str:
    """A token's subject as a PN family name (a trailing caret says it is one, PS3.5 §6.2.1.1); carets and
    backslashes in it would split it, so they become spaces; 64 characters per component."""
    return subject.replace("^", " ").replace("\\", " ").replace("=", " ")[:64] + "^"


@dataclass(frozen=True)
class Spacing:
    """Millimetres per pixel along rows (y) and columns (x); None when the image does not say."""

    row: float
    column: float


def pixel_spacing(image: Dataset) -> Spacing | None:
    """Pixel Spacing (PS3.3 C.7.6.2.1.1: between rows, then between columns), from the image or, for an enhanced
    multi-frame image, its shared Pixel Measures (C.7.6.16.2.1)."""
    value = image.get("PixelSpacing")
    if value is None:
        shared = image.get("SharedFunctionalGroupsSequence")
        measures = shared[0].get("PixelMeasuresSequence") if shared else None
        value = measures[0].get("PixelSpacing") if measures else None
    if not value or len(value) != 2:
        return None
    try:
        row, column = float(value[0]), float(value[1])
    except (TypeError, ValueError):  # an empty or malformed DS component: the spacing is not known
        return None
    return Spacing(row, column) if row > 0 and column > 0 else None


def path_length(points: Sequence[tuple[float, float]], spacing: Spacing | None) -> float:
    sy, sx = (spacing.row, spacing.column) if spacing else (1.0, 1.0)
    return sum(math.hypot((b[0] - a[0]) * sx, (b[1] - a[1]) * sy) for a, b in zip(points, points[1:], strict=False))


def polygon_area(points: Sequence[tuple[float, float]], spacing: Spacing | None) -> float:
    """The shoelace formula over the closed polygon."""
    twice = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(points, [*points[1:], points[0]], strict=True))
    scale = spacing.row * spacing.column if spacing else 1.0
    return abs(twice) / 2 * scale


@dataclass(frozen=True)
class _Group:
    tool: str
    name: Code
    value: float
    unit: Code
    graphic_type: str
    graphic_data: list[tuple[float, float]]
    free_text_finding: bool = False


def _points(annotation: Mapping[str, Any]) -> list[tuple[float, float]]:
    return [(float(p["x"]), float(p["y"])) for p in annotation["coordinates"].get("points", [])]


def _unit(annotation: Mapping[str, Any], fallback: Code) -> Code:
    unit = annotation.get("unit")
    return Code(unit, "UCUM", unit) if unit else fallback


def _group(annotation: Mapping[str, Any], spacing: Spacing | None) -> _Group:
    """What the annotation becomes (the table in the module docstring)."""
    kind = annotation["type"]
    points = _points(annotation)
    length_unit, area_unit = (MM, MM2) if spacing else (PIXEL, PIXEL2)
    if kind == "measurement":
        tool = "Length" if len(points) == 2 else "PlanarFreehandROI"
        value = annotation.get("value")
        unit = _unit(annotation, MM) if value is not None else length_unit
        measured = float(value) if value is not None else path_length(points, spacing)
        return _Group(tool, codes.SCT.Length, measured, unit, "POLYLINE", points)
    if kind == "arrow":  # (tail, head) in the API; OHIF's ArrowAnnotate puts the head first
        return _Group("ArrowAnnotate", codes.DCM.Center, 0.0, NO_UNITS, "POLYLINE", points[::-1], True)
    if kind == "text":
        return _Group("Probe", codes.DCM.Center, 0.0, NO_UNITS, "POINT", points, True)
    if kind == "circle":
        centre, radius = annotation["coordinates"]["center"], float(annotation["coordinates"]["radius"])
        cx, cy = float(centre["x"]), float(centre["y"])
        scale = spacing.row * spacing.column if spacing else 1.0
        area = math.pi * radius * radius * scale
        return _Group("CircleROI", codes.SCT.Area, area, area_unit, "CIRCLE", [(cx, cy), (cx + radius, cy)])
    if kind == "roi":
        closed = [*points, points[0]]
        return _Group("PlanarFreehandROI", codes.SCT.Area, polygon_area(points, spacing), area_unit, "POLYLINE", closed)
    raise ValueError(f"unknown annotation type {kind!r}")


def measurement_group(annotation: Mapping[str, Any], image: Dataset) -> sr.MeasurementsAndQualitativeEvaluations:
    """One annotation as a TID 1501 Measurement Group on ``image`` (its header)."""
    shape = _group(annotation, pixel_spacing(image))
    frames = int(image.get("NumberOfFrames") or 1)
    frame = annotation.get("frame_number") or 1
    referenced_frames = [frame] if frames > 1 else None
    coordinates = sr.CoordinatesForMeasurement(
        graphic_type=shape.graphic_type,
        graphic_data=np.array(shape.graphic_data, dtype=np.float64),
        source_image=sr.SourceImageForRegion(image.SOPClassUID, image.SOPInstanceUID, referenced_frames),
    )
    measurement = sr.Measurement(
        name=shape.name, value=shape.value, unit=shape.unit, referenced_coordinates=[coordinates]
    )
    label = annotation.get("label")
    finding = None
    if shape.free_text_finding and label:
        finding = Code(FREE_TEXT, FREE_TEXT_SCHEME, label[:MAX_CODE_MEANING])
    group = sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(uid=tracking_uid(annotation), identifier=f"{TOOLS}:{shape.tool}"),
        finding_type=finding,
        measurements=[measurement],
    )
    if label:  # OHIF's label: a Comment TEXT in the group (dcmjs LabelData.createQualitativeLabel)
        group[0].ContentSequence.append(
            sr.TextContentItem(
                name=codes.DCM.Comment, value=label, relationship_type=sr.RelationshipTypeValues.CONTAINS
            )
        )
    return group


@dataclass(frozen=True)
class Document:
    """Where an SR goes (its series, its number) and what it is built from."""

    series_instance_uid: str
    series_number: int
    sop_instance_uid: str
    instance_number: int
    series_description: str
    evidence: Sequence[Dataset]  # the first carries the patient and study attributes
    predecessors: Sequence[Dataset] = ()  # SOPClassUID, SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID
    institution_name: str | None = None


def _observer(subject: str, organization: str | None) -> sr.ObservationContext:
    person = sr.PersonObserverIdentifyingAttributes(name=person_name(subject), organization_name=organization)
    return sr.ObservationContext(
        observer_person_context=sr.ObserverContext(
            observer_type=codes.DCM.Person, observer_identifying_attributes=person
        )
    )


def _enhanced_sr(root: Dataset, where: Document, **verification: Any) -> sr.EnhancedSR:
    """A complete Enhanced SR document of ``root`` where ``where`` puts it, superseding its predecessors, with the
    archive as its manufacturer; ``verification``: highdicom's is_final, is_verified and verifier arguments."""
    return sr.EnhancedSR(
        evidence=where.evidence,
        content=root,
        series_instance_uid=where.series_instance_uid,
        series_number=where.series_number,
        sop_instance_uid=where.sop_instance_uid,
        instance_number=where.instance_number,
        manufacturer=MANUFACTURER,
        institution_name=where.institution_name,
        is_complete=True,
        previous_versions=list(where.predecessors) or None,
        **verification,
    )


def _finish(document: sr.EnhancedSR, where: Document) -> Dataset:
    document.SeriesDescription = where.series_description[:64]
    return document


def image_library(images: Sequence[Dataset]) -> sr.ContainerContentItem:
    """The Image Library (TID 1600) as OHIF writes it: one group listing the images, without the descriptors of
    TID 1602 (optional), whose dozen items per image made an export of 50 images' annotations take seconds."""
    group = sr.ContainerContentItem(name=codes.DCM.ImageLibraryGroup, relationship_type=CONTAINS)
    group.ContentSequence = sr.ContentSequence(
        [
            sr.ImageContentItem(
                name=SOURCE,
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID,
                relationship_type=CONTAINS,
            )
            for image in images
        ]
    )
    library = sr.ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=CONTAINS)
    library.ContentSequence = sr.ContentSequence([group])
    return library


def annotation_report(
    annotations: Sequence[Mapping[str, Any]], images: Mapping[str, Dataset], author: str, where: Document
) -> Dataset:
    """The annotations (each on one of ``images``, by SOPInstanceUID) as one TID 1500 Enhanced SR, as OHIF writes it:
    COMPLETE, UNVERIFIED, an Image Library of the images."""
    groups = [measurement_group(a, images[a["sop_instance_uid"]]) for a in annotations]
    referenced = list({a["sop_instance_uid"]: images[a["sop_instance_uid"]] for a in annotations}.values())
    report = sr.MeasurementReport(
        observation_context=_observer(author, where.institution_name),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
        language_of_content_item_and_descendants=sr.LanguageOfContentItemAndDescendants(ENGLISH),
    )
    root = report[0]
    items = root.ContentSequence  # TID 1500: the library comes before the Imaging Measurements
    items.insert(len(items) - 1, image_library(referenced))
    evidence = {ds.SOPInstanceUID for ds in where.evidence}
    missing = {image.SOPInstanceUID for image in referenced} - evidence
    if missing:
        raise ValueError(f"images measured but not in the evidence: {sorted(missing)}")
    # highdicom deep-copies the content it is given, parses the copy back and walks it thrice to check the evidence
    # (checked just above): two thirds of an export's CPU for 50 annotations. The document gets the root container
    # with its first item (the language), then all the items highdicom built for it.
    root.ContentSequence = sr.ContentSequence(items[:1])
    document = _enhanced_sr(root, where)
    document.ContentSequence = items
    return _finish(document, where)


@dataclass(frozen=True)
class ReportText:
    """What a radiologist wrote: one report or addendum."""

    findings: str
    impression: str
    recommendations: str


def _sections(text: ReportText) -> list[sr.ContainerContentItem]:
    sections = []
    for (heading, element), value in (
        (FINDINGS, text.findings),
        (IMPRESSIONS, text.impression),
        (RECOMMENDATIONS, text.recommendations),
    ):
        if value.strip():
            section = sr.ContainerContentItem(name=heading, relationship_type=sr.RelationshipTypeValues.CONTAINS)
            section.ContentSequence = sr.ContentSequence(
                [sr.TextContentItem(name=element, value=value, relationship_type=sr.RelationshipTypeValues.CONTAINS)]
            )
            sections.append(section)
    return sections


@dataclass(frozen=True)
class Verification:
    """Who signed, for whom, and when."""

    author: str
    verified_by: str
    organization: str
    verified_at: datetime.datetime
    modality: str | None


def diagnostic_report(
    report: ReportText, addenda: Sequence[ReportText], signed: Verification, where: Document
) -> Dataset:
    """A verified report (with the addenda verified so far, each an Addendum section) as a TID 2000 Basic Diagnostic
    Imaging Report in an Enhanced SR: COMPLETE, VERIFIED by the signer, final."""
    root = sr.ContainerContentItem(name=codes.LN.DiagnosticImagingReport, template_id="2000")
    items: list[sr.ContentItem] = [
        *sr.LanguageOfContentItemAndDescendants(ENGLISH),
        *_observer(signed.author, signed.organization),
    ]
    items.append(
        sr.CodeContentItem(
            name=codes.DCM.ProcedureReported,
            value=PROCEDURES.get(signed.modality or "", IMAGING_PROCEDURE),
            relationship_type=sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
    )
    items.extend(_sections(report))
    for addendum in addenda:
        section = sr.ContainerContentItem(name=ADDENDUM, relationship_type=sr.RelationshipTypeValues.CONTAINS)
        section.ContentSequence = sr.ContentSequence(_sections(addendum))
        items.append(section)
    root.ContentSequence = sr.ContentSequence(items, is_root=False)
    document = _enhanced_sr(
        root,
        where,
        is_final=True,
        is_verified=True,
        verifying_observer_name=person_name(signed.verified_by),
        verifying_organization=signed.organization[:64],
    )
    # highdicom stamps the verification with the time it builds the document; the report's own time is the truth.
    document.VerifyingObserverSequence[0].VerificationDateTime = DT(signed.verified_at)
    return _finish(document, where)


def reference(sop_class_uid: str, sop_instance_uid: str, series_instance_uid: str, study_instance_uid: str) -> Dataset:
    """An instance as evidence or predecessor names it (what highdicom reads of those)."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyInstanceUID = study_instance_uid
    return ds


def encode(document: Dataset) -> bytes:
    """The SR as a PS3.10 file (explicit VR little endian, as highdicom builds it)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, document, enforce_file_format=True)
    return buffer.getvalue()
