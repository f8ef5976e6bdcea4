"""reporting/sr_export.py and reporting/sr.py: annotations exported as a TID 1500 SR, verified reports as SR documents;
read back with highdicom, checked by DCMTK's dsrdump, retrievable like any instance."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from highdicom import sr
from pydicom import Dataset
from pynetdicom.sop_class import EnhancedSRStorage  # type: ignore[attr-defined]
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind as StudyRootFind,
)

from dicomweb.permissions import Role

from ..conftest import free_port
from ..data import ct_instance, multipart, stow_headers
from ..test_dimse import CALLING, c_find, c_get, register
from .conftest import Api, new_study
from .test_reports import completed_study, new_report, stow

DSRDUMP = shutil.which("dsrdump") or "/usr/bin/dsrdump"
ROW_SPACING, COLUMN_SPACING = 0.5, 0.8  # mm between rows (y) and between columns (x)
TOOLS = "Cornerstone3DTools@^0.1.0"
P = [{"x": 10.0, "y": 20.0}, {"x": 30.5, "y": 40.0}, {"x": 50.0, "y": 10.0}, {"x": 12.0, "y": 60.0}]
SHAPES: dict[str, dict[str, Any]] = {
    "length": {"type": "measurement", "coordinates": {"points": P[:2]}, "label": "lesion"},
    "path": {"type": "measurement", "coordinates": {"points": P[:3]}},
    "arrow": {"type": "arrow", "coordinates": {"points": P[:2]}, "label": "look here"},
    "circle": {"type": "circle", "coordinates": {"center": P[0], "radius": 5}},
    "roi": {"type": "roi", "coordinates": {"points": P}},
    "text": {"type": "text", "coordinates": {"points": P[:1]}, "label": "a note"},
}


def study_with_image(api: Api, client: httpx.Client, **attributes: Any) -> tuple[dict[str, Any], str]:
    """A workflow study with one CT image stored in it (Pixel Spacing 0.5\\0.8 unless attributes say); the image's
    SOPInstanceUID."""
    study = new_study(client)
    plane = {
        "PixelSpacing": [ROW_SPACING, COLUMN_SPACING],
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "ImagePositionPatient": [0, 0, 0],
        "FrameOfReferenceUID": pydicom.uid.generate_uid(),
        "SliceThickness": 1,
    }
    merged = {**plane, **attributes}  # None leaves an attribute out
    data = ct_instance(
        study_instance_uid=study["studyInstanceUID"], **{k: v for k, v in merged.items() if v is not None}
    )
    stow(api, data)
    return study, str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def annotate(client: httpx.Client, image: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/images/{image}/annotations", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def export(client: httpx.Client, study: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/studies/{study['id']}/annotations/sr")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == body["retrieveURL"]
    return body


def stored_file(client: httpx.Client, sop_instance_uid: str, tmp_path: Path) -> Path:
    """The stored SR, downloaded as the archive keeps it."""
    response = client.get(f"/images/{sop_instance_uid}/file")
    assert response.status_code == 200, response.text
    path = tmp_path / f"{sop_instance_uid}.dcm"
    path.write_bytes(response.content)
    return path


def dsrdump_clean(path: Path) -> str:
    """dsrdump's rendering of the SR; it exits 0 and warns or errs about nothing but the character set (DCMTK's VR
    checker does not know ISO_IR 192, which the SR takes over from the images)."""
    done = subprocess.run([DSRDUMP, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.startswith(("W:", "E:", "F:")) and "Specific Character Set" not in line
    ]
    assert not complaints, complaints
    return done.stdout


def groups_by_uid(path: Path) -> dict[str, sr.MeasurementsAndQualitativeEvaluations]:
    document = sr.srread(path)
    assert isinstance(document.content, sr.MeasurementReport)
    return {str(group.tracking_uid): group for group in document.content.get_image_measurement_groups()}


@pytest.fixture(scope="module")
def radiologist(api: Api) -> Any:
    with api.client(Role.RADIOLOGIST, "dr-sr") as client:
        yield client


@pytest.mark.skipif(not Path(DSRDUMP).exists(), reason="DCMTK's dsrdump is not installed")
class TestAnnotationExport:
    """POST /api/radiology/studies/{id}/annotations/sr."""

    def test_every_type_round_trips(
        self, api: Api, admin: httpx.Client, radiologist: httpx.Client, tmp_path: Path
    ) -> None:
        """Each annotation type becomes the measurement group OHIF maps to its tool, with its tracking UID, value,
        coordinates and image; dsrdump reads the SR without complaint."""
        study, image = study_with_image(api, admin)
        made = {name: annotate(radiologist, image, body) for name, body in SHAPES.items()}
        body = export(radiologist, study)
        assert body["studyInstanceUID"] == study["studyInstanceUID"]
        assert body["sopClassUID"] == "1.2.840.10008.5.1.4.1.1.88.22" and body["annotations"] == len(SHAPES)
        assert body["predecessor"] is None
        path = stored_file(radiologist, body["sopInstanceUID"], tmp_path)
        dump = dsrdump_clean(path)
        assert "Imaging Measurement Report" in dump and "Person Observer Name" in dump and "dr-sr^" in dump

        ds = pydicom.dcmread(path)
        assert (ds.SeriesInstanceUID, ds.SOPInstanceUID) == (body["seriesInstanceUID"], body["sopInstanceUID"])
        assert ds.Modality == "SR" and ds.SeriesDescription == "Annotations" and ds.CompletionFlag == "COMPLETE"
        assert ds.PatientID == "PAT-1" and ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image

        groups = groups_by_uid(path)
        uids = {name: f"2.25.{uuid.UUID(a['id']).int}" for name, a in made.items()}
        assert set(groups) == set(uids.values())
        expected = {
            "length": ("Length", "POLYLINE", P[:2], "mm"),
            "path": ("PlanarFreehandROI", "POLYLINE", P[:3], "mm"),
            "arrow": ("ArrowAnnotate", "POLYLINE", P[1::-1], "1"),  # head first, as OHIF reads it
            "circle": ("CircleROI", "CIRCLE", [P[0], {"x": 15.0, "y": 20.0}], "mm2"),
            "roi": ("PlanarFreehandROI", "POLYLINE", [*P, P[0]], "mm2"),
            "text": ("Probe", "POINT", P[:1], "1"),
        }
        for name, (tool, graphic_type, points, unit) in expected.items():
            group = groups[uids[name]]
            assert group.tracking_identifier == f"{TOOLS}:{tool}", name
            (measurement,) = group.get_measurements()
            assert measurement.unit.value == unit, name
            (scoord,) = measurement.referenced_coordinates or []
            assert scoord.graphic_type.value == graphic_type, name
            assert scoord.value.tolist() == [[p["x"], p["y"]] for p in points], name
            assert scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image, name

        def value(name: str) -> float:
            return float(groups[uids[name]].get_measurements()[0].value)

        dx, dy = (P[1]["x"] - P[0]["x"]) * COLUMN_SPACING, (P[1]["y"] - P[0]["y"]) * ROW_SPACING
        assert value("length") == pytest.approx(math.hypot(dx, dy))
        assert value("circle") == pytest.approx(math.pi * 25 * ROW_SPACING * COLUMN_SPACING)
        assert value("arrow") == 0.0
        for name, label in (("arrow", "look here"), ("text", "a note")):
            finding = groups[uids[name]].finding_type  # (CORNERSTONEFREETEXT, CORNERSTONEJS, label), as OHIF reads it
            assert finding is not None and finding.meaning == label and finding.scheme_designator == "CORNERSTONEJS"
        comments = [item.TextValue for item in groups[uids["length"]][0].ContentSequence if item.ValueType == "TEXT"]
        assert "lesion" in comments

        # The exported annotations keep the Tracking UIDs they went out with: the import knows its own export.
        listed = radiologist.get(f"/images/{image}/annotations").json()
        assert {a["trackingUid"] for a in listed} == set(uids.values())
        assert len(listed) == len(SHAPES)

        # The export sent back as a new instance (a viewer saving a copy of it) goes through the SR import
        # (sr_import.py): each group names an annotation the archive has, so nothing is added and nothing is listed
        # as not imported.
        copy = pydicom.dcmread(path)
        copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        buffer = io.BytesIO()
        copy.save_as(buffer, enforce_file_format=True)
        stow(api, buffer.getvalue())
        assert len(radiologist.get(f"/images/{image}/annotations").json()) == len(SHAPES)
        assert radiologist.get(f"/studies/{study['id']}").json()["measurementsNotImported"] == []

    def test_listed_and_retrievable(self, api: Api, admin: httpx.Client) -> None:
        """The SR is a new SR series of the study for QIDO-RS, and WADO-RS retrieves it."""
        study, image = study_with_image(api, admin)
        annotate(admin, image, SHAPES["length"])
        body = export(admin, study)
        uid = study["studyInstanceUID"]
        with api.dicomweb() as dicomweb:
            series = dicomweb.get(f"/studies/{uid}/series", headers={"accept": "application/dicom+json"}).json()
            found = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in series}
            assert found[body["seriesInstanceUID"]] == "SR" and len(found) == 2
            response = dicomweb.get(
                f"/studies/{uid}/series/{body['seriesInstanceUID']}/instances/{body['sopInstanceUID']}",
                headers={"accept": 'multipart/related; type="application/dicom"'},
            )
            assert response.status_code == 200 and b"1.2.840.10008.5.1.4.1.1.88.22" in response.content

    def test_second_export_supersedes_the_first(self, api: Api, admin: httpx.Client, tmp_path: Path) -> None:
        """A later export joins the first's series, names it as predecessor and holds the annotations of now."""
        study, image = study_with_image(api, admin)
        annotate(admin, image, SHAPES["length"])
        first = export(admin, study)
        annotate(admin, image, SHAPES["circle"])
        second = export(admin, study)
        assert second["predecessor"] == first["sopInstanceUID"] and second["annotations"] == 2
        assert second["seriesInstanceUID"] == first["seriesInstanceUID"]
        ds = pydicom.dcmread(stored_file(admin, second["sopInstanceUID"], tmp_path))
        assert ds.InstanceNumber == 2
        predecessor = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert predecessor.ReferencedSOPInstanceUID == first["sopInstanceUID"]
        dsrdump_clean(tmp_path / f"{second['sopInstanceUID']}.dcm")

    def test_pixels_without_pixel_spacing(self, api: Api, admin: httpx.Client, tmp_path: Path) -> None:
        """An image that does not say its pixel spacing has its lengths in pixels."""
        study, image = study_with_image(api, admin, PixelSpacing=None, ImageOrientationPatient=None)
        created = annotate(admin, image, SHAPES["length"])
        body = export(admin, study)
        group = groups_by_uid(stored_file(admin, body["sopInstanceUID"], tmp_path))[
            f"2.25.{uuid.UUID(created['id']).int}"
        ]
        (measurement,) = group.get_measurements()
        assert measurement.unit.value == "{pixel}"
        assert float(measurement.value) == pytest.approx(math.hypot(20.5, 20.0))

    def test_multi_frame_names_the_frame(self, api: Api, admin: httpx.Client, tmp_path: Path) -> None:
        """An annotation on frame 2 of a multi-frame image references that frame."""
        study, image = study_with_image(api, admin, NumberOfFrames=3, size=16, PixelData=bytes(16 * 16 * 2 * 3))
        annotate(admin, image, {**SHAPES["text"], "frameNumber": 2})
        body = export(admin, study)
        (group,) = groups_by_uid(stored_file(admin, body["sopInstanceUID"], tmp_path)).values()
        (scoord,) = group.get_measurements()[0].referenced_coordinates or []
        assert scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber == 2

    def test_images_other_than_the_first(self, api: Api, admin: httpx.Client, tmp_path: Path) -> None:
        """Each image's own spacing and frames, for the images after the first too (read from the index, not their
        files): a second image of another Pixel Spacing, a third multi-frame whose spacing is in its shared Pixel
        Measures (PS3.3 C.7.6.16.2.1), a fourth without any, a fifth with an empty component."""
        study, first = study_with_image(api, admin)

        def stored(**attributes: Any) -> str:
            data = ct_instance(study_instance_uid=study["studyInstanceUID"], **attributes)
            stow(api, data)
            return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)

        measures = Dataset()
        measures.PixelSpacing = [0.25, 2.0]
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        second = stored(PixelSpacing=[1.5, 1.0])
        third = stored(
            SharedFunctionalGroupsSequence=[shared], NumberOfFrames=3, size=16, PixelData=bytes(16 * 16 * 2 * 3)
        )
        fourth = stored()
        fifth = stored(PixelSpacing="\\0.5")  # an empty component: no spacing known
        lengths = {
            image: annotate(admin, image, SHAPES["length"] | extra)
            for image, extra in ((first, {}), (second, {}), (third, {"frameNumber": 3}), (fourth, {}), (fifth, {}))
        }
        body = export(admin, study)
        groups = groups_by_uid(stored_file(admin, body["sopInstanceUID"], tmp_path))
        width, height = P[1]["x"] - P[0]["x"], P[1]["y"] - P[0]["y"]
        expected = {
            first: (math.hypot(width * COLUMN_SPACING, height * ROW_SPACING), "mm", None),
            second: (math.hypot(width * 1.0, height * 1.5), "mm", None),
            third: (math.hypot(width * 2.0, height * 0.25), "mm", 3),
            fourth: (math.hypot(width, height), "{pixel}", None),
            fifth: (math.hypot(width, height), "{pixel}", None),
        }
        for image, (length, unit, frame) in expected.items():
            (measurement,) = groups[f"2.25.{uuid.UUID(lengths[image]['id']).int}"].get_measurements()
            assert float(measurement.value) == pytest.approx(length) and measurement.unit.value == unit, image
            (scoord,) = measurement.referenced_coordinates or []
            reference = scoord.ContentSequence[0].ReferencedSOPSequence[0]
            assert reference.ReferencedSOPInstanceUID == image
            assert reference.get("ReferencedFrameNumber") == frame

    def test_no_annotations(self, api: Api, admin: httpx.Client) -> None:
        """409 for a study without annotations (its state, not the request, is what is missing); 404 unknown."""
        study, _ = study_with_image(api, admin)
        response = admin.post(f"/studies/{study['id']}/annotations/sr")
        assert response.status_code == 409 and "no annotations" in response.json()["detail"]
        assert admin.post(f"/studies/{uuid.uuid4()}/annotations/sr").status_code == 404

    def test_permissions(self, api: Api, admin: httpx.Client) -> None:
        """radiology:annotate exports (a technologist may); a referring doctor (view only) may not."""
        study, image = study_with_image(api, admin)
        annotate(admin, image, SHAPES["text"])
        with api.client(Role.DOCTOR, "dr-view") as doctor:
            assert doctor.post(f"/studies/{study['id']}/annotations/sr").status_code == 403
        with api.client(Role.RADIOLOGY_TECH, "tech") as tech:
            assert tech.post(f"/studies/{study['id']}/annotations/sr").status_code == 201


