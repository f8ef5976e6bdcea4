"""reporting/sr_import.py: a TID 1500 measurement report stored by any transport becomes annotations on its images.

OHIF's own SR (saved by OHIF 3.13 in Chromium) and SRs built with highdicom in OHIF's shape (tests/ohif_sr.py), stored
through STOW-RS, the upload endpoint, C-STORE and ``dicomweb import``; the annotations read back through the API."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, EnhancedSRStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicomweb.permissions import Role
from reporting import sr_waiting

from ..conftest import LiveServer, eventually, free_port
from ..data import ct_instance, multipart, stow_headers
from ..ohif_sr import Group, length, measurement_report, read
from .conftest import Api, new_study

OHIF = Path("/work/shared/data/ohif-sr")
OHIF_SR = OHIF / "ohif-3.13-length-sr.dcm"
OHIF_SLICE = OHIF / "ct-slice-measured.dcm"
OHIF_LENGTH_MM = 99.1751279546353  # the NUM OHIF wrote (dsrdump)
OHIF_POINTS = [(77.0736312866211, 102.15676879882812), (161.90023803710938, 153.53919982910156)]  # its SCOORD
TECH = "tech-1"  # the uploader: RADIOLOGY_TECH holds radiology:upload


def stow(api: Api, parts: list[bytes], role: Role = Role.RADIOLOGY_TECH, subject: str = TECH) -> httpx.Response:
    headers = {**stow_headers(), "authorization": f"Bearer {api.token(role, subject)}"}
    return httpx.post(api.server.dicomweb + "/studies", content=multipart(parts), headers=headers, timeout=60)


def stored(api: Api, parts: list[bytes]) -> None:
    response = stow(api, parts)
    assert response.status_code == 200, response.text


def annotations_on(api: Api, sop_instance_uid: str) -> list[dict[str, Any]]:
    with api.client() as client:
        response = client.get(f"/images/{sop_instance_uid}/annotations")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def workflow_study(api: Api, study_instance_uid: str) -> str:
    """The id of the workflow study of that StudyInstanceUID, scheduled now if there is none."""
    sql = "SELECT id FROM radiology_study WHERE study_instance_uid = $1"
    if api.server.db.value(sql, study_instance_uid) is None:
        with api.client() as client:
            new_study(client, studyInstanceUID=study_instance_uid)
    return str(api.server.db.value(sql, study_instance_uid))


def not_imported(api: Api, study_instance_uid: str) -> list[dict[str, Any]]:
    study_id = workflow_study(api, study_instance_uid)
    with api.client() as client:
        response = client.get(f"/studies/{study_id}")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["measurementsNotImported"]
    return found


def new_image(api: Api) -> Dataset:
    """A CT image stored in a new workflow study; its data set."""
    data = ct_instance(generate_uid())
    workflow_study(api, read(data).StudyInstanceUID)
    stored(api, [data])
    return read(data)


def points(group: dict[str, Any]) -> list[tuple[float, float]]:
    return [(p["x"], p["y"]) for p in group["coordinates"]["points"]]


class TestOhifReport:
    """The SR OHIF 3.13 wrote for a Length on a CT slice."""

    def test_length_becomes_a_measurement(self, api: Api) -> None:
        """Stored by STOW-RS after its slice: one measurement of OHIF's length on that slice, its SCOORD's points."""
        sr = pydicom.dcmread(OHIF_SR)
        workflow_study(api, sr.StudyInstanceUID)
        stored(api, [OHIF_SLICE.read_bytes()])
        stored(api, [OHIF_SR.read_bytes()])
        slice_uid = pydicom.dcmread(OHIF_SLICE).SOPInstanceUID
        [found] = annotations_on(api, slice_uid)
        assert found["type"] == "measurement"
        assert found["value"] == pytest.approx(OHIF_LENGTH_MM, rel=1e-9) and found["unit"] == "mm"
        assert points(found) == OHIF_POINTS  # as OHIF wrote them (float32), exactly
        assert found["sourceSopInstanceUid"] == sr.SOPInstanceUID
        tracking_uid = "2.25.492803831341681698218061526987492503518"  # the SR's Tracking Unique Identifier
        assert found["trackingUid"] == tracking_uid
        assert found["createdBy"] == TECH
        assert found["frameNumber"] is None and found["label"] is None
        assert not_imported(api, sr.StudyInstanceUID) == []

        # Stored again (the same bytes): a success, and nothing changes.
        stored(api, [OHIF_SR.read_bytes()])
        assert annotations_on(api, slice_uid) == [found]


class TestShapes:
    """Every tool OHIF writes, built with highdicom in OHIF's shape."""

    def test_each_tool(self, api: Api) -> None:
        image = new_image(api)
        arrow_text = "look here"
        groups = [
            Group("CircleROI", "CIRCLE", [(20, 20), (23, 24)], value=78.5),
            Group("EllipticalROI", "ELLIPSE", [(10, 20), (30, 20), (20, 15), (20, 25)], value=157.1),
            Group("RectangleROI", "POLYLINE", [(1, 1), (10, 1), (10, 10), (1, 10), (1, 1)], value=81.0),
            Group("PlanarFreehandROI", "POLYLINE", [(1, 1), (10, 1), (5, 8), (1, 1)], value=31.5),
            Group("ArrowAnnotate", "POLYLINE", [(5, 5), (20, 20)], text=arrow_text),
            Group("Probe", "POINT", [(7, 7.5)]),
            length([(0.5, 0.5), (3.5, 4.5)], 5.0),
        ]
        sr = read(measurement_report([image], groups))
        stored(api, [sr_bytes(sr)])
        found = {a["trackingUid"]: a for a in annotations_on(api, image.SOPInstanceUID)}
        uids = [tracking_uid(sr, i) for i in range(len(groups))]
        assert set(found) == set(uids)
        circle, ellipse, rectangle, freehand, arrow, probe, line = (found[uid] for uid in uids)
        assert circle["type"] == "circle"
        assert circle["coordinates"] == {"center": {"x": 20, "y": 20}, "radius": 5}
        # An ellipse: the circle of its centre and its area (semi-axes 10 and 5: radius sqrt(50)).
        assert ellipse["type"] == "circle" and ellipse["coordinates"]["center"] == {"x": 20, "y": 20}
        assert ellipse["coordinates"]["radius"] == pytest.approx(50**0.5)
        assert rectangle["type"] == "roi" and points(rectangle) == [(1, 1), (10, 1), (10, 10), (1, 10)]
        assert freehand["type"] == "roi" and points(freehand) == [(1, 1), (10, 1), (5, 8)]
        assert arrow["type"] == "arrow" and points(arrow) == [(5, 5), (20, 20)] and arrow["label"] == arrow_text
        assert probe["type"] == "text" and points(probe) == [(7, 7.5)]
        assert line["type"] == "measurement" and line["value"] == 5.0 and points(line) == [(0.5, 0.5), (3.5, 4.5)]
        assert {a["sourceSopInstanceUid"] for a in found.values()} == {sr.SOPInstanceUID}
        assert {a["createdBy"] for a in found.values()} == {TECH}
        for annotation in found.values():  # what the API takes, it gives back
            assert annotation["value"] is None or annotation["type"] == "measurement"

    def test_image_in_the_same_request(self, api: Api) -> None:
        """An SR sent before its image in one STOW-RS request: the image is stored in the same transaction, and
        found."""
        data = ct_instance(generate_uid())
        image = read(data)
        workflow_study(api, image.StudyInstanceUID)
        sr = read(measurement_report([image], [length([(1, 1), (5, 5)], 5.6)]))
        stored(api, [sr_bytes(sr), data])
        [found] = annotations_on(api, image.SOPInstanceUID)
        assert found["sourceSopInstanceUid"] == sr.SOPInstanceUID
        assert not_imported(api, image.StudyInstanceUID) == []

    def test_frame_number(self, api: Api) -> None:
        """A frame named in the Referenced SOP Sequence is the annotation's; one beyond the image's is not imported."""
        image = new_image(api)
        sr = read(
            measurement_report(
                [image], [length([(1, 1), (5, 5)], 5.6, frame=1), length([(1, 1), (2, 2)], 1.4, frame=2)]
            )
        )
        stored(api, [sr_bytes(sr)])
        [found] = annotations_on(api, image.SOPInstanceUID)
        assert found["frameNumber"] == 1 and found["trackingUid"] == tracking_uid(sr, 0)
        assert not_imported(api, image.StudyInstanceUID) == [
            {
                "sourceSopInstanceUid": sr.SOPInstanceUID,
                "trackingUid": tracking_uid(sr, 1),
                "reason": "frame 2 is beyond the 1 of its image",
                "waitingForImage": None,
            }
        ]


