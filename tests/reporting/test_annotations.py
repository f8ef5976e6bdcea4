"""reporting/annotations.py: annotations on archived images, their shapes, their authors, their end with the image."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest

from dicomweb.permissions import Role

from ..data import ct_instance, multipart, stow_headers
from .conftest import Api

P = [{"x": 10, "y": 20}, {"x": 30.5, "y": 40}, {"x": 50, "y": 10}, {"x": 12, "y": 60}]

VALID: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "coordinates": {"points": P[:1]}, "label": "fracture?", "color": "#FF8800"},
    "arrow": {"type": "arrow", "coordinates": {"points": P[:2]}, "color": "#00ff00"},
    "circle": {"type": "circle", "coordinates": {"center": P[0], "radius": 12.5}, "frameNumber": 1},
    "measurement": {"type": "measurement", "coordinates": {"points": P[:3]}, "label": "42 mm"},
    "roi": {"type": "roi", "coordinates": {"points": P}},
}

# (body, the fields the 400 names)
INVALID: dict[str, tuple[dict[str, Any], set[str]]] = {
    "text-two-points": ({"type": "text", "coordinates": {"points": P[:2]}}, {"coordinates"}),
    "text-no-point": ({"type": "text", "coordinates": {"points": []}}, {"coordinates"}),
    "arrow-one-point": ({"type": "arrow", "coordinates": {"points": P[:1]}}, {"coordinates"}),
    "arrow-same-points": ({"type": "arrow", "coordinates": {"points": [P[0], P[0]]}}, {"coordinates"}),
    "circle-zero-radius": ({"type": "circle", "coordinates": {"center": P[0], "radius": 0}}, {"coordinates.radius"}),
    "circle-no-center": ({"type": "circle", "coordinates": {"radius": 3}}, {"coordinates.center"}),
    "circle-as-points": (
        {"type": "circle", "coordinates": {"points": P[:2]}},
        {"coordinates.center", "coordinates.radius", "coordinates.points"},
    ),
    "measurement-one-point": ({"type": "measurement", "coordinates": {"points": P[:1]}}, {"coordinates"}),
    "roi-two-points": ({"type": "roi", "coordinates": {"points": P[:2]}}, {"coordinates"}),
    "roi-collinear-repeats": (
        {"type": "roi", "coordinates": {"points": [P[0], P[1], P[0], P[1]]}},
        {"coordinates"},
    ),
    "negative-coordinate": (
        {"type": "text", "coordinates": {"points": [{"x": -1, "y": 2}]}},
        {"coordinates.points.0.x"},
    ),
    "not-a-number": ({"type": "text", "coordinates": {"points": [{"x": "a", "y": 2}]}}, {"coordinates.points.0.x"}),
    "colour-name": ({**VALID["text"], "color": "red"}, {"color"}),
    "colour-short": ({**VALID["text"], "color": "#FFF"}, {"color"}),
    "frame-zero": ({**VALID["text"], "frameNumber": 0}, {"frameNumber"}),
    "frame-beyond-image": ({**VALID["text"], "frameNumber": 2}, {"frameNumber"}),
    "unknown-field": ({**VALID["text"], "author": "me"}, {"author"}),
    "label-too-long": ({**VALID["text"], "label": "x" * 1001}, {"label"}),
    "no-coordinates": ({"type": "arrow"}, {"coordinates"}),
}


def stow(api: Api, data: bytes) -> None:
    with api.dicomweb() as client:
        response = client.post("/studies", content=multipart([data]), headers=stow_headers())
    assert response.status_code == 200, response.text


def stored_image(api: Api, **attributes: Any) -> str:
    """Store a CT instance through STOW-RS; its SOPInstanceUID."""
    data = ct_instance(**attributes)
    stow(api, data)
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def assert_error(response: httpx.Response, status: int, detail: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and detail in body["detail"], body
    return body


@pytest.fixture(scope="module")
def image(api: Api) -> str:
    return stored_image(api)


@pytest.fixture(scope="module")
def dr_a(api: Api) -> Iterator[httpx.Client]:
    with api.client(Role.RADIOLOGIST, "dr-a") as client:
        yield client


@pytest.fixture(scope="module")
def dr_b(api: Api) -> Iterator[httpx.Client]:
    with api.client(Role.RADIOLOGIST, "dr-b") as client:
        yield client


def annotate(client: httpx.Client, image: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/images/{image}/annotations", json=body)
    assert response.status_code == 201, response.text
    annotation: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/radiology/annotations/{annotation['id']}"
    return annotation


class TestShapes:
    """Each annotation type with its own coordinate shape."""

    @pytest.mark.parametrize("kind", VALID)
    def test_valid(self, dr_a: httpx.Client, image: str, kind: str) -> None:
        """Created as sent, by the caller, on the image; listed with the image's annotations."""
        body = VALID[kind]
        annotation = annotate(dr_a, image, body)
        assert annotation["imageId"] == image and annotation["type"] == kind
        assert annotation["createdBy"] == "dr-a" and annotation["createdAt"] == annotation["updatedAt"]
        assert annotation["coordinates"] == body["coordinates"]
        assert (annotation["label"], annotation["color"]) == (body.get("label"), body.get("color"))
        assert annotation["frameNumber"] == body.get("frameNumber")
        listed = dr_a.get(f"/images/{image}/annotations").json()
        assert annotation in listed

    def test_closed_roi_stored_once(self, dr_a: httpx.Client, image: str) -> None:
        """A polygon sent closed (last point = first) is stored without the repeated point."""
        closed = {"type": "roi", "coordinates": {"points": [*P[:3], P[0]]}}
        assert annotate(dr_a, image, closed)["coordinates"] == {"points": P[:3]}

    @pytest.mark.parametrize("kind", INVALID)
    def test_invalid(self, api: Api, dr_a: httpx.Client, image: str, kind: str) -> None:
        """400 listing each invalid field; nothing is stored."""
        body, fields = INVALID[kind]
        before = api.server.db.value("SELECT count(*) FROM radiology_annotation")
        error = assert_error(dr_a.post(f"/images/{image}/annotations", json=body), 400)
        assert {e["field"] for e in error["errors"]} == fields and all(e["message"] for e in error["errors"])
        assert api.server.db.value("SELECT count(*) FROM radiology_annotation") == before

    def test_unknown_type_and_bad_bodies(self, dr_a: httpx.Client, image: str) -> None:
        """An unknown type is 400 naming the allowed ones; not JSON is 400, another media type 415."""
        error = assert_error(dr_a.post(f"/images/{image}/annotations", json={"type": "polygon"}), 400)
        assert "'text', 'arrow', 'circle', 'measurement', 'roi'" in error["errors"][0]["message"]
        headers = {"content-type": "application/json"}
        assert_error(dr_a.post(f"/images/{image}/annotations", content=b"{", headers=headers), 400)
        assert_error(
            dr_a.post(f"/images/{image}/annotations", content=b"x", headers={"content-type": "text/plain"}), 415
        )

    def test_frames_of_a_multiframe_image(self, api: Api, dr_a: httpx.Client) -> None:
        """frameNumber may name any frame the image has, and no other."""
        image = stored_image(api, NumberOfFrames=4, Rows=8, Columns=8, PixelData=bytes(4 * 8 * 8 * 2))
        assert annotate(dr_a, image, {**VALID["text"], "frameNumber": 4})["frameNumber"] == 4
        error = assert_error(dr_a.post(f"/images/{image}/annotations", json={**VALID["text"], "frameNumber": 5}), 400)
        assert error["errors"] == [
            {"field": "frameNumber", "message": "the image has 4 frames; frameNumber 5 is beyond"}
        ]