class TestOverDimse:
    """The SR is an instance like any other for DIMSE clients: C-FIND finds it, C-GET retrieves it."""

    def test_find_and_get(self, server_factory: Any) -> None:
        server = server_factory(dimse_port=free_port())  # authentication disabled: the caller is an anonymous admin
        register(server, CALLING, "127.0.0.1", 104, ["find", "get"])
        with httpx.Client(base_url=server.url + "/api/radiology", timeout=60) as client:
            study = new_study(client)
            data = ct_instance(study_instance_uid=study["studyInstanceUID"])
            response = httpx.post(server.dicomweb + "/studies", content=multipart([data]), headers=stow_headers())
            assert response.status_code == 200, response.text
            image = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
            annotate(client, image, SHAPES["length"])
            body = export(client, study)
        (found,) = c_find(
            server,
            StudyRootFind,
            QueryRetrieveLevel="SERIES",
            StudyInstanceUID=study["studyInstanceUID"],
            Modality="SR",
            SeriesInstanceUID="",
        )
        assert found.SeriesInstanceUID == body["seriesInstanceUID"]

        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = study["studyInstanceUID"]
        identifier.SeriesInstanceUID = body["seriesInstanceUID"]
        final, received = c_get(server, identifier, [(EnhancedSRStorage, "1.2.840.10008.1.2.1")])
        assert final.Status == 0x0000
        (sr_document,) = received
        assert sr_document.SOPInstanceUID == body["sopInstanceUID"]
        assert sr_document.ContentTemplateSequence[0].TemplateIdentifier == "1500"


