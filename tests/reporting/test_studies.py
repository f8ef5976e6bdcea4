"""reporting/studies.py: scheduling, searching, the status workflow, arrival of images, images, deletion."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import httpx
import pydicom

from dicomweb.permissions import Role

from ..data import ct_instance, multipart, stow_headers
from .conftest import Api, new_study


def stow(api: Api, *instances: bytes) -> None:
    with api.dicomweb() as client:
        response = client.post("/studies", content=multipart(instances), headers=stow_headers())
    assert response.status_code == 200, response.text


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["error"] and body["detail"]
    return body


class TestCreate:
    """POST /api/radiology/studies."""

    def test_generated_identifiers(self, admin: httpx.Client) -> None:
        """Accession number ACC{YYYYMMDD}{random}, a 2.25 UID, scheduled, counts zero, a Location to read it."""
        response = admin.post("/studies", json={"patientId": "P-1", "modality": "MR", "studyDescription": "Head"})
        assert response.status_code == 201, response.text
        study = response.json()
        assert re.fullmatch(r"ACC\d{8}[0-9A-F]{5}", study["accessionNumber"])
        assert re.fullmatch(r"2\.25\.\d+", study["studyInstanceUID"]) and len(study["studyInstanceUID"]) <= 64
        assert study["status"] == "scheduled" and study["createdBy"] == "admin"
        assert (study["numberOfSeries"], study["numberOfImages"], study["storageBytes"]) == (0, 0, 0)
        assert admin.get(response.headers["location"].removeprefix("/api/radiology")).json()["id"] == study["id"]

    def test_supplied_identifiers_kept_and_unique(self, admin: httpx.Client) -> None:
        """A caller's accession number and UID are kept; a second study with either gets 409."""
        accession, uid = "A" + uuid.uuid4().hex[:12], f"2.25.{uuid.uuid4().int}"
        study = new_study(admin, accessionNumber=accession, studyInstanceUID=uid, orderId="ORD-7")
        assert (study["accessionNumber"], study["studyInstanceUID"], study["orderId"]) == (accession, uid, "ORD-7")
        assert_error(
            admin.post("/studies", json={"patientId": "P", "modality": "CT", "accessionNumber": accession}), 409
        )
        assert_error(admin.post("/studies", json={"patientId": "P", "modality": "CT", "studyInstanceUID": uid}), 409)

    def test_invalid_fields_listed(self, admin: httpx.Client) -> None:
        """Each invalid field is named with the reason; nothing is created."""
        body = {"modality": "XX", "studyInstanceUID": "1.2.abc", "accessionNumber": "x" * 17, "extra": 1}
        error = assert_error(admin.post("/studies", json=body), 400)
        fields = {e["field"] for e in error["errors"]}
        assert fields == {"patientId", "modality", "studyInstanceUID", "accessionNumber", "extra"}

    def test_worklist_fields_kept_and_ids_generated(self, admin: httpx.Client) -> None:
        """What a modality's worklist shows of an order is stored and returned as given; the requested procedure
        and scheduled step IDs are generated (RP/SPS, the date, random; 16 characters of SH) when absent."""
        order = {
            "patientBirthDate": "1970-02-03",
            "patientSex": "F",
            "scheduledAt": "2026-12-06T09:30:00+00:00",
            "scheduledStationAETitle": "CT_ROOM_2",
            "scheduledStationName": "CT2",
            "scheduledPerformingPhysician": "Doe^Jane",
            "referringPhysician": "Smith^John",
            "requestedProcedureId": "RP-77",
            "requestedProcedureDescription": "CT head without contrast",
            "requestedProcedureCode": {
                "codeValue": "24725-4",
                "codingSchemeDesignator": "LN",
                "codeMeaning": "CT Head",
            },
            "scheduledProcedureStepId": "SPS-77-1",
            "scheduledProcedureStepDescription": "Head, axial",
            "priority": "STAT",
        }
        study = new_study(admin, **order)
        assert {key: study[key] for key in order} == {**order, "scheduledAt": "2026-12-06T09:30:00Z"}
        assert admin.get(f"/studies/{study['id']}").json()["requestedProcedureCode"] == order["requestedProcedureCode"]
        bare = new_study(admin)
        assert re.fullmatch(r"RP\d{8}[0-9A-F]{6}", bare["requestedProcedureId"])
        assert re.fullmatch(r"SPS\d{8}[0-9A-F]{5}", bare["scheduledProcedureStepId"])
        assert bare["requestedProcedureCode"] is None and bare["priority"] is None

    def test_worklist_fields_validated(self, admin: httpx.Client) -> None:
        """An AE title by PS3.5's rules, a sex and a priority DICOM knows, dates, SH and PN lengths: each invalid
        field is named."""
        body = {
            "patientId": "P",
            "modality": "CT",
            "scheduledStationAETitle": "A\\B",
            "patientSex": "X",
            "priority": "URGENT",
            "patientBirthDate": "1970-13-01",
            "requestedProcedureId": "x" * 17,
            "scheduledPerformingPhysician": "p" * 65,
            "requestedProcedureCode": {"codeValue": "1"},
        }
        error = assert_error(admin.post("/studies", json=body), 400)
        fields = {e["field"].split(".")[0] for e in error["errors"]}
        assert fields == set(body) - {"patientId", "modality"}

    def test_not_json(self, admin: httpx.Client) -> None:
        """A body that is not JSON is 400, another media type 415."""
        assert_error(admin.post("/studies", content=b"{", headers={"content-type": "application/json"}), 400)
        assert_error(admin.post("/studies", content=b"a=b", headers={"content-type": "text/plain"}), 415)

    def test_existing_archive_study_starts_in_progress(self, api: Api, admin: httpx.Client) -> None:
        """A study scheduled for images the archive already holds is in progress from the start."""
        uid = f"2.25.{uuid.uuid4().int}"
        stow(api, ct_instance(study_instance_uid=uid))
        assert new_study(admin, studyInstanceUID=uid)["status"] == "in_progress"


