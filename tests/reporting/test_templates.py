"""reporting/templates.py: report templates (create with placeholder check, search, update, soft delete and
restore)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import httpx

from dicomweb.permissions import Role
from reporting.workflow import PLACEHOLDERS

from .conftest import Api, new_study
from .test_reports import assert_error


def new_template(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    """Create a template (a CT chest one under a fresh name unless fields say otherwise) and return it."""
    body = {"name": "T-" + uuid.uuid4().hex[:8], "modality": "CT", "bodyPart": "CHEST", "content": "Findings: "}
    response = client.post("/report-templates", json={**body, **fields})
    assert response.status_code == 201, response.text
    template: dict[str, Any] = response.json()
    return template


def ids(client: httpx.Client, **params: str) -> list[str]:
    """The ids GET /report-templates lists with these parameters."""
    response = client.get("/report-templates", params=params)
    assert response.status_code == 200, response.text
    return [t["id"] for t in response.json()]


def deleted_at(api: Api, template: dict[str, Any]) -> datetime.datetime | None:
    """When the template's row says it was deleted (the API does not show it)."""
    rows = api.server.db.fetch(
        "SELECT deleted_at FROM radiology_report_template WHERE id = $1", uuid.UUID(template["id"])
    )
    when: datetime.datetime | None = rows[0]["deleted_at"]
    return when


class TestCreate:
    """POST /api/radiology/report-templates."""

    def test_created(self, admin: httpx.Client) -> None:
        """201 with the template as stored, active by default, the author, a Location to read it."""
        content = "{{patientName}} ({{patientSex}}), {{modality}} of {{ bodyPart }} on {{studyDate}}."
        response = admin.post(
            "/report-templates", json={"name": "CT chest", "modality": "CT", "bodyPart": "CHEST", "content": content}
        )
        assert response.status_code == 201, response.text
        template = response.json()
        assert template["content"] == content and template["isActive"] is True and template["createdBy"] == "admin"
        assert (template["name"], template["modality"], template["bodyPart"]) == ("CT chest", "CT", "CHEST")
        assert set(template) == {
            "id",
            "name",
            "modality",
            "bodyPart",
            "content",
            "isActive",
            "createdBy",
            "createdAt",
            "updatedAt",
        }
        assert admin.get(response.headers["location"].removeprefix("/api/radiology")).json() == template

    def test_every_known_placeholder(self, admin: httpx.Client) -> None:
        """A template may use each known placeholder."""
        content = "\n".join(f"{name}: {{{{{name}}}}}" for name in sorted(PLACEHOLDERS))
        assert new_template(admin, content=content)["content"] == content

    def test_unknown_placeholder(self, admin: httpx.Client) -> None:
        """An unknown placeholder is 400 at creation: errors names content, the unknown ones and the known ones."""
        body = {"name": "bad", "content": "{{patientName}} {{patientWeight}} {{ foo }}"}
        error = assert_error(admin.post("/report-templates", json=body), 400)
        assert [e["field"] for e in error["errors"]] == ["content"]
        message = error["errors"][0]["message"]
        assert "{{patientWeight}}" in message and "{{foo}}" in message
        assert all("{{" + name + "}}" in message for name in PLACEHOLDERS)
        assert not [t for t in admin.get("/report-templates").json() if t["name"] == "bad"]

    def test_invalid_fields(self, admin: httpx.Client) -> None:
        """Missing name and content, an unknown modality and an unknown field are each named."""
        error = assert_error(admin.post("/report-templates", json={"modality": "XX", "colour": "red"}), 400)
        assert {e["field"] for e in error["errors"]} == {"name", "content", "modality", "colour"}
        error = assert_error(admin.post("/report-templates", json={"name": "", "content": ""}), 400)
        assert {e["field"] for e in error["errors"]} == {"name", "content"}

    def test_needs_manage(self, api: Api, admin: httpx.Client) -> None:
        """Radiologists and technicians read templates but only managers write them (403)."""
        template = new_template(admin)
        for role in (Role.RADIOLOGIST, Role.RADIOLOGY_TECH, Role.DOCTOR):
            with api.client(role, "someone") as client:
                assert_error(client.post("/report-templates", json={"name": "x", "content": "y"}), 403)
                assert_error(client.put(f"/report-templates/{template['id']}", json={"name": "x"}), 403)
                assert_error(client.delete(f"/report-templates/{template['id']}"), 403)
                assert client.get(f"/report-templates/{template['id']}").status_code == 200
                assert client.get("/report-templates").status_code == 200