class TestNotImported:
    """What does not become an annotation stays on the SR, and the study says so."""

    def test_unmappable_group_and_missing_image(self, api: Api) -> None:
        image = new_image(api)
        elsewhere = read(ct_instance(image.StudyInstanceUID))  # never stored
        groups = [
            length([(1, 1), (5, 5)], 5.6),
            Group("Angle", "POLYLINE", [(1, 1), (5, 5), (9, 1)], value=90.0),
            length([(1, 1), (5, 5)], 5.6, image=elsewhere),
        ]
        sr = read(measurement_report([image, elsewhere], groups))
        response = stow(api, [sr_bytes(sr)])
        assert response.status_code == 200, response.text  # the SR itself is stored
        [found] = annotations_on(api, image.SOPInstanceUID)
        assert found["trackingUid"] == tracking_uid(sr, 0)
        listed = not_imported(api, image.StudyInstanceUID)
        assert [(n["sourceSopInstanceUid"], n["trackingUid"]) for n in listed] == sorted(
            [(sr.SOPInstanceUID, tracking_uid(sr, 1)), (sr.SOPInstanceUID, tracking_uid(sr, 2))],
            key=lambda pair: pair[1],
        )
        reasons = {n["trackingUid"]: n["reason"] for n in listed}
        waiting = {n["trackingUid"]: n["waitingForImage"] for n in listed}
        assert waiting == {tracking_uid(sr, 1): None, tracking_uid(sr, 2): elsewhere.SOPInstanceUID}
        assert "open POLYLINE of 3 points (Angle)" in reasons[tracking_uid(sr, 1)]
        assert reasons[tracking_uid(sr, 2)] == (
            f"image {elsewhere.SOPInstanceUID} is not in the archive; it becomes an annotation when the image is stored"
        )

    def test_malformed_report(self, api: Api, caplog: pytest.LogCaptureFixture) -> None:
        """An SR whose content highdicom cannot read is stored as any instance; nothing imported, a WARNING."""
        caplog.set_level(logging.WARNING, logger="dicomweb")
        image = new_image(api)
        sr = read(measurement_report([image], [length([(1, 1), (5, 5)], 5.6)]))
        del group_of(sr, 0).ContentSequence[2].MeasuredValueSequence  # a NUM without its value
        group_of(sr, 0).ContentSequence[2].ValueType = "NUMBER"  # no such value type (PS3.3 C.17.3.2.1)
        response = stow(api, [sr_bytes(sr)])
        assert response.status_code == 200, response.text
        with api.dicomweb() as client:
            assert (
                client.get(f"/studies/{sr.StudyInstanceUID}/series/{sr.SeriesInstanceUID}/instances").status_code == 200
            )
        assert annotations_on(api, image.SOPInstanceUID) == []
        [listed] = not_imported(api, image.StudyInstanceUID)
        assert listed["sourceSopInstanceUid"] == sr.SOPInstanceUID and listed["trackingUid"] is None
        assert "highdicom cannot read it" in listed["reason"]
        assert f"SR {sr.SOPInstanceUID}: no measurement imported" in caplog.text

    def test_other_documents_are_left_alone(self, api: Api) -> None:
        """An SR whose root is not TID 1500's is stored and nothing is made of it (pydicom's test SR)."""
        from ..data import SR

        response = stow(api, [SR.read_bytes()])
        assert response.status_code == 200, response.text
        uid = pydicom.dcmread(SR).SOPInstanceUID
        assert (
            api.server.db.value("SELECT count(*) FROM radiology_sr_unimported WHERE source_sop_instance_uid = $1", uid)
            == 0
        )