class TestImages:
    """Which image an annotation is on."""

    def test_unknown_image(self, dr_a: httpx.Client) -> None:
        """An image the archive does not hold: 404 to annotate and to list."""
        assert_error(dr_a.post("/images/1.2.3.999/annotations", json=VALID["text"]), 404, "1.2.3.999")
        assert_error(dr_a.get("/images/1.2.3.999/annotations"), 404)

    def test_listed_per_image_oldest_first(self, api: Api, dr_a: httpx.Client) -> None:
        """Each image lists its own annotations, in the order they were made."""
        first, second = stored_image(api), stored_image(api)
        made = [annotate(dr_a, first, VALID[kind])["id"] for kind in ("roi", "text", "arrow")]
        annotate(dr_a, second, VALID["circle"])
        assert [a["id"] for a in dr_a.get(f"/images/{first}/annotations").json()] == made
        assert len(dr_a.get(f"/images/{second}/annotations").json()) == 1

    def test_gone_with_the_image(self, api: Api, dr_a: httpx.Client) -> None:
        """Deleting the instance through DICOMweb removes its annotations (and only its)."""
        uid = f"2.25.{uuid.uuid4().int}"
        doomed, kept = stored_image(api, study_instance_uid=uid), stored_image(api, study_instance_uid=uid)
        gone = annotate(dr_a, doomed, VALID["text"])
        stays = annotate(dr_a, kept, VALID["text"])
        series = api.server.db.value(
            "SELECT se.series_instance_uid FROM instance i JOIN series se ON se.pk = i.series_pk "
            "WHERE i.sop_instance_uid = $1",
            doomed,
        )
        with api.dicomweb() as client:
            deleted = client.delete(f"/studies/{uid}/series/{series}/instances/{doomed}")
        assert deleted.status_code in (200, 204), deleted.text
        assert_error(dr_a.get(f"/images/{doomed}/annotations"), 404)
        assert_error(dr_a.put(f"/annotations/{gone['id']}", json=VALID["arrow"]), 404)
        assert [a["id"] for a in dr_a.get(f"/images/{kept}/annotations").json()] == [stays["id"]]

    def test_kept_when_the_image_is_replaced(self, server_factory: Any) -> None:
        """Under DICOMWEB_DUPLICATES=overwrite, an instance stored again with other content keeps its annotations
        (the orphan check runs at commit, after the new row is in)."""
        server = server_factory(duplicates="overwrite")
        study, series, sop = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
        headers = stow_headers()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            first = ct_instance(study, series, sop_instance_uid=sop, PatientSex="F")
            assert client.post("/dicomweb/studies", content=multipart([first]), headers=headers).status_code == 200
            created = client.post(f"/api/radiology/images/{sop}/annotations", json=VALID["circle"])
            assert created.status_code == 201, created.text
            other = ct_instance(study, series, sop_instance_uid=sop, PatientSex="M")
            assert client.post("/dicomweb/studies", content=multipart([other]), headers=headers).status_code == 200
            assert server.db.value("SELECT patient_sex FROM patient") == "M"
            listed = client.get(f"/api/radiology/images/{sop}/annotations").json()
        assert [a["id"] for a in listed] == [created.json()["id"]]