class TestSearch:
    """GET /api/radiology/report-templates."""

    def test_filters(self, admin: httpx.Client) -> None:
        """modality, bodyPart and isActive narrow the list, which holds the active templates unless isActive=false;
        the list is by name."""
        part = "P" + uuid.uuid4().hex[:8].upper()
        b = new_template(admin, name="b " + part, modality="MR", bodyPart=part)
        a = new_template(admin, name="a " + part, modality="MR", bodyPart=part, isActive=False)
        c = new_template(admin, name="c " + part, modality="CT", bodyPart=part)

        def names(**params: str) -> list[str]:
            response = admin.get("/report-templates", params={"bodyPart": part, **params})
            assert response.status_code == 200, response.text
            return [t["name"] for t in response.json()]

        assert names() == names(isActive="true") == [b["name"], c["name"]]
        assert names(modality="MR") == [b["name"]]
        assert names(modality="MR", isActive="false") == [a["name"]]
        assert names(isActive="false") == [a["name"]]
        assert c["name"] in [t["name"] for t in admin.get("/report-templates").json()]

    def test_invalid_filters(self, admin: httpx.Client) -> None:
        """An unknown modality, a non-boolean isActive and an unknown parameter are 400, each named."""
        error = assert_error(admin.get("/report-templates", params={"modality": "XX", "isActive": "maybe"}), 400)
        assert {e["field"] for e in error["errors"]} == {"modality", "isActive"}
        error = assert_error(admin.get("/report-templates", params={"name": "x"}), 400)
        assert [e["field"] for e in error["errors"]] == ["name"]

    def test_unknown_id(self, admin: httpx.Client) -> None:
        """An unknown or malformed id is 404."""
        assert_error(admin.get(f"/report-templates/{uuid.uuid4()}"), 404)
        assert_error(admin.get("/report-templates/not-a-uuid"), 404)


class TestUpdate:
    """PUT /api/radiology/report-templates/{id}."""

    def test_partial(self, admin: httpx.Client) -> None:
        """Only the fields given change; null clears modality and bodyPart; updatedAt moves."""
        template = new_template(admin, content="{{modality}}")
        response = admin.put(f"/report-templates/{template['id']}", json={"name": "renamed", "bodyPart": None})
        assert response.status_code == 200, response.text
        updated = response.json()
        assert (updated["name"], updated["bodyPart"], updated["modality"]) == ("renamed", None, "CT")
        assert updated["content"] == "{{modality}}" and updated["updatedAt"] > template["updatedAt"]
        assert admin.get(f"/report-templates/{template['id']}").json() == updated

    def test_deactivate(self, admin: httpx.Client) -> None:
        """isActive false keeps the template listed under isActive=false, not by default nor under isActive=true."""
        template = new_template(admin)
        assert admin.put(f"/report-templates/{template['id']}", json={"isActive": False}).json()["isActive"] is False
        assert template["id"] not in ids(admin) and template["id"] not in ids(admin, isActive="true")
        assert template["id"] in ids(admin, isActive="false")

    def test_empty_body(self, admin: httpx.Client) -> None:
        """An empty change set answers the template unchanged."""
        template = new_template(admin)
        assert admin.put(f"/report-templates/{template['id']}", json={}).json() == template

    def test_unknown_placeholder(self, admin: httpx.Client) -> None:
        """New content is checked as at creation; the template keeps its content."""
        template = new_template(admin, content="{{modality}}")
        error = assert_error(admin.put(f"/report-templates/{template['id']}", json={"content": "{{nope}}"}), 400)
        assert [e["field"] for e in error["errors"]] == ["content"]
        assert admin.get(f"/report-templates/{template['id']}").json()["content"] == "{{modality}}"

    def test_null_for_required_field(self, admin: httpx.Client) -> None:
        """name, content and isActive cannot be cleared (400 naming each)."""
        template = new_template(admin)
        body = {"name": None, "content": None, "isActive": None}
        error = assert_error(admin.put(f"/report-templates/{template['id']}", json=body), 400)
        assert {e["field"] for e in error["errors"]} == {"name", "content", "isActive"}

    def test_unknown(self, admin: httpx.Client) -> None:
        """Updating an unknown template is 404."""
        assert_error(admin.put(f"/report-templates/{uuid.uuid4()}", json={"name": "x"}), 404)