IMPORTED_WITHIN = 20.0  # seconds: the waiting groups are imported every sr_waiting.POLL_SECONDS


class TestWaitingForTheImage:
    """An SR stored before the image it measures (a C-MOVE sends series in any order): its groups on that image wait
    for it, listed as not imported, and become annotations once it is stored (``reporting/sr_waiting.py``)."""

    def test_imported_once_the_image_is_stored(self, api: Api) -> None:
        image = new_image(api)
        later = ct_instance(image.StudyInstanceUID)
        late = read(later)
        tracked = generate_uid()
        sr = read(
            measurement_report(
                [image, late],
                [length([(1, 1), (5, 5)], 5.6), length([(2, 2), (8, 10)], 10.0, image=late, tracking_uid=tracked)],
            )
        )
        stored(api, [sr_bytes(sr)])
        assert len(annotations_on(api, image.SOPInstanceUID)) == 1
        [waiting] = not_imported(api, image.StudyInstanceUID)
        assert (
            waiting["trackingUid"] == tracked and "becomes an annotation when the image is stored" in waiting["reason"]
        )
        assert waiting["waitingForImage"] == late.SOPInstanceUID
        time.sleep(sr_waiting.POLL_SECONDS + 1)  # nothing happens while the image stays away
        assert len(not_imported(api, image.StudyInstanceUID)) == 1

        stored(api, [later])
        assert eventually(lambda: len(annotations_on(api, late.SOPInstanceUID)) == 1, IMPORTED_WITHIN)
        [found] = annotations_on(api, late.SOPInstanceUID)
        assert (found["type"], found["value"], found["unit"]) == ("measurement", 10.0, "mm")
        assert [(p["x"], p["y"]) for p in found["coordinates"]["points"]] == [(2, 2), (8, 10)]
        assert (found["trackingUid"], found["sourceSopInstanceUid"]) == (tracked, sr.SOPInstanceUID)
        assert found["createdBy"] == TECH  # who stored the SR, not who stored the image
        assert not_imported(api, image.StudyInstanceUID) == []

    def test_frame_beyond_the_image_that_came(self, api: Api) -> None:
        image = new_image(api)
        later = ct_instance(image.StudyInstanceUID)
        late = read(later)
        sr = read(measurement_report([image, late], [length([(1, 1), (5, 5)], 5.6, image=late, frame=3)]))
        stored(api, [sr_bytes(sr)])
        stored(api, [later])
        assert eventually(
            lambda: (
                [(n["reason"], n["waitingForImage"]) for n in not_imported(api, image.StudyInstanceUID)]
                == [("frame 3 is beyond the 1 of its image", None)]
            ),
            IMPORTED_WITHIN,
        )
        assert annotations_on(api, late.SOPInstanceUID) == []

    def test_superseded_or_deleted_before_the_image(self, api: Api) -> None:
        """A waiting group of an SR that a later one replaced, or that was deleted, draws nothing when its image
        comes; the group the later SR waits with does."""
        image = new_image(api)
        later, other = ct_instance(image.StudyInstanceUID), ct_instance(image.StudyInstanceUID)
        late, gone = read(later), read(other)
        first = read(measurement_report([image, late], [length([(1, 1), (5, 5)], 5.6, image=late)]))
        stored(api, [sr_bytes(first)])
        second = read(measurement_report([image, late], [length([(3, 3), (4, 4)], 1.4, image=late)], previous=[first]))
        stored(api, [sr_bytes(second)])
        deleted = read(measurement_report([image, gone], [length([(1, 1), (5, 5)], 5.6, image=gone)]))
        stored(api, [sr_bytes(deleted)])
        with api.dicomweb(Role.ADMIN) as client:
            path = f"/studies/{deleted.StudyInstanceUID}/series/{deleted.SeriesInstanceUID}"
            assert client.delete(path).status_code in (200, 202, 204)
        stored(api, [later, other])
        assert eventually(lambda: len(annotations_on(api, late.SOPInstanceUID)) == 1, IMPORTED_WITHIN)
        [found] = annotations_on(api, late.SOPInstanceUID)
        assert found["sourceSopInstanceUid"] == second.SOPInstanceUID and found["value"] == 1.4
        assert eventually(
            lambda: (
                api.server.db.value(
                    "SELECT count(*) FROM radiology_sr_unimported WHERE image_sop_instance_uid = $1",
                    gone.SOPInstanceUID,
                )
                == 0
            ),
            IMPORTED_WITHIN,
        )
        assert annotations_on(api, gone.SOPInstanceUID) == []
        assert not_imported(api, image.StudyInstanceUID) == []


