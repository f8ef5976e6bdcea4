"""Read a TID 1500 Imaging Measurement Report (PS3.16 TID 1500, as OHIF 3.13 writes it) into the annotations its
measurement groups draw. Pure and blocking: it runs in the store's parse phase (``sr_import.py``), off the event loop.

highdicom reads the document (its SR classes' ``from_dataset``: the content tree as content items, their value
types and codes checked, the root as a TID 1500 ``MeasurementReport``); this module picks each Measurement Group's
TID 1501 items out of it (tracking identifier and UID, finding, NUM items and the SCOORD each is inferred from) and
decides what the group draws. A group's shape is its one spatial
coordinate (SCOORD, PS3.3 C.18.6), in the NUM items or directly in the group (dcmjs puts an ArrowAnnotate's and a
Probe's there); a group with none, or with several (a Bidirectional's two axes), is not imported, with the reason.

=========================================================  =============================================
The group's SCOORD                                         The annotation
=========================================================  =============================================
POLYLINE, 2 points, with a Length NUM (410668003, SCT)     ``measurement``; value in mm, unit ``mm``
POLYLINE, 2 points, with a Finding (121071) / ArrowAnnotate ``arrow`` (tail, head); the finding is its label
POLYLINE, 2 points, nothing else                           ``measurement`` without a value
POLYLINE, closed or from RectangleROI / PlanarFreehandROI  ``roi``, the polygon's points
CIRCLE (center, a point on the circle), CircleROI          ``circle``: center, radius = their distance
ELLIPSE (major axis ends, minor axis ends), EllipticalROI  ``circle`` with its center and the same area
POINT                                                      ``text`` anchored there; the finding is its label
=========================================================  =============================================

Coordinates are copied as they are: SCOORD image coordinates are (column, row) pairs whose origin 0,0 is the top
left corner of the top left pixel (PS3.3 C.18.6.1.1, "Graphic Data"), which is what the annotations' ``x``, ``y``
are (``models.Point``). OHIF writes exactly that: cornerstone3D's ``worldToImageCoords`` moves the origin half a pixel
from the first pixel's centre (Image Position) to its corner before dividing by the spacing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from highdicom.sr import ValueTypeValues
from pydantic import TypeAdapter, ValidationError
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage, EnhancedSRStorage

from .models import AnnotationInput

# The SR Storage SOP Classes whose documents may hold a TID 1500 report with image coordinates (PS3.4 B.5).
MEASUREMENT_REPORT_CLASSES: dict[str, type[hd.sr.EnhancedSR | hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR]] = {
    EnhancedSRStorage: hd.sr.EnhancedSR,
    ComprehensiveSRStorage: hd.sr.ComprehensiveSR,
    Comprehensive3DSRStorage: hd.sr.Comprehensive3DSR,
}
IMAGING_MEASUREMENT_REPORT = ("126000", "DCM")  # TID 1500's root concept
IMAGING_MEASUREMENTS = ("126010", "DCM")  # TID 1500's container of the groups
MEASUREMENT_GROUP = ("125007", "DCM")  # TID 1501 (and 1410, 1411)
TRACKING_IDENTIFIER = ("112039", "DCM")
TRACKING_UID = ("112040", "DCM")
LENGTH = ("410668003", "SCT")
FINDING = ("121071", "DCM")
# UCUM length units a Length NUM may carry, as factors to mm.
TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 0.001}
# The tools whose closed shape a POLYLINE is, even when its last point does not repeat its first.
REGION_TOOLS = {"RectangleROI", "PlanarFreehandROI", "FreehandRoi", "RectangleRoi"}
ARROW_TOOLS = {"ArrowAnnotate"}
# A tracking identifier that names a viewer's tool (``Cornerstone3DTools@^0.1.0:Length``), not a finding.
TOOL_IDENTIFIER = re.compile(r"^[\w.-]+@[^:]*:(\w+)$")
MAX_LABEL = 1000  # characters, as models._AnnotationBase allows

_ANNOTATION: TypeAdapter[AnnotationInput] = TypeAdapter(AnnotationInput)


@dataclass(frozen=True)
class Drawn:
    """A measurement group as an annotation on the image its SCOORD selects."""

    tracking_uid: str | None
    sop_instance_uid: str  # the image
    frame_number: int | None
    type: str
    coordinates: dict[str, Any]  # as the annotation models give it (JSON)
    label: str | None
    value: float | None = None
    unit: str | None = None


@dataclass(frozen=True)
class NotDrawn:
    """A measurement group that is not imported, and why."""

    tracking_uid: str | None
    reason: str


@dataclass(frozen=True)
class ReportShapes:
    """What an Imaging Measurement Report holds for the annotations (picklable: it crosses ``dicomweb import``'s
    processes). ``unreadable``: why the document could not be read, when it could not (nothing then is imported)."""

    predecessors: tuple[str, ...]  # Predecessor Documents Sequence (0040,A360): SOP Instance UIDs it replaces
    drawn: tuple[Drawn, ...] = ()
    not_drawn: tuple[NotDrawn, ...] = ()
    unreadable: str | None = None


def is_measurement_report(ds: Dataset, sop_class_uid: str) -> bool:
    """Cheap: an SR Storage SOP Class with TID 1500's root concept, read without highdicom."""
    if sop_class_uid not in MEASUREMENT_REPORT_CLASSES:
        return False
    try:
        concept = ds.ConceptNameCodeSequence[0]
        return (str(concept.CodeValue), str(concept.CodingSchemeDesignator)) == IMAGING_MEASUREMENT_REPORT
    except Exception:
        return False