class TestDelete:
    """DELETE /api/radiology/report-templates/{id}: a soft delete, undone by a PUT of isActive true."""

    def test_soft_delete(self, api: Api, admin: httpx.Client) -> None:
        """204; then inactive: not listed by default, listed under isActive=false, read by id, refused for new
        reports (400), while a report made from it keeps its templateId; the row records deletedAt."""
        template = new_template(admin, content="{{modality}} study")
        study = new_study(admin)
        report = admin.post(f"/studies/{study['id']}/report", json={"templateId": template["id"]}).json()
        assert report["templateId"] == template["id"]

        assert admin.delete(f"/report-templates/{template['id']}").status_code == 204

        assert template["id"] not in ids(admin)
        assert template["id"] not in ids(admin, isActive="true")
        [listed] = [
            t for t in admin.get("/report-templates", params={"isActive": "false"}).json() if t["id"] == template["id"]
        ]
        assert listed["isActive"] is False and listed["updatedAt"] > template["updatedAt"]
        assert admin.get(f"/report-templates/{template['id']}").json() == listed
        error = assert_error(admin.post(f"/studies/{study['id']}/report", json={"templateId": template["id"]}), 400)
        assert [e["field"] for e in error["errors"]] == ["templateId"]
        assert admin.get(f"/reports/{report['id']}").json()["templateId"] == template["id"]
        assert deleted_at(api, template) is not None

    def test_delete_twice(self, api: Api, admin: httpx.Client) -> None:
        """Deleting a deleted template is 204 and changes nothing."""
        template = new_template(admin)
        assert admin.delete(f"/report-templates/{template['id']}").status_code == 204
        deleted, when = admin.get(f"/report-templates/{template['id']}").json(), deleted_at(api, template)
        assert admin.delete(f"/report-templates/{template['id']}").status_code == 204
        assert admin.get(f"/report-templates/{template['id']}").json() == deleted and deleted_at(api, template) == when

    def test_restore(self, api: Api, admin: httpx.Client) -> None:
        """A PUT of isActive true brings a deleted template back: listed by default and usable again."""
        template = new_template(admin)
        assert admin.delete(f"/report-templates/{template['id']}").status_code == 204
        response = admin.put(f"/report-templates/{template['id']}", json={"isActive": True})
        assert response.status_code == 200, response.text
        assert response.json()["isActive"] is True
        assert template["id"] in ids(admin) and template["id"] not in ids(admin, isActive="false")
        assert deleted_at(api, template) is None
        response = admin.post(f"/studies/{new_study(admin)['id']}/report", json={"templateId": template["id"]})
        assert response.status_code == 201, response.text

    def test_update_deleted(self, api: Api, admin: httpx.Client) -> None:
        """A PUT without isActive changes a deleted template as any other; it stays deleted."""
        template = new_template(admin)
        assert admin.delete(f"/report-templates/{template['id']}").status_code == 204
        updated = admin.put(f"/report-templates/{template['id']}", json={"name": "renamed"}).json()
        assert (updated["name"], updated["isActive"]) == ("renamed", False)
        assert template["id"] not in ids(admin) and deleted_at(api, template) is not None

    def test_unknown(self, admin: httpx.Client) -> None:
        """Deleting an unknown template is 404."""
        assert_error(admin.delete(f"/report-templates/{uuid.uuid4()}"), 404)
