"""reporting/sr_shapes.py: what each measurement group of a TID 1500 report draws, read with highdicom; no server."""

from __future__ import annotations

import pickle
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from reporting.sr_shapes import NotDrawn, ReportShapes, read_report

from ..data import SR, ct_instance
from ..ohif_sr import LENGTH, TOOL_PREFIX, Group, length, measurement_report, read

OHIF_SR = Path("/work/shared/data/ohif-sr/ohif-3.13-length-sr.dcm")
IMAGE = read(ct_instance())


def shapes(data: bytes) -> ReportShapes:
    ds = read(data)
    found = read_report(ds, ds.SOPClassUID)
    assert found is not None
    return found


class TestReadReport:
    def test_ohif_length(self) -> None:
        """OHIF 3.13's own SR: its one Length, with the points and value it wrote."""
        ds = pydicom.dcmread(OHIF_SR)
        found = read_report(ds, ds.SOPClassUID)
        assert found is not None and found.unreadable is None and not found.not_drawn
        [drawn] = found.drawn
        assert (drawn.type, drawn.value, drawn.unit) == ("measurement", 99.1751279546353, "mm")
        assert drawn.sop_instance_uid == "1.2.826.0.1.3680043.8.498.17761314517510807151837050364972192792"
        assert pickle.loads(pickle.dumps(found)) == found  # it crosses dicomweb import's processes

    def test_not_a_measurement_report(self) -> None:
        """Other SRs and other instances are none of its business: None, at the cost of a set lookup."""
        ds = pydicom.dcmread(SR)
        assert read_report(ds, ds.SOPClassUID) is None
        assert read_report(IMAGE, IMAGE.SOPClassUID) is None

    def test_label_is_the_finding_and_centimetres_are_converted(self) -> None:
        group = Group("ArrowAnnotate", "POINT", [(3, 4)], text="cyst")
        [drawn] = shapes(measurement_report([IMAGE], [group])).drawn
        assert (drawn.type, drawn.label, drawn.coordinates) == ("text", "cyst", {"points": [{"x": 3, "y": 4}]})
        report = read(measurement_report([IMAGE], [length([(1, 1), (4, 5)], 0.5)]))
        num = report.ContentSequence[-1].ContentSequence[0].ContentSequence[-1]
        num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "cm"
        [drawn] = read_report(report, report.SOPClassUID).drawn  # type: ignore[union-attr]
        assert (drawn.value, drawn.unit) == (5.0, "mm")

    def test_groups_that_draw_no_annotation(self) -> None:
        """A Bidirectional (two axes), an open polyline (an Angle), a shape off the image: each with its reason."""
        tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=TOOL_PREFIX + "Bidirectional")
        source = hd.sr.SourceImageForRegion(IMAGE.SOPClassUID, IMAGE.SOPInstanceUID)
        axes = [
            hd.sr.Measurement(
                LENGTH,
                value,
                codes.UCUM.Millimeter,
                referenced_coordinates=[
                    hd.sr.CoordinatesForMeasurement("POLYLINE", np.array(points, dtype=np.float32), source)
                ],
            )
            for value, points in ((10.0, [(1, 1), (11, 1)]), (4.0, [(6, -1), (6, 3)]))
        ]
        bidirectional = hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=tracking, measurements=axes)
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(),
            procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
            imaging_measurements=[bidirectional],
        )
        data = measurement_report([IMAGE], [Group("Angle", "POLYLINE", [(1, 1), (5, 5), (9, 1)], value=90.0)])
        ds = read(data)
        [measurements] = [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
        measurements.ContentSequence.append(report[0].ContentSequence[-1].ContentSequence[0])
        off_image = read(measurement_report([IMAGE], [length([(-2, 1), (4, 5)], 6.0)]))
        measurements.ContentSequence.extend(
            [i for i in off_image.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"][
                0
            ].ContentSequence
        )
        found = read_report(ds, ds.SOPClassUID)
        assert found is not None and not found.drawn
        reasons = [n.reason for n in found.not_drawn]
        assert "open POLYLINE of 3 points (Angle)" in reasons[0]
        assert reasons[1] == "Bidirectional: it has 2 shapes (SCOORD); an annotation draws one"
        assert (
            "measurement is not a valid annotation (coordinates.points.0.x: Input should be greater than or equal to 0)"
            in reasons[2]
        )
        assert all(isinstance(n, NotDrawn) and n.tracking_uid for n in found.not_drawn)