def read_report(ds: Dataset, sop_class_uid: str) -> ReportShapes | None:
    """The report's groups as annotations, or None when the instance is not an Imaging Measurement Report. Never
    raises: a document highdicom cannot read comes back ``unreadable``, with the reason."""
    if not is_measurement_report(ds, sop_class_uid):
        return None
    try:
        predecessors = _predecessors(ds)
    except Exception as exc:
        return ReportShapes((), unreadable=f"its Predecessor Documents Sequence cannot be read: {exc}")
    try:
        # copy=False: the data set is the parse's own, and read last (dicomweb.instance.read_instance).
        document = MEASUREMENT_REPORT_CLASSES[sop_class_uid].from_dataset(ds, copy=False)
        if not isinstance(document.content, hd.sr.MeasurementReport):
            return ReportShapes(predecessors, unreadable="its content is not a TID 1500 Measurement Report")
        groups = _measurement_groups(document.content[0])
    except Exception as exc:
        return ReportShapes(predecessors, unreadable=f"highdicom cannot read it as TID 1500: {exc}")
    drawn: list[Drawn] = []
    not_drawn: list[NotDrawn] = []
    for group in groups:
        items = list(group.ContentSequence)
        tracking_uid = _value_of(items, TRACKING_UID)
        try:
            outcome = _draw(items, tracking_uid)
        except Exception as exc:  # a group highdicom took but whose items are not as TID 1501 says
            outcome = NotDrawn(tracking_uid, f"the measurement group cannot be read: {exc}")
        if isinstance(outcome, Drawn):
            drawn.append(outcome)
        else:
            not_drawn.append(outcome)
    return ReportShapes(predecessors, tuple(drawn), tuple(not_drawn))


def _measurement_groups(root: Any) -> list[Any]:
    """The Measurement Group containers (125007) of the Imaging Measurements container (126010), as highdicom read
    them. Not ``MeasurementReport.get_image_measurement_groups()``: it copies and reads every group a second time,
    which for 50 groups cost 0.24 s on top of the 0.1 s of the first reading (2-core test machine)."""
    return [
        group
        for container in root.ContentSequence
        if _code(container.name) == IMAGING_MEASUREMENTS
        for group in getattr(container, "ContentSequence", [])
        if _code(group.name) == MEASUREMENT_GROUP
    ]