@pytest.mark.skipif(not Path(DSRDUMP).exists(), reason="DCMTK's dsrdump is not installed")
class TestReportSR:
    """POST /api/radiology/reports/{id}/verify writes the report as an SR document in its study."""

    def test_verified_report(self, api: Api, admin: httpx.Client, radiologist: httpx.Client, tmp_path: Path) -> None:
        """Findings, impression and recommendations as TID 2000 sections, VERIFIED by the signer, COMPLETE, final."""
        study = completed_study(admin)
        stow(api, ct_instance(study_instance_uid=study["studyInstanceUID"]))
        report = new_report(
            admin, study, findings="Lungs are clear.", impression="Normal chest CT.", recommendations="None."
        )
        response = radiologist.post(f"/reports/{report['id']}/verify")
        assert response.status_code == 200, response.text
        signed = response.json()
        assert signed["srSOPInstanceUID"] and signed["srSeriesInstanceUID"] and signed["srError"] is None
        assert admin.get(f"/reports/{report['id']}").json()["srSOPInstanceUID"] == signed["srSOPInstanceUID"]
        path = stored_file(admin, signed["srSOPInstanceUID"], tmp_path)
        dump = dsrdump_clean(path)
        assert "Diagnostic Imaging Report" in dump
        ds = pydicom.dcmread(path)
        assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
        assert str(ds.VerifyingObserverSequence[0].VerifyingObserverName) == "dr-sr^"
        assert ds.VerifyingObserverSequence[0].VerifyingOrganization
        assert ds.StudyInstanceUID == study["studyInstanceUID"] and ds.SeriesDescription == "Reports"
        assert (ds.PatientID, str(ds.PatientName)) == ("PAT-1", "Doe^Jane")  # as the archive holds the patient
        assert "PredecessorDocumentsSequence" not in ds
        document = sr.srread(path)
        texts = {item.name.value: item.value for item in _texts(document.content[0])}
        assert texts == {"121071": "Lungs are clear.", "121073": "Normal chest CT.", "121075": "None."}
        assert document.content[0].name.value == "18748-4"

    def test_addendum_supersedes(self, api: Api, admin: httpx.Client, tmp_path: Path) -> None:
        """A verified addendum's SR holds the report and the addendum and names the report's SR as predecessor."""
        study = completed_study(admin)
        stow(api, ct_instance(study_instance_uid=study["studyInstanceUID"]))
        report = new_report(admin, study, findings="First look.")
        original = admin.post(f"/reports/{report['id']}/verify").json()
        addendum = admin.post(f"/reports/{report['id']}/addendum", json={"findings": "Second look."}).json()
        response = admin.post(f"/reports/{addendum['id']}/verify")
        assert response.status_code == 200, response.text
        amended = response.json()
        assert amended["srSeriesInstanceUID"] == original["srSeriesInstanceUID"]
        path = stored_file(admin, amended["srSOPInstanceUID"], tmp_path)
        dsrdump_clean(path)
        ds = pydicom.dcmread(path)
        predecessor = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert predecessor.ReferencedSOPInstanceUID == original["srSOPInstanceUID"]
        texts = [item.value for item in _texts(sr.srread(path).content[0])]
        assert texts == ["First look.", "Second look."]

    def test_unreadable_image_recorded(self, api: Api, admin: httpx.Client) -> None:
        """An SR that cannot be written (here: the study's stored file is gone) leaves the report verified, with
        the reason in srError; nothing half-written is stored."""
        study = completed_study(admin)
        data = ct_instance(study_instance_uid=study["studyInstanceUID"])
        stow(api, data)
        sop_instance_uid = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        (stored,) = Path(api.server.settings.data_dir, "files").rglob(f"{sop_instance_uid}*")
        stored.unlink()
        report = new_report(admin, study)
        response = admin.post(f"/reports/{report['id']}/verify")
        assert response.status_code == 200, response.text
        signed = response.json()
        assert signed["status"] == "final" and signed["srSOPInstanceUID"] is None
        assert "could not be written" in signed["srError"] and sop_instance_uid in signed["srError"]
        series = admin.get(f"/studies/{study['id']}").json()["series"]
        assert [s["modality"] for s in series] == ["CT"]

    def test_no_image_no_sr(self, admin: httpx.Client) -> None:
        """A study the archive holds no image of: the report verifies; its JSON says why there is no SR."""
        study = completed_study(admin)
        report = new_report(admin, study)
        response = admin.post(f"/reports/{report['id']}/verify")
        assert response.status_code == 200, response.text
        signed = response.json()
        assert signed["status"] == "final" and signed["srSOPInstanceUID"] is None
        assert "no image of the study" in signed["srError"]


def _texts(item: Any) -> list[Any]:
    """The TEXT content items ``item`` contains (not its observation context), depth first."""
    found = []
    for child in getattr(item, "ContentSequence", []):
        if child.ValueType == "TEXT" and child.RelationshipType == "CONTAINS":
            found.append(child)
        found.extend(_texts(child))
    return found