class TestAuthors:
    """An annotation is changed or deleted by its author or an admin; annotating needs radiology:annotate."""

    def test_author_updates(self, dr_a: httpx.Client, image: str) -> None:
        """PUT replaces the shape, label and colour; author and creation time stay, updatedAt moves."""
        annotation = annotate(dr_a, image, VALID["text"])
        response = dr_a.put(f"/annotations/{annotation['id']}", json={**VALID["circle"], "label": "cyst"})
        assert response.status_code == 200, response.text
        updated = response.json()
        assert (updated["type"], updated["label"], updated["coordinates"]) == (
            "circle",
            "cyst",
            VALID["circle"]["coordinates"],
        )
        assert (updated["createdBy"], updated["createdAt"]) == ("dr-a", annotation["createdAt"])
        assert updated["updatedAt"] > annotation["updatedAt"] and updated["color"] is None
        assert updated in dr_a.get(f"/images/{image}/annotations").json()

    def test_other_radiologist_refused(self, dr_a: httpx.Client, dr_b: httpx.Client, image: str) -> None:
        """Another radiologist may read it but gets 403 naming the author on PUT and DELETE; nothing changes."""
        annotation = annotate(dr_a, image, VALID["arrow"])
        path = f"/annotations/{annotation['id']}"
        assert_error(dr_b.put(path, json=VALID["text"]), 403, "only the annotation's author (dr-a) or an admin")
        assert_error(dr_b.delete(path), 403, "dr-a")
        assert annotation in dr_b.get(f"/images/{image}/annotations").json()

    def test_invalid_update_refused(self, dr_a: httpx.Client, image: str) -> None:
        """An update is validated like a new annotation."""
        annotation = annotate(dr_a, image, VALID["text"])
        error = assert_error(
            dr_a.put(f"/annotations/{annotation['id']}", json={**VALID["text"], "frameNumber": 3}), 400
        )
        assert [e["field"] for e in error["errors"]] == ["frameNumber"]

    def test_admin_may(self, admin: httpx.Client, dr_a: httpx.Client, image: str) -> None:
        """An admin updates and deletes someone else's annotation; it is gone afterwards (404 on a second try)."""
        annotation = annotate(dr_a, image, VALID["measurement"])
        path = f"/annotations/{annotation['id']}"
        updated = admin.put(path, json={**VALID["measurement"], "label": "43 mm"})
        assert updated.status_code == 200 and updated.json()["createdBy"] == "dr-a"
        assert admin.delete(path).status_code == 204
        assert annotation["id"] not in {a["id"] for a in admin.get(f"/images/{image}/annotations").json()}
        assert_error(admin.delete(path), 404)

    def test_author_deletes(self, dr_a: httpx.Client, image: str) -> None:
        annotation = annotate(dr_a, image, VALID["roi"])
        assert dr_a.delete(f"/annotations/{annotation['id']}").status_code == 204
        assert_error(dr_a.delete(f"/annotations/{annotation['id']}"), 404)

    def test_technician_annotates(self, api: Api, image: str) -> None:
        """A radiology technician holds radiology:annotate too."""
        with api.client(Role.RADIOLOGY_TECH, "tech-1") as tech:
            assert annotate(tech, image, VALID["text"])["createdBy"] == "tech-1"

    def test_doctor_reads_only(self, api: Api, dr_a: httpx.Client, image: str) -> None:
        """A doctor lists annotations but cannot annotate, change or delete (403 for the permission)."""
        annotation = annotate(dr_a, image, VALID["text"])
        with api.client(Role.DOCTOR, "dr-house") as doctor:
            assert doctor.get(f"/images/{image}/annotations").status_code == 200
            assert_error(doctor.post(f"/images/{image}/annotations", json=VALID["text"]), 403, "radiology:annotate")
            assert_error(doctor.put(f"/annotations/{annotation['id']}", json=VALID["text"]), 403, "radiology:annotate")
            assert_error(doctor.delete(f"/annotations/{annotation['id']}"), 403, "radiology:annotate")

    def test_unknown_annotation(self, admin: httpx.Client) -> None:
        """An unknown or malformed annotation id is 404."""
        assert_error(admin.put(f"/annotations/{uuid.uuid4()}", json=VALID["text"]), 404)
        assert_error(admin.delete("/annotations/not-an-id"), 404)

    def test_audited_with_the_study(self, api: Api, dr_a: httpx.Client) -> None:
        """Annotating names the image's study and patient in the audit trail."""
        uid = f"2.25.{uuid.uuid4().int}"
        image = stored_image(api, study_instance_uid=uid, patient_id="PAT-AUDIT")
        annotate(dr_a, image, VALID["text"])
        rows = api.server.db.fetch(
            "SELECT subject, action, patient_id FROM audit_event WHERE study_instance_uid = $1 AND method = 'POST' "
            "AND route LIKE '%/annotations'",
            uid,
        )
        assert [tuple(row) for row in rows] == [("dr-a", "create", "PAT-AUDIT")]