def _predecessors(ds: Dataset) -> tuple[str, ...]:
    """The SOP Instance UIDs of the Predecessor Documents Sequence (PS3.3 C.17.2, a Hierarchical SOP Instance
    Reference: study, series, SOP)."""
    found = []
    for study in ds.get("PredecessorDocumentsSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            for sop in series.get("ReferencedSOPSequence", []):
                found.append(str(sop.ReferencedSOPInstanceUID))
    return tuple(found)


def _value_of(items: list[Any], concept: tuple[str, str]) -> str | None:
    """The value of the first TEXT or UIDREF item named ``concept``."""
    for item in items:
        if _code(item.name) == concept and item.value_type in (ValueTypeValues.TEXT, ValueTypeValues.UIDREF):
            return str(item.value) or None
    return None


@dataclass(frozen=True)
class _Scoord:
    graphic_type: str
    points: tuple[tuple[float, float], ...]
    sop_instance_uids: tuple[str, ...]
    frame_numbers: tuple[int, ...]


def _draw(items: list[Any], tracking_uid: str | None) -> Drawn | NotDrawn:
    """What one group (its content items) draws, or why it draws nothing."""
    identifier = _value_of(items, TRACKING_IDENTIFIER)
    tool_match = TOOL_IDENTIFIER.match(identifier or "")
    tool = tool_match.group(1) if tool_match else None
    finding = _finding(items)
    label = finding or (identifier if identifier and tool is None else None)
    length: float | None = None
    scoords: list[_Scoord] = []
    for item in items:
        found = [item] if item.value_type == ValueTypeValues.SCOORD3D else []
        if item.value_type == ValueTypeValues.NUM:
            if _code(item.name) == LENGTH:
                length = _millimetres(item)
            found = list(getattr(item, "ContentSequence", []))
        elif item.value_type == ValueTypeValues.SCOORD:
            found = [item]
        for scoord in found:
            if scoord.value_type == ValueTypeValues.SCOORD3D:
                return NotDrawn(tracking_uid, "its SCOORD3D is in patient coordinates, not on one image")
            if scoord.value_type == ValueTypeValues.SCOORD:
                scoords.append(_scoord(scoord))
    distinct = list(dict.fromkeys(scoords))
    if not distinct:
        return NotDrawn(tracking_uid, "it has no image coordinates (SCOORD)")
    if len(distinct) > 1:
        what = f"{tool}: " if tool else ""
        return NotDrawn(tracking_uid, f"{what}it has {len(distinct)} shapes (SCOORD); an annotation draws one")
    scoord = distinct[0]
    if len(scoord.sop_instance_uids) != 1:
        return NotDrawn(tracking_uid, "its SCOORD does not select exactly one image")
    if len(scoord.frame_numbers) > 1:
        return NotDrawn(tracking_uid, "its SCOORD selects several frames; an annotation is on one")
    shape = _shape(scoord, tool, finding, length)
    if isinstance(shape, str):
        return NotDrawn(tracking_uid, shape)
    kind, coordinates = shape
    body: dict[str, Any] = {"type": kind, "coordinates": coordinates, "label": label[:MAX_LABEL] if label else None}
    if scoord.frame_numbers:
        body["frameNumber"] = scoord.frame_numbers[0]
    try:
        annotation = _ANNOTATION.validate_python(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return NotDrawn(tracking_uid, f"its {kind} is not a valid annotation ({problems})")
    measured = kind == "measurement" and length is not None
    return Drawn(
        tracking_uid=tracking_uid,
        sop_instance_uid=scoord.sop_instance_uids[0],
        frame_number=annotation.frame_number,
        type=kind,
        coordinates=annotation.coordinates.model_dump(mode="json"),
        label=annotation.label,
        value=length if measured else None,
        unit="mm" if measured else None,
    )


def _shape(scoord: _Scoord, tool: str | None, finding: str | None, length: float | None) -> tuple[str, Any] | str:
    """The annotation type and coordinates of a SCOORD (the table in the module docstring), or why there is none."""
    points = [{"x": x, "y": y} for x, y in scoord.points]
    graphic_type = scoord.graphic_type
    if graphic_type == "POINT":
        return "text", {"points": points[:1]}
    if graphic_type == "POLYLINE" and len(points) == 2:
        if length is None and (finding is not None or tool in ARROW_TOOLS):
            return "arrow", {"points": points}
        return "measurement", {"points": points}
    if graphic_type == "POLYLINE" and len(points) > 2:
        if points[0] == points[-1] or tool in REGION_TOOLS:
            return "roi", {"points": points}
        return f"an open POLYLINE of {len(points)} points{f' ({tool})' if tool else ''} is no annotation's shape"
    if graphic_type == "CIRCLE" and len(points) == 2:
        (cx, cy), (px, py) = scoord.points
        return "circle", {"center": points[0], "radius": math.hypot(px - cx, py - cy)}
    if graphic_type == "ELLIPSE" and len(points) == 4:
        # The circle of the same centre and area (pi*a*b = pi*r^2): what the ellipse measures (its area) is kept.
        (x1, y1), (x2, y2), (x3, y3), (x4, y4) = scoord.points
        a, b = math.hypot(x2 - x1, y2 - y1) / 2, math.hypot(x4 - x3, y4 - y3) / 2
        center = {"x": (x1 + x2) / 2, "y": (y1 + y2) / 2}
        return "circle", {"center": center, "radius": math.sqrt(a * b)}
    return f"a {graphic_type} of {len(points)} points is no annotation's shape"


def _scoord(item: Any) -> _Scoord:
    """A SCOORD content item, with the image (and frame) its SELECTED FROM item names."""
    images = [c for c in getattr(item, "ContentSequence", []) if c.value_type == ValueTypeValues.IMAGE]
    uids: list[str] = []
    frames: list[int] = []
    for image in images:
        uids.append(str(image.referenced_sop_instance_uid))
        frames.extend(int(f) for f in image.referenced_frame_numbers or [])
    points = tuple((float(x), float(y)) for x, y in item.value)
    return _Scoord(str(item.graphic_type.value), points, tuple(uids), tuple(frames))


def _code(concept: Any) -> tuple[str, str]:
    return str(concept.value), str(concept.scheme_designator)


def _finding(items: list[Any]) -> str | None:
    """The text of the group's Finding (121071): a TEXT item's value, or a CODE item's meaning (dcmjs writes a free
    text finding as a code of its own scheme whose meaning is the text)."""
    for item in items:
        if _code(item.name) != FINDING:
            continue
        if item.value_type == ValueTypeValues.TEXT:
            return str(item.value) or None
        if item.value_type == ValueTypeValues.CODE:
            return str(item.value.meaning) or None
    return None


def _millimetres(measurement: Any) -> float | None:
    """A Length NUM's value in mm; None for a unit that is not a length."""
    factor = TO_MM.get(str(measurement.unit.value))
    return float(measurement.value) * factor if factor is not None else None