class TestIdempotence:
    """A group already here is not imported twice; a later SR replaces its predecessors' annotations."""

    def test_same_tracking_uids_in_another_copy(self, api: Api) -> None:
        image = new_image(api)
        group = length([(1, 1), (5, 5)], 5.6, tracking_uid=generate_uid())
        stored(api, [measurement_report([image], [group])])
        before = annotations_on(api, image.SOPInstanceUID)
        stored(api, [measurement_report([image], [group])])  # another SOP Instance, the same group
        assert annotations_on(api, image.SOPInstanceUID) == before

    def test_own_export_comes_back(self, api: Api) -> None:
        """A group tracked as 2.25.<an annotation's id> is that annotation, exported: not imported again."""
        image = new_image(api)
        with api.client(Role.RADIOLOGIST, "dr-a") as client:
            body = {"type": "measurement", "coordinates": {"points": [{"x": 1, "y": 1}, {"x": 5, "y": 5}]}}
            made = client.post(f"/images/{image.SOPInstanceUID}/annotations", json=body)
        assert made.status_code == 201, made.text
        exported = f"2.25.{uuid.UUID(made.json()['id']).int}"
        sr = read(measurement_report([image], [length([(1, 1), (5, 5)], 5.6, tracking_uid=exported)]))
        stored(api, [sr_bytes(sr)])
        assert [a["id"] for a in annotations_on(api, image.SOPInstanceUID)] == [made.json()["id"]]
        assert not_imported(api, image.StudyInstanceUID) == []

    def test_predecessor_replaced(self, api: Api) -> None:
        """OHIF saving a report again: the new SR names the old one; the old one's annotations give way to its own,
        and annotations made through the API stay."""
        image = new_image(api)
        with api.client(Role.RADIOLOGIST, "dr-a") as client:
            body = {"type": "text", "coordinates": {"points": [{"x": 9, "y": 9}]}, "label": "mine"}
            assert client.post(f"/images/{image.SOPInstanceUID}/annotations", json=body).status_code == 201
        kept = generate_uid()
        first = read(
            measurement_report(
                [image],
                [
                    length([(1, 1), (5, 5)], 5.6, tracking_uid=kept),
                    Group("Angle", "POLYLINE", [(1, 1), (5, 5), (9, 1)], value=90.0),
                ],
            )
        )
        stored(api, [sr_bytes(first)])
        assert len(not_imported(api, image.StudyInstanceUID)) == 1
        second = read(
            measurement_report(
                [image],
                [length([(1, 1), (6, 6)], 7.0, tracking_uid=kept), length([(2, 2), (3, 3)], 1.4)],
                previous=[first],
            )
        )
        stored(api, [sr_bytes(second)])
        found = annotations_on(api, image.SOPInstanceUID)
        assert sorted(
            (a["label"], a["sourceSopInstanceUid"], a["value"]) for a in found if a["sourceSopInstanceUid"]
        ) == sorted([(None, second.SOPInstanceUID, 7.0), (None, second.SOPInstanceUID, 1.4)])
        assert [a["label"] for a in found if a["sourceSopInstanceUid"] is None] == ["mine"]
        assert not_imported(api, image.StudyInstanceUID) == []  # the first SR's unimported group went with it