class TestPermissions:
    """Who may do what with studies (the permission table, end to end)."""

    def test_doctor_reads_but_cannot_schedule(self, api: Api, admin: httpx.Client) -> None:
        study = new_study(admin)
        with api.client(Role.DOCTOR, "dr-house") as doctor:
            assert doctor.get(f"/studies/{study['id']}").status_code == 200
            assert_error(doctor.post("/studies", json={"patientId": "P", "modality": "CT"}), 403)
            assert_error(doctor.put(f"/studies/{study['id']}/status", json={"status": "in_progress"}), 403)

    def test_only_admin_deletes(self, api: Api, admin: httpx.Client) -> None:
        study = new_study(admin)
        with api.client(Role.RADIOLOGY_TECH, "tech") as tech:
            assert_error(tech.delete(f"/studies/{study['id']}"), 403)

    def test_no_token(self, api: Api) -> None:
        response = httpx.get(api.server.url + "/api/radiology/studies")
        assert_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


class TestSearch:
    """GET /api/radiology/studies."""

    def test_filters_and_pages(self, admin: httpx.Client) -> None:
        """Filters combine; pages have the total count; newest first."""
        patient = "PAT-" + uuid.uuid4().hex[:8]
        made = [new_study(admin, patientId=patient, studyDate=f"2024-03-{day:02d}") for day in range(1, 6)]
        new_study(admin, patientId=patient, modality="US", studyDate="2024-03-03")
        page = admin.get("/studies", params={"patientId": patient, "modality": "CT", "limit": 2, "page": 2}).json()
        assert (page["total"], page["page"], page["limit"]) == (5, 2, 2)
        assert [s["id"] for s in page["items"]] == [made[2]["id"], made[1]["id"]]
        dated = admin.get("/studies", params={"patientId": patient, "dateFrom": "2024-03-02", "dateTo": "2024-03-03"})
        assert dated.json()["total"] == 3
        one = admin.get("/studies", params={"accessionNumber": made[0]["accessionNumber"]}).json()
        assert [s["id"] for s in one["items"]] == [made[0]["id"]]
        assert admin.get("/studies", params={"patientId": patient, "status": "reported"}).json()["total"] == 0

    def test_bad_parameters(self, admin: httpx.Client) -> None:
        """Unknown parameters, bad values and a reversed date range are 400 naming the parameter."""
        for params, field in [
            ({"status": "done"}, "status"),
            ({"limit": "1000"}, "limit"),
            ({"page": "0"}, "page"),
            ({"dateFrom": "yesterday"}, "dateFrom"),
            ({"patient": "x"}, "patient"),
        ]:
            error = assert_error(admin.get("/studies", params=params), 400)
            assert [e["field"] for e in error["errors"]] == [field]
        assert_error(admin.get("/studies", params={"dateFrom": "2024-02-01", "dateTo": "2024-01-01"}), 400)

    def test_sql_metacharacters_are_values(self, admin: httpx.Client) -> None:
        """Quotes and comment markers match nothing and harm nothing."""
        response = admin.get("/studies", params={"patientId": "x' OR '1'='1", "accessionNumber": "1; DROP--"})
        assert response.status_code == 200 and response.json()["total"] == 0


