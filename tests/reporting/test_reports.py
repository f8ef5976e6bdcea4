"""reporting/reports.py: writing reports (from templates), optimistic concurrency, verification, addenda, versions."""

from __future__ import annotations

import datetime
import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import pytest

from dicomweb.permissions import Role
from reporting.reports import placeholder_values
from reporting.workflow import PLACEHOLDERS

from ..data import ct_instance, multipart, stow_headers
from .conftest import Api, new_study

CONCURRENT_ROUNDS = 10  # rounds of two writers racing for the same version


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an error of ``status`` in the one error shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["error"] and body["detail"]
    return body


def completed_study(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    """A study moved scheduled → in_progress → completed."""
    study = new_study(client, **fields)
    move(client, study, "in_progress", "completed")
    return study


def move(client: httpx.Client, study: dict[str, Any], *states: str) -> None:
    for state in states:
        response = client.put(f"/studies/{study['id']}/status", json={"status": state})
        assert response.status_code == 200, response.text


def new_report(client: httpx.Client, study: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = client.post(f"/studies/{study['id']}/report", json={"findings": "No acute findings.", **fields})
    assert response.status_code == 201, response.text
    report: dict[str, Any] = response.json()
    return report


def edit(client: httpx.Client, report: dict[str, Any], version: int | None = None, **fields: Any) -> httpx.Response:
    """PUT the fields, naming ``version`` (the report's own unless given) in If-Match."""
    headers = {"if-match": f'"{report["version"] if version is None else version}"'}
    return client.put(f"/reports/{report['id']}", json=fields, headers=headers)


def detail(client: httpx.Client, report: dict[str, Any]) -> dict[str, Any]:
    response = client.get(f"/reports/{report['id']}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def signed(client: httpx.Client, study: dict[str, Any]) -> dict[str, Any]:
    """A final report on a completed study (which is then reported)."""
    report = new_report(client, study)
    response = client.post(f"/reports/{report['id']}/verify")
    assert response.status_code == 200, response.text
    final: dict[str, Any] = response.json()
    return final


def race(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Run the calls in threads released at the same moment; their responses, in the calls' order."""
    barrier = threading.Barrier(len(calls))
    responses: list[httpx.Response | None] = [None] * len(calls)

    def run(n: int) -> None:
        barrier.wait()
        responses[n] = calls[n]()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None for r in responses), "a racing request did not finish"
    return [r for r in responses if r is not None]


def stow(api: Api, *instances: bytes) -> None:
    with api.dicomweb() as client:
        response = client.post("/studies", content=multipart(instances), headers=stow_headers())
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def radiologist(api: Api) -> Any:
    with api.client(Role.RADIOLOGIST, "dr-a") as client:
        yield client


class TestCreate:
    """POST /api/radiology/studies/{studyId}/report and GET /api/radiology/studies/{studyId}/reports."""

    def test_draft(self, admin: httpx.Client, radiologist: httpx.Client) -> None:
        """A draft preliminary report by the caller, version 1 (ETag "1"), a Location; version 1 recorded."""
        study = new_study(admin)
        response = radiologist.post(
            f"/studies/{study['id']}/report",
            json={"findings": "Clear lungs.", "impression": "Normal.", "recommendations": "None."},
        )
        assert response.status_code == 201, response.text
        report = response.json()
        assert (report["status"], report["reportType"], report["author"], report["version"]) == (
            "draft",
            "preliminary",
            "dr-a",
            1,
        )
        assert (report["findings"], report["impression"], report["recommendations"]) == (
            "Clear lungs.",
            "Normal.",
            "None.",
        )
        assert report["studyId"] == study["id"] and report["parentReportId"] is None
        assert report["verifiedBy"] is None and report["verifiedAt"] is None and report["templateId"] is None
        assert response.headers["etag"] == '"1"'
        assert response.headers["location"] == f"/api/radiology/reports/{report['id']}"
        got = radiologist.get(f"/reports/{report['id']}")
        assert got.headers["etag"] == '"1"'
        assert [(v["version"], v["action"], v["changedBy"], v["findings"]) for v in got.json()["versions"]] == [
            (1, "created", "dr-a", "Clear lungs.")
        ]

    def test_preliminary_and_defaults(self, admin: httpx.Client) -> None:
        """status preliminary is kept; text fields default to empty."""
        study = new_study(admin)
        response = admin.post(f"/studies/{study['id']}/report", json={"status": "preliminary", "reportType": "final"})
        assert response.status_code == 201, response.text
        report = response.json()
        assert (report["status"], report["reportType"]) == ("preliminary", "final")
        assert report["findings"] == report["impression"] == report["recommendations"] == ""

    def test_invalid(self, admin: httpx.Client) -> None:
        """A report cannot be created final, nor as an addendum; unknown fields are named (400)."""
        study = new_study(admin)
        body = {"status": "final", "reportType": "addendum", "author": "someone-else"}
        error = assert_error(admin.post(f"/studies/{study['id']}/report", json=body), 400)
        assert {e["field"] for e in error["errors"]} == {"status", "reportType", "author"}
        assert admin.get(f"/studies/{study['id']}/reports").json() == []

    def test_unknown_study(self, admin: httpx.Client) -> None:
        """A report on an unknown (or malformed) study id is 404."""
        assert_error(admin.post(f"/studies/{uuid.uuid4()}/report", json={}), 404)
        assert_error(admin.post("/studies/nope/report", json={}), 404)
        assert_error(admin.get(f"/studies/{uuid.uuid4()}/reports"), 404)

    def test_listed(self, admin: httpx.Client) -> None:
        """The study lists its reports oldest first, and so does the study's own page."""
        study = new_study(admin)
        first, second = new_report(admin, study), new_report(admin, study, findings="Second.")
        listed = admin.get(f"/studies/{study['id']}/reports").json()
        assert [r["id"] for r in listed] == [first["id"], second["id"]]
        assert listed[0] == first
        assert [r["id"] for r in admin.get(f"/studies/{study['id']}").json()["reports"]] == [first["id"], second["id"]]

    def test_permissions(self, api: Api, admin: httpx.Client) -> None:
        """A doctor reads reports but cannot write one (403); a technician may write one."""
        study = new_study(admin)
        report = new_report(admin, study)
        with api.client(Role.DOCTOR, "dr-house") as doctor:
            assert_error(doctor.post(f"/studies/{study['id']}/report", json={}), 403)
            assert_error(edit(doctor, report, findings="x"), 403)
            assert_error(doctor.post(f"/reports/{report['id']}/addendum", json={}), 403)
            assert doctor.get(f"/reports/{report['id']}").status_code == 200
            assert doctor.get(f"/studies/{study['id']}/reports").status_code == 200
        with api.client(Role.RADIOLOGY_TECH, "tech-1") as tech:
            assert new_report(tech, study)["author"] == "tech-1"

    def test_audited(self, api: Api, admin: httpx.Client) -> None:
        """Report requests name the study and patient in the audit trail, by report id too."""
        patient = "REP-" + uuid.uuid4().hex[:6]
        study = completed_study(admin, patientId=patient)
        report = new_report(admin, study)
        edit(admin, report, findings="Edited.")
        admin.post(f"/reports/{report['id']}/verify")
        admin.post(f"/reports/{report['id']}/addendum", json={})
        admin.get(f"/reports/{report['id']}")
        admin.get(f"/studies/{study['id']}/reports")
        with api.server.client(headers={"authorization": f"Bearer {api.token()}"}) as client:
            events = client.get("/api/audit", params={"patient": patient}).json()
        routes = [(e["method"], e["route"]) for e in events if "/report" in e["route"]]
        assert sorted(routes) == sorted(
            [
                ("POST", "/api/radiology/studies/{studyId}/report"),
                ("PUT", "/api/radiology/reports/{id}"),
                ("POST", "/api/radiology/reports/{id}/verify"),
                ("POST", "/api/radiology/reports/{id}/addendum"),
                ("GET", "/api/radiology/reports/{id}"),
                ("GET", "/api/radiology/studies/{studyId}/reports"),
            ]
        )
        assert {e["studyInstanceUID"] for e in events} == {study["studyInstanceUID"]}


class TestTemplates:
    """Reports written from a template: placeholders filled from the study and the archive's DICOM data."""

    CONTENT = "\n".join(f"{name}={{{{{name}}}}}" for name in sorted(PLACEHOLDERS))

    def template(self, admin: httpx.Client, **fields: Any) -> dict[str, Any]:
        body = {"name": "T-" + uuid.uuid4().hex[:8], "content": self.CONTENT, **fields}
        response = admin.post("/report-templates", json=body)
        assert response.status_code == 201, response.text
        template: dict[str, Any] = response.json()
        return template

    @staticmethod
    def filled(report: dict[str, Any]) -> dict[str, str]:
        return dict(line.split("=", 1) for line in report["findings"].splitlines())

    def test_from_archive(self, api: Api, admin: httpx.Client) -> None:
        """Patient demographics and the study date come from the stored DICOM instance; the rest from the study."""
        uid = f"2.25.{uuid.uuid4().int}"
        study = new_study(
            admin,
            studyInstanceUID=uid,
            patientId="P-77",
            patientName="Scheduled^Name",
            accessionNumber="A" + uuid.uuid4().hex[:10],
            studyDescription="CT chest",
            bodyPart="CHEST",
            referringPhysician="Who^Referred",
            performingTechnician="Tech^One",
        )
        stow(api, ct_instance(study_instance_uid=uid, patient_name="Doe^Jane"))
        template = self.template(admin)
        before = datetime.datetime.now(datetime.UTC).date()
        report = new_report(admin, study, findings=None, templateId=template["id"])
        after = datetime.datetime.now(datetime.UTC).date()
        values = self.filled(report)
        assert values.pop("reportDate") in {before.isoformat(), after.isoformat()}
        assert values == {
            "patientName": "Doe^Jane",
            "patientId": "P-77",
            "patientBirthDate": "1970-01-01",
            "patientSex": "F",
            "accessionNumber": study["accessionNumber"],
            "studyDate": "2024-03-15",
            "modality": "CT",
            "studyDescription": "CT chest",
            "bodyPart": "CHEST",
            "referringPhysician": "Who^Referred",
            "performingTechnician": "Tech^One",
            "studyInstanceUID": uid,
        }
        assert report["templateId"] == template["id"]

    def test_without_images(self, admin: httpx.Client) -> None:
        """Before images arrive, the study's own values are used; values nobody knows are left empty."""
        study = new_study(admin, patientName="Roe^Richard", studyDate="2025-01-02")
        report = new_report(admin, study, findings=None, templateId=self.template(admin)["id"])
        values = self.filled(report)
        assert (values["patientName"], values["studyDate"], values["modality"]) == ("Roe^Richard", "2025-01-02", "CT")
        assert values["patientBirthDate"] == values["patientSex"] == values["studyDescription"] == ""

    def test_study_date_of_the_study_first(self, api: Api, admin: httpx.Client) -> None:
        """The workflow study's own study date wins over the archive's."""
        uid = f"2.25.{uuid.uuid4().int}"
        study = new_study(admin, studyInstanceUID=uid, studyDate="2025-06-30")
        stow(api, ct_instance(study_instance_uid=uid))
        report = new_report(admin, study, findings=None, templateId=self.template(admin, content="{{studyDate}}")["id"])
        assert report["findings"] == "2025-06-30"

    def test_findings_given_win(self, admin: httpx.Client) -> None:
        """Findings given with a template are kept as written; the template is still named."""
        template = self.template(admin, content="{{modality}}")
        report = new_report(admin, new_study(admin), findings="My own words.", templateId=template["id"])
        assert report["findings"] == "My own words." and report["templateId"] == template["id"]

    def test_inactive_template(self, admin: httpx.Client) -> None:
        """An inactive template cannot be used: 400 naming templateId."""
        template = self.template(admin, isActive=False)
        response = admin.post(f"/studies/{new_study(admin)['id']}/report", json={"templateId": template["id"]})
        error = assert_error(response, 400)
        assert [e["field"] for e in error["errors"]] == ["templateId"]

    def test_unknown_template(self, admin: httpx.Client) -> None:
        """An unknown template is 404; a malformed id 400."""
        study = new_study(admin)
        assert_error(admin.post(f"/studies/{study['id']}/report", json={"templateId": str(uuid.uuid4())}), 404)
        error = assert_error(admin.post(f"/studies/{study['id']}/report", json={"templateId": "x"}), 400)
        assert [e["field"] for e in error["errors"]] == ["templateId"]
        assert admin.get(f"/studies/{study['id']}/reports").json() == []

    def test_every_placeholder_has_a_value(self) -> None:
        """placeholder_values knows each placeholder the templates may use, and no other."""
        study = {
            "patient_name": None,
            "patient_id": "P",
            "accession_number": "A",
            "study_date": None,
            "modality": "MR",
            "study_description": None,
            "body_part": None,
            "referring_physician": None,
            "performing_technician": None,
            "study_instance_uid": "1.2",
        }
        values = placeholder_values(study, None, None, datetime.date(2024, 1, 2))
        assert set(values) == PLACEHOLDERS
        assert values["reportDate"] == "2024-01-02" and values["patientName"] is None


class TestUpdate:
    """PUT /api/radiology/reports/{id}: edits under optimistic concurrency, each one a new version."""

    def test_if_match(self, admin: httpx.Client, radiologist: httpx.Client) -> None:
        """With If-Match of the version read: 200, the next version, ETag of it; fields left out keep their value."""
        report = new_report(radiologist, new_study(admin))
        response = edit(radiologist, report, findings="Revised.")
        assert response.status_code == 200, response.text
        updated = response.json()
        assert (updated["findings"], updated["impression"], updated["version"]) == ("Revised.", "", 2)
        assert response.headers["etag"] == '"2"' and updated["updatedAt"] > report["updatedAt"]

    def test_version_in_body(self, admin: httpx.Client) -> None:
        """The version may be named in the body instead of If-Match."""
        report = new_report(admin, new_study(admin))
        response = admin.put(f"/reports/{report['id']}", json={"impression": "Normal.", "version": 1})
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 2

    def test_no_version(self, admin: httpx.Client) -> None:
        """Naming no version is 428; nothing changes."""
        report = new_report(admin, new_study(admin))
        assert_error(admin.put(f"/reports/{report['id']}", json={"findings": "Lost?"}), 428)
        assert detail(admin, report)["findings"] == report["findings"]

    def test_stale(self, admin: httpx.Client) -> None:
        """A writer who read an older version gets 409 naming the current version (body and ETag)."""
        report = new_report(admin, new_study(admin))
        assert edit(admin, report, findings="First.").status_code == 200
        response = edit(admin, report, findings="Second.")
        error = assert_error(response, 409)
        assert error["currentVersion"] == 2 and response.headers["etag"] == '"2"'
        assert detail(admin, report)["findings"] == "First."
        response = admin.put(f"/reports/{report['id']}", json={"findings": "Second.", "version": 1})
        assert assert_error(response, 409)["currentVersion"] == 2
        assert edit(admin, report, version=2, findings="Second.").status_code == 200

    def test_bad_preconditions(self, admin: httpx.Client) -> None:
        """A malformed or weak If-Match, or one that disagrees with the body's version, is 400."""
        report = new_report(admin, new_study(admin))
        url = f"/reports/{report['id']}"
        for header in ("1", 'W/"1"', "*", '"1", "2"', '"abc"'):
            assert_error(admin.put(url, json={"findings": "x"}, headers={"if-match": header}), 400)
        assert_error(admin.put(url, json={"findings": "x", "version": 2}, headers={"if-match": '"1"'}), 400)
        error = assert_error(admin.put(url, json={"version": 0}), 400)
        assert [e["field"] for e in error["errors"]] == ["version"]
        assert detail(admin, report)["version"] == 1

    def test_transitions(self, admin: httpx.Client) -> None:
        """Draft → draft and draft → preliminary are allowed; preliminary → draft is 409 listing what is."""
        report = new_report(admin, new_study(admin))
        assert edit(admin, report, status="draft").json()["status"] == "draft"
        report = edit(admin, detail(admin, report), status="preliminary").json()
        assert report["status"] == "preliminary"
        report = edit(admin, report, findings="Still preliminary.").json()
        assert report["status"] == "preliminary"
        error = assert_error(edit(admin, report, status="draft"), 409)
        assert (error["currentStatus"], error["allowedTransitions"]) == ("preliminary", ["preliminary"])

    def test_final_only_by_verification(self, admin: httpx.Client) -> None:
        """status final through PUT is 409 pointing at verify."""
        report = new_report(admin, new_study(admin))
        error = assert_error(edit(admin, report, status="final"), 409)
        assert "verif" in error["detail"] and error["allowedTransitions"] == ["draft", "preliminary"]
        assert detail(admin, report)["status"] == "draft"

    def test_final_is_immutable(self, admin: httpx.Client) -> None:
        """Any change to a final report is 409 (with the right version too), pointing at addenda."""
        final = signed(admin, completed_study(admin))
        for fields in ({"findings": "Changed."}, {"status": "preliminary"}, {}):
            error = assert_error(
                admin.put(f"/reports/{final['id']}", json={**fields, "version": final["version"]}), 409
            )
            assert (error["currentStatus"], error["allowedTransitions"]) == ("final", [])
            assert "addendum" in error["detail"]
        assert detail(admin, final)["findings"] == final["findings"]

    def test_versions_keep_everything(self, api: Api, admin: httpx.Client) -> None:
        """Each edit is a version: who, when, what action, the full content; GET lists them oldest first."""
        study = completed_study(admin)
        with api.client(Role.RADIOLOGIST, "dr-b") as other:
            report = new_report(other, study, findings="One.", impression="I1")
            report = edit(admin, report, findings="Two.").json()
            report = edit(other, report, impression="I2", status="preliminary").json()
            other.post(f"/reports/{report['id']}/verify")
        got = detail(admin, report)
        rows = [
            (v["version"], v["action"], v["changedBy"], v["status"], v["findings"], v["impression"])
            for v in got["versions"]
        ]
        assert rows == [
            (1, "created", "dr-b", "draft", "One.", "I1"),
            (2, "updated", "admin", "draft", "Two.", "I1"),
            (3, "updated", "dr-b", "preliminary", "Two.", "I2"),
            (4, "verified", "dr-b", "final", "Two.", "I2"),
        ]
        times = [v["changedAt"] for v in got["versions"]]
        assert times == sorted(times) and times[-1] == got["verifiedAt"] == got["updatedAt"]
        assert got["version"] == 4 and got["author"] == "dr-b"

    def test_unknown(self, admin: httpx.Client) -> None:
        """An unknown or malformed report id is 404 for every report endpoint."""
        for url in (f"/reports/{uuid.uuid4()}", "/reports/123"):
            assert_error(admin.get(url), 404)
            assert_error(admin.put(url, json={"findings": "x", "version": 1}), 404)
            assert_error(admin.post(url + "/verify"), 404)
            assert_error(admin.post(url + "/addendum", json={}), 404)


class TestConcurrentEdits:
    """Two writers that read the same version: exactly one wins, the other gets 409, nothing is lost silently."""

    def test_sequential(self, api: Api, admin: httpx.Client) -> None:
        """The second of two writers of version 1 is refused; the first's words are stored."""
        report = new_report(admin, new_study(admin))
        with api.client(Role.RADIOLOGIST, "dr-a") as a, api.client(Role.RADIOLOGIST, "dr-b") as b:
            assert edit(a, report, findings="A's words.").status_code == 200
            assert assert_error(edit(b, report, findings="B's words."), 409)["currentVersion"] == 2
        assert detail(admin, report)["findings"] == "A's words."

    @pytest.mark.parametrize("via", ["if-match", "body"])
    def test_truly_concurrent(self, api: Api, admin: httpx.Client, via: str) -> None:
        """Writers in two threads, released together, CONCURRENT_ROUNDS times: one 200 and one 409 each round;
        the versions hold each winner's words, in order, and no loser's."""
        report = new_report(admin, new_study(admin))
        winners = []
        with api.client(Role.RADIOLOGIST, "writer-0") as w0, api.client(Role.RADIOLOGIST, "writer-1") as w1:
            for round_ in range(CONCURRENT_ROUNDS):
                version = round_ + 1
                words = [f"round {round_} by writer {n}" for n in range(2)]
                if via == "body":
                    url, bodies = f"/reports/{report['id']}", [{"findings": w, "version": version} for w in words]
                    results = race(partial(w0.put, url, json=bodies[0]), partial(w1.put, url, json=bodies[1]))
                else:
                    results = race(
                        partial(edit, w0, report, version, findings=words[0]),
                        partial(edit, w1, report, version, findings=words[1]),
                    )
                assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
                winner = next(n for n, r in enumerate(results) if r.status_code == 200)
                assert results[winner].json()["version"] == version + 1
                assert assert_error(results[1 - winner], 409)["currentVersion"] == version + 1
                winners.append((version + 1, f"writer-{winner}", words[winner]))
        got = detail(admin, report)
        assert got["version"] == CONCURRENT_ROUNDS + 1
        assert [(v["version"], v["changedBy"], v["findings"]) for v in got["versions"][1:]] == winners
        assert got["findings"] == winners[-1][2]


class TestVerify:
    """POST /api/radiology/reports/{id}/verify: signing a report as final."""

    def test_signs_and_reports_the_study(self, radiologist: httpx.Client, admin: httpx.Client) -> None:
        """Final, who signed and when, the next version; the completed study becomes reported."""
        study = completed_study(admin)
        report = new_report(admin, study, status="preliminary")
        response = radiologist.post(f"/reports/{report['id']}/verify")
        assert response.status_code == 200, response.text
        final = response.json()
        assert (final["status"], final["reportType"], final["verifiedBy"], final["version"]) == (
            "final",
            "final",
            "dr-a",
            2,
        )
        assert final["verifiedAt"] and final["author"] == "admin" and response.headers["etag"] == '"2"'
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "reported"
        assert detail(admin, final)["versions"][-1]["action"] == "verified"

    def test_needs_verify_permission(self, api: Api, admin: httpx.Client) -> None:
        """A technician (who may write reports) and a doctor cannot sign: 403; nothing changes."""
        study = completed_study(admin)
        report = new_report(admin, study)
        for role in (Role.RADIOLOGY_TECH, Role.DOCTOR):
            with api.client(role, "not-a-radiologist") as client:
                assert_error(client.post(f"/reports/{report['id']}/verify"), 403)
        assert detail(admin, report)["status"] == "draft"
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "completed"

    def test_study_must_be_completed(self, admin: httpx.Client) -> None:
        """While the study is scheduled or in progress, 409 naming its state; once completed, it can be signed."""
        study = new_study(admin)
        report = new_report(admin, study)
        assert assert_error(admin.post(f"/reports/{report['id']}/verify"), 409)["studyStatus"] == "scheduled"
        move(admin, study, "in_progress")
        assert assert_error(admin.post(f"/reports/{report['id']}/verify"), 409)["studyStatus"] == "in_progress"
        assert detail(admin, report)["status"] == "draft"
        move(admin, study, "completed")
        assert admin.post(f"/reports/{report['id']}/verify").json()["status"] == "final"

    def test_cancelled_study(self, admin: httpx.Client) -> None:
        """A report on a cancelled study is never signed."""
        study = new_study(admin)
        report = new_report(admin, study)
        move(admin, study, "cancelled")
        assert assert_error(admin.post(f"/reports/{report['id']}/verify"), 409)["studyStatus"] == "cancelled"

    def test_signed_once(self, admin: httpx.Client) -> None:
        """Signing a final report again is 409; the signature stays the first one."""
        final = signed(admin, completed_study(admin))
        assert assert_error(admin.post(f"/reports/{final['id']}/verify"), 409)["currentStatus"] == "final"
        assert detail(admin, final)["verifiedAt"] == final["verifiedAt"]

    def test_second_report_keeps_study_reported(self, admin: httpx.Client) -> None:
        """Another report on a reported study may be signed; the study stays reported."""
        study = completed_study(admin)
        first, second = new_report(admin, study), new_report(admin, study)
        assert admin.post(f"/reports/{first['id']}/verify").status_code == 200
        assert admin.post(f"/reports/{second['id']}/verify").json()["status"] == "final"
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "reported"

    def test_if_match(self, admin: httpx.Client) -> None:
        """An If-Match on verify must be the current version (409 otherwise): one signs what one read."""
        report = new_report(admin, completed_study(admin))
        edit(admin, report, findings="Changed after you read it.")
        response = admin.post(f"/reports/{report['id']}/verify", headers={"if-match": '"1"'})
        assert assert_error(response, 409)["currentVersion"] == 2
        assert admin.post(f"/reports/{report['id']}/verify", headers={"if-match": '"2"'}).status_code == 200

    def test_concurrent_edit_and_verify(self, api: Api, admin: httpx.Client) -> None:
        """An edit racing a signature either lands before it (and is signed) or is refused: never after it."""
        with api.client(Role.RADIOLOGIST, "editor") as editor, api.client(Role.RADIOLOGIST, "signer") as signer:
            for _ in range(5):
                report = new_report(admin, completed_study(admin))
                edited, verified = race(
                    partial(edit, editor, report, findings="Late edit."),
                    partial(signer.post, f"/reports/{report['id']}/verify"),
                )
                assert verified.status_code == 200, verified.text
                got = detail(admin, report)
                assert got["status"] == "final"
                if edited.status_code == 200:
                    assert (got["findings"], got["version"]) == ("Late edit.", 3)
                else:
                    assert assert_error(edited, 409)["currentStatus"] == "final"
                    assert (got["findings"], got["version"]) == (report["findings"], 2)


class TestAddendum:
    """POST /api/radiology/reports/{id}/addendum: corrections to a final report."""

    def test_only_for_final(self, admin: httpx.Client) -> None:
        """A draft or preliminary report gets no addendum (409 naming its state): it is edited instead."""
        report = new_report(admin, new_study(admin))
        assert assert_error(admin.post(f"/reports/{report['id']}/addendum", json={}), 409)["currentStatus"] == "draft"
        report = edit(admin, report, status="preliminary").json()
        error = assert_error(admin.post(f"/reports/{report['id']}/addendum", json={}), 409)
        assert error["currentStatus"] == "preliminary"

    def test_flow(self, api: Api, admin: httpx.Client, radiologist: httpx.Client) -> None:
        """A draft addendum linked to the final report, by the caller; edited, signed; the study stays reported;
        the report lists it; the final report itself is unchanged."""
        study = completed_study(admin)
        final = signed(admin, study)
        response = radiologist.post(f"/reports/{final['id']}/addendum", json={"findings": "Also: a small nodule."})
        assert response.status_code == 201, response.text
        addendum = response.json()
        assert (addendum["reportType"], addendum["status"], addendum["parentReportId"]) == (
            "addendum",
            "draft",
            final["id"],
        )
        assert (addendum["author"], addendum["version"], addendum["studyId"]) == ("dr-a", 1, study["id"])
        assert response.headers["location"] == f"/api/radiology/reports/{addendum['id']}"

        addendum = edit(radiologist, addendum, impression="Follow up in 6 months.").json()
        assert addendum["version"] == 2
        response = radiologist.post(f"/reports/{addendum['id']}/verify")
        assert response.status_code == 200, response.text
        addendum = response.json()
        assert (addendum["status"], addendum["reportType"], addendum["verifiedBy"]) == ("final", "addendum", "dr-a")
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "reported"

        got = detail(admin, final)
        assert got["addenda"] == [addendum]
        assert {k: v for k, v in got.items() if k not in ("versions", "addenda")} == final
        assert [r["id"] for r in admin.get(f"/studies/{study['id']}/reports").json()] == [final["id"], addendum["id"]]
        assert [v["action"] for v in detail(admin, addendum)["versions"]] == ["created", "updated", "verified"]
        assert_error(edit(admin, addendum, findings="x"), 409)

    def test_addendum_to_addendum(self, admin: httpx.Client) -> None:
        """An addendum to a signed addendum is linked to the report they both amend."""
        final = signed(admin, completed_study(admin))
        first = admin.post(f"/reports/{final['id']}/addendum", json={}).json()
        admin.post(f"/reports/{first['id']}/verify")
        second = admin.post(f"/reports/{first['id']}/addendum", json={"findings": "More."}).json()
        assert second["parentReportId"] == final["id"]
        assert [a["id"] for a in detail(admin, final)["addenda"]] == [first["id"], second["id"]]

    def test_invalid(self, admin: httpx.Client) -> None:
        """An addendum body has only text fields (400 naming others); the body must be JSON (415)."""
        final = signed(admin, completed_study(admin))
        error = assert_error(admin.post(f"/reports/{final['id']}/addendum", json={"status": "final"}), 400)
        assert [e["field"] for e in error["errors"]] == ["status"]
        assert_error(admin.post(f"/reports/{final['id']}/addendum"), 415)