class TestAuthors:
    """Who stored the SR is the author; storing needs radiology:upload."""

    def test_without_upload_permission(self, api: Api) -> None:
        image = new_image(api)
        sr = measurement_report([image], [length([(1, 1), (5, 5)], 5.6)])
        for role in (Role.RADIOLOGIST, Role.DOCTOR):
            assert stow(api, [sr], role=role, subject="dr-a").status_code == 403
        assert annotations_on(api, image.SOPInstanceUID) == []
        assert stow(api, [sr], role=Role.ADMIN, subject="boss").status_code == 200
        assert [a["createdBy"] for a in annotations_on(api, image.SOPInstanceUID)] == ["boss"]

    def test_upload_endpoint(self, api: Api) -> None:
        """``POST /studies/{id}/upload`` of an SR: imported as through STOW-RS, the uploader its author."""
        image = new_image(api)
        sr = read(measurement_report([image], [length([(1, 1), (5, 5)], 5.6)]))
        study_id = workflow_study(api, image.StudyInstanceUID)
        with api.client(Role.RADIOLOGY_TECH, "tech-2") as client:
            files = {"file": ("sr.dcm", sr_bytes(sr), "application/dicom")}
            response = client.post(f"/studies/{study_id}/upload", files=files)
        assert response.status_code == 201, response.text
        [found] = annotations_on(api, image.SOPInstanceUID)
        assert found["createdBy"] == "tech-2" and found["sourceSopInstanceUid"] == sr.SOPInstanceUID