class TestWorkflow:
    """PUT /api/radiology/studies/{id}/status."""

    def test_path_through_the_workflow(self, admin: httpx.Client) -> None:
        """scheduled → in_progress → completed → reported, each step answered with the study."""
        study = new_study(admin)
        for status in ("in_progress", "completed", "reported"):
            response = admin.put(f"/studies/{study['id']}/status", json={"status": status})
            assert response.status_code == 200, response.text
            assert response.json()["status"] == status

    def test_refused_transitions_list_the_allowed(self, admin: httpx.Client) -> None:
        """A step the workflow does not allow is 409 with the current state and the allowed next ones."""
        study = new_study(admin)
        error = assert_error(admin.put(f"/studies/{study['id']}/status", json={"status": "completed"}), 409)
        assert error["currentStatus"] == "scheduled"
        assert error["allowedTransitions"] == ["cancelled", "in_progress"]
        admin.put(f"/studies/{study['id']}/status", json={"status": "cancelled"})
        error = assert_error(admin.put(f"/studies/{study['id']}/status", json={"status": "in_progress"}), 409)
        assert error["allowedTransitions"] == []
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "cancelled"

    def test_cancel_from_in_progress_only_before_completion(self, admin: httpx.Client) -> None:
        study = new_study(admin)
        for status in ("in_progress", "cancelled"):
            assert admin.put(f"/studies/{study['id']}/status", json={"status": status}).status_code == 200
        other = new_study(admin)
        for status in ("in_progress", "completed"):
            admin.put(f"/studies/{other['id']}/status", json={"status": status})
        assert_error(admin.put(f"/studies/{other['id']}/status", json={"status": "cancelled"}), 409)

    def test_unknown_and_malformed_ids(self, admin: httpx.Client) -> None:
        assert_error(admin.get(f"/studies/{uuid.uuid4()}"), 404)
        assert_error(admin.get("/studies/not-a-uuid"), 404)
        assert_error(admin.put(f"/studies/{uuid.uuid4()}/status", json={"status": "completed"}), 404)


class TestArrival:
    """The first image of a scheduled study, however it arrives, moves it to in_progress with exact counts."""

    def test_by_study_instance_uid(self, api: Api, admin: httpx.Client) -> None:
        study = new_study(admin)
        uid, series = study["studyInstanceUID"], f"2.25.{uuid.uuid4().int}"
        stow(api, *(ct_instance(study_instance_uid=uid, series_instance_uid=series) for _ in range(3)))
        stow(api, ct_instance(study_instance_uid=uid))
        found = admin.get(f"/studies/{study['id']}").json()
        assert found["status"] == "in_progress"
        assert (found["numberOfSeries"], found["numberOfImages"]) == (2, 4)
        assert found["storageBytes"] > 4 * 64 * 64 * 2
        assert sorted(s["numberOfImages"] for s in found["series"]) == [1, 3]

    def test_by_accession_number(self, api: Api, admin: httpx.Client) -> None:
        """A modality that made its own StudyInstanceUID: matched by AccessionNumber, the study takes its UID."""
        study = new_study(admin)
        uid = f"2.25.{uuid.uuid4().int}"
        stow(api, ct_instance(study_instance_uid=uid, AccessionNumber=study["accessionNumber"]))
        found = admin.get(f"/studies/{study['id']}").json()
        assert (found["status"], found["studyInstanceUID"], found["numberOfImages"]) == ("in_progress", uid, 1)

    def test_later_states_are_kept(self, api: Api, admin: httpx.Client) -> None:
        """Images arriving for a completed study do not move it back."""
        study = new_study(admin)
        for status in ("in_progress", "completed"):
            admin.put(f"/studies/{study['id']}/status", json={"status": status})
        stow(api, ct_instance(study_instance_uid=study["studyInstanceUID"]))
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "completed"


