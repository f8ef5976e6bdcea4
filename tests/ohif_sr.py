"""TID 1500 measurement reports built with highdicom in the shape OHIF 3.13 writes them (DICOM-NETWORKING.md, "What
OHIF 3.13 stores"): one Measurement Group per tool, with a Tracking Identifier ``Cornerstone3DTools@^0.1.0:<Tool>``
and a Tracking Unique Identifier; a NUM inferred from a SCOORD that selects the image (Referenced SOP Sequence, frame
number when given); an ArrowAnnotate's or a Probe's SCOORD directly in the group, beside a Finding (121071)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

TOOL_PREFIX = "Cornerstone3DTools@^0.1.0:"
LENGTH = hd.sr.CodedConcept("410668003", "SCT", "Length")
AREA = hd.sr.CodedConcept("42798000", "SCT", "Area")
FINDING = hd.sr.CodedConcept("121071", "DCM", "Finding")
FREE_TEXT = "CS3DTEXT"  # dcmjs' code for a free text finding (its private scheme 99dcmjs)


@dataclass(frozen=True)
class Group:
    """One OHIF measurement: the tool, its SCOORD (image coordinates, (column,row) pairs) and what it measured."""

    tool: str
    graphic_type: str
    points: Sequence[tuple[float, float]]
    value: float | None = None  # with a NUM: the length in mm, or an area in mm2
    text: str | None = None  # a Finding: an arrow's text
    frame: int | None = None
    tracking_uid: str | None = None
    image: Dataset | None = None  # the image it is on, when not the report's first


def length(points: Sequence[tuple[float, float]], mm: float, **kw: object) -> Group:
    return Group("Length", "POLYLINE", points, value=mm, **kw)  # type: ignore[arg-type]


def _source(image: Dataset, frame: int | None) -> hd.sr.SourceImageForRegion:
    return hd.sr.SourceImageForRegion(
        image.SOPClassUID, image.SOPInstanceUID, referenced_frame_numbers=[frame] if frame else None
    )


def _group(group: Group, image: Dataset) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    image = group.image or image
    tracking = hd.sr.TrackingIdentifier(uid=group.tracking_uid or generate_uid(), identifier=TOOL_PREFIX + group.tool)
    data = np.array(group.points, dtype=np.float32)
    measurements = []
    if group.value is not None:
        coordinates = hd.sr.CoordinatesForMeasurement(group.graphic_type, data, _source(image, group.frame))
        name, unit = (LENGTH, codes.UCUM.Millimeter) if group.tool == "Length" else (AREA, codes.UCUM.SquareMillimeter)
        measurements.append(hd.sr.Measurement(name, group.value, unit, referenced_coordinates=[coordinates]))
    built = hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=tracking, measurements=measurements)
    container = built[0]
    if group.text is not None:
        container.ContentSequence.append(
            hd.sr.CodeContentItem(
                FINDING, hd.sr.CodedConcept(FREE_TEXT, "99dcmjs", group.text), relationship_type="CONTAINS"
            )
        )
    if group.value is None:  # no NUM: the SCOORD sits in the group itself, as dcmjs writes ArrowAnnotate and Probe
        scoord = hd.sr.ScoordContentItem(
            hd.sr.CodedConcept("111010", "DCM", "Center"), group.graphic_type, data, relationship_type="CONTAINS"
        )
        scoord.ContentSequence = [  # type: ignore[assignment]
            hd.sr.ImageContentItem(
                hd.sr.CodedConcept("260753009", "SCT", "Source"),
                image.SOPClassUID,
                image.SOPInstanceUID,
                referenced_frame_numbers=[group.frame] if group.frame else None,
                relationship_type="SELECTED FROM",
            )
        ]
        container.ContentSequence.append(scoord)
    return built


# The patient and study attributes highdicom copies from the evidence (Type 2: present, maybe empty).
EVIDENCE_ATTRIBUTES = ("StudyID", "AccessionNumber", "PatientBirthDate", "PatientSex", "ReferringPhysicianName")


def _evidence(image: Dataset) -> Dataset:
    evidence = Dataset()
    evidence.update(image)
    for keyword in EVIDENCE_ATTRIBUTES:
        if keyword not in evidence:
            setattr(evidence, keyword, "")
    for keyword, value in (("StudyDate", "20260101"), ("StudyTime", "120000")):
        if not evidence.get(keyword):
            setattr(evidence, keyword, value)
    return evidence


def measurement_report(
    images: Sequence[Dataset],
    groups: Sequence[Group],
    previous: Sequence[Dataset] = (),
    sop_instance_uid: str | None = None,
) -> bytes:
    """An Enhanced SR with a TID 1500 Imaging Measurement Report of ``groups`` on ``images`` (the first unless a group
    names its own), naming ``previous`` SRs as predecessors; as a PS3.10 file."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person, observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes("")
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[_group(group, images[0]) for group in groups],
    )
    sr = hd.sr.EnhancedSR(
        evidence=[_evidence(image) for image in images],
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=3001,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer="tests",
        is_complete=True,
        previous_versions=list(previous) or None,
    )
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))