class TestOtherTransports:
    """C-STORE and ``dicomweb import`` store through the same path: the same import, their own authors."""

    def test_c_store(self, server_factory: Any) -> None:
        server: LiveServer = server_factory(dimse_port=free_port())
        server.db.fetch(
            "INSERT INTO dicom_node (ae_title, host, port, permissions) VALUES ('MODALITY1', '127.0.0.1', 104, $1)",
            ["store"],
        )
        image = read(ct_instance(generate_uid()))
        sr = read(measurement_report([image], [length([(1, 1), (5, 5)], 5.6)]))
        ae = AE(ae_title="MODALITY1")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(EnhancedSRStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", server.settings.dimse_port, ae_title="DICOMWEB")
        assert assoc.is_established
        try:
            for ds in (image, sr):
                assert assoc.send_c_store(ds).Status == 0x0000
        finally:
            assoc.release()
        rows = server.db.fetch(
            "SELECT type, value, created_by, source_sop_instance_uid FROM radiology_annotation "
            "WHERE sop_instance_uid = $1",
            image.SOPInstanceUID,
        )
        assert [tuple(r) for r in rows] == [("measurement", 5.6, "MODALITY1", sr.SOPInstanceUID)]

    def test_dicomweb_import(self, new_database: Any, tmp_path: Path) -> None:
        """The SR parsed in the import's spawned processes (what it reads pickles), its annotations by "dicomweb
        import"; the SR first in the folder, its image after: a second run finds both stored."""
        source = tmp_path / "in"
        source.mkdir()
        image = read(ct_instance(generate_uid()))
        (source / "1-slice.dcm").write_bytes(ct_bytes(image))
        sr = read(measurement_report([image], [length([(1, 1), (5, 5)], 5.6)]))
        (source / "2-sr.dcm").write_bytes(sr_bytes(sr))
        db = new_database()
        env = {**os.environ, "DICOMWEB_DATABASE_URL": db.url, "DICOMWEB_DATA_DIR": str(tmp_path / "a")}
        result = subprocess.run(
            [sys.executable, "-m", "dicomweb", "import", "--quiet", str(source)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "stored 2" in result.stderr
        rows = db.fetch("SELECT type, value, created_by, tracking_uid FROM radiology_annotation")
        assert [tuple(r) for r in rows] == [("measurement", 5.6, "dicomweb import", tracking_uid(sr, 0))]
        shutil.rmtree(source)


# ---------------------------------------------------------------------------------------------------- helpers


def group_of(sr: Dataset, index: int) -> Dataset:
    """The ``index``-th Measurement Group of a TID 1500 SR (in its Imaging Measurements container)."""
    [measurements] = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    group: Dataset = measurements.ContentSequence[index]
    return group


def tracking_uid(sr: Dataset, index: int) -> str:
    [uid] = [i.UID for i in group_of(sr, index).ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "112040"]
    return str(uid)


def sr_bytes(sr: Dataset) -> bytes:
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


ct_bytes = sr_bytes