class TestSeriesAndImages:
    """POST /studies/{id}/series and GET /studies/{id}/images."""

    def test_announced_series_then_images(self, api: Api, admin: httpx.Client) -> None:
        """An announced series is listed before its images arrive, once after; numbers are unique per study."""
        study = new_study(admin, modality="MR")
        created = admin.post(f"/studies/{study['id']}/series", json={"seriesDescription": "T1"})
        assert created.status_code == 201, created.text
        series = created.json()
        assert (series["seriesNumber"], series["modality"], series["numberOfImages"]) == (1, "MR", 0)
        assert_error(admin.post(f"/studies/{study['id']}/series", json={"seriesNumber": 1}), 409)
        second = admin.post(f"/studies/{study['id']}/series", json={}).json()
        assert second["seriesNumber"] == 2
        stow(api, ct_instance(study_instance_uid=study["studyInstanceUID"], series_instance_uid=series["id"]))
        found = admin.get(f"/studies/{study['id']}").json()
        assert [(s["id"], s["numberOfImages"]) for s in found["series"]] == [(series["id"], 1), (second["id"], 0)]
        assert found["numberOfSeries"] == 2

    def test_images_with_working_links(self, api: Api, admin: httpx.Client) -> None:
        """Every image with its UIDs, frame count and DICOMweb URLs that answer."""
        study = new_study(admin)
        uid, series = study["studyInstanceUID"], f"2.25.{uuid.uuid4().int}"
        stow(api, *(ct_instance(study_instance_uid=uid, series_instance_uid=series, InstanceNumber=n) for n in (2, 1)))
        images = admin.get(f"/studies/{study['id']}/images").json()
        assert [i["instanceNumber"] for i in images] == [1, 2]
        image = images[0]
        assert (image["studyInstanceUID"], image["seriesInstanceUID"], image["numberOfFrames"]) == (uid, series, 1)
        assert image["id"] == image["sopInstanceUID"] and image["rows"] == 64
        with api.dicomweb() as client:
            metadata = client.get(image["links"]["metadata"])
            assert metadata.status_code == 200
            assert metadata.json()[0]["00080018"]["Value"] == [image["sopInstanceUID"]]
            assert client.get(image["links"]["rendered"], headers={"accept": "image/png"}).status_code == 200
            frames = client.get(
                image["links"]["frames"], headers={"accept": 'multipart/related; type="application/octet-stream"'}
            )
            assert frames.status_code == 200
            wado = client.get(image["links"]["wadoURI"])
            assert wado.status_code == 200 and pydicom.dcmread(io.BytesIO(wado.content)).Rows == 64

    def test_modalities(self, admin: httpx.Client) -> None:
        modalities = admin.get("/modalities").json()
        assert {m["code"] for m in modalities} == {"CR", "CT", "MR", "US", "XR", "DX", "MG", "PT", "NM", "RF", "OT"}
        assert {"code": "CT", "name": "Computed Tomography"} in modalities


class TestDelete:
    """DELETE /api/radiology/studies/{id}: everything goes, down to the files."""

    def test_cascade(self, api: Api, admin: httpx.Client) -> None:
        study = new_study(admin)
        uid = study["studyInstanceUID"]
        stow(api, *(ct_instance(study_instance_uid=uid) for _ in range(2)))
        admin.post(f"/studies/{study['id']}/series", json={})
        study_dir = api.server.data_dir / "files" / uid
        assert len(list(study_dir.rglob("*.dcm"))) == 2
        assert admin.delete(f"/studies/{study['id']}").status_code == 204
        assert_error(admin.get(f"/studies/{study['id']}"), 404)
        assert not list(study_dir.rglob("*.dcm"))
        with api.dicomweb() as client:
            assert client.get("/studies", params={"StudyInstanceUID": uid}).json() == []
        db = api.server.db
        assert db.value("SELECT count(*) FROM radiology_series WHERE study_id = $1", uuid.UUID(study["id"])) == 0
        assert_error(admin.delete(f"/studies/{study['id']}"), 404)

    def test_audited(self, api: Api, admin: httpx.Client) -> None:
        """Reporting requests leave audit events naming the study and the patient."""
        patient = "AUD-" + uuid.uuid4().hex[:6]
        study = new_study(admin, patientId=patient)
        admin.get(f"/studies/{study['id']}")
        with api.server.client(headers={"authorization": f"Bearer {api.token()}"}) as client:
            events = client.get("/api/audit", params={"patient": patient}).json()
        assert [(e["action"], e["method"], e["route"]) for e in events] == [
            ("read", "GET", "/api/radiology/studies/{id}"),
            ("create", "POST", "/api/radiology/studies"),
        ]
        assert {e["studyInstanceUID"] for e in events} == {study["studyInstanceUID"]}
