"""dicom_nodes.py: the DICOM nodes over HTTP on a live server with authentication on: registering, reading and
removing them (every invalid AE title, port and permission a 400), who may, what the audit trail records, and the
archive's own associations to real peers: C-ECHO to a pynetdicom AE, C-STORE to DCMTK's ``storescp``."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomweb.permissions import Role
from dicomweb.tokens import create_token, load_or_create_secret

from .conftest import LiveServer, free_port, shared_server
from .data import CT, JPEG2000, MR_BIG_ENDIAN, ct_instance, multipart, stow_headers

ROOT = "/api/dicom-nodes"
STORESCP = Path("/usr/bin/storescp")  # Debian's dcmtk (.ci/run installs it); the venv's pynetdicom apps shadow it
CT_2 = {
    "host": "10.0.0.5",
    "port": 104,
    "permissions": ["store", "find", "get", "move", "worklist"],
    "description": "CT 2",
    "worklistOwnStation": True,
}


@dataclass
class Api:
    """The DICOM nodes API of a live server with authentication on."""

    server: LiveServer
    secret: str

    def client(self, role: Role | None = Role.ADMIN, subject: str = "admin") -> httpx.Client:
        """A client of the server with a token for ``subject`` holding ``role`` (None: no token)."""
        headers = {}
        if role is not None:
            token = create_token(self.secret, subject, [role], 3600, self.server.settings.jwt_issuer)
            headers["authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=120)

    def audit(self, **params: str) -> list[dict[str, Any]]:
        with self.client() as admin:
            response = admin.get("/api/audit", params=params)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()
        return events


@pytest.fixture(scope="module")
def api(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("nodes")
    with shared_server(postgres_url, data_dir, auth="enabled") as live:
        yield Api(live, load_or_create_secret(data_dir))


@pytest.fixture(scope="module")
def admin(api: Api) -> Iterator[httpx.Client]:
    with api.client(subject="alice") as client:
        yield client


def register(admin: httpx.Client, ae_title: str, port: int, host: str = "127.0.0.1") -> None:
    response = admin.put(f"{ROOT}/{ae_title}", json={"host": host, "port": port})
    assert response.status_code in (200, 201), response.text


def invalid_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == 400 and body["error"] == "Bad Request"
    return [error["field"] for error in body["errors"]]


class TestRegister:
    """PUT, GET, DELETE: the node as sent, in camelCase, with the statuses of each outcome."""

    def test_create_replace_read_delete(self, admin: httpx.Client) -> None:
        """201 with Location when created, 200 when replaced; 204 when deleted, then 404."""
        created = admin.put(f"{ROOT}/CT2", json=CT_2)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{ROOT}/CT2"
        assert created.json() == {"aeTitle": "CT2", **CT_2}
        assert admin.get(f"{ROOT}/CT2").json() == created.json()

        replaced = admin.put(f"{ROOT}/CT2", json={**CT_2, "port": 11112, "permissions": ["move", "store"]})
        assert replaced.status_code == 200 and "location" not in replaced.headers
        assert replaced.json() == {**created.json(), "port": 11112, "permissions": ["store", "move"]}
        assert admin.get(f"{ROOT}/CT2").json() == replaced.json()
        assert replaced.json() in admin.get(ROOT).json()

        assert admin.delete(f"{ROOT}/CT2").status_code == 204
        assert admin.get(f"{ROOT}/CT2").status_code == 404
        gone = admin.delete(f"{ROOT}/CT2")
        assert gone.status_code == 404 and gone.json()["detail"] == "no DICOM node 'CT2'"

    def test_defaults_and_list_order(self, admin: httpx.Client) -> None:
        """Only host and port: no permissions, no description; the list is by AE title."""
        for title in ("ZZ_LAST", "AA_FIRST"):
            assert admin.put(f"{ROOT}/{title}", json={"host": "ws.example.org", "port": 4242}).status_code == 201
        assert admin.get(f"{ROOT}/AA_FIRST").json() == {
            "aeTitle": "AA_FIRST",
            "host": "ws.example.org",
            "port": 4242,
            "permissions": [],
            "description": "",
            "worklistOwnStation": False,
        }
        titles = [node["aeTitle"] for node in admin.get(ROOT).json()]
        assert titles == sorted(titles) and {"AA_FIRST", "ZZ_LAST"} <= set(titles)

    def test_title_without_its_padding(self, admin: httpx.Client) -> None:
        """Leading and trailing spaces of an AE title are not significant (PS3.5 Table 6.2-1): one node."""
        assert admin.put(f"{ROOT}/%20WS%201%20", json={"host": "ws1", "port": 104}).status_code == 201
        assert admin.get(f"{ROOT}/WS%201").json()["aeTitle"] == "WS 1"
        assert admin.delete(f"{ROOT}/WS%201%20%20").status_code == 204

    @pytest.mark.parametrize(
        ("title", "message"),
        [
            ("A" * 17, "at most 16 characters"),
            ("CT%5C2", "backslash"),
            ("CT%012", "printable ASCII"),
            ("%20%20%20", "only spaces"),
            ("CT%C3%A9", "printable ASCII"),
        ],
        ids=["17-characters", "backslash", "control-character", "all-spaces", "non-ascii"],
    )
    def test_invalid_ae_title(self, admin: httpx.Client, title: str, message: str) -> None:
        """PS3.5's AE: at most 16 characters of the default repertoire, no backslash or control character, not
        all spaces; 400 on every route that names one, and nothing stored."""
        response = admin.put(f"{ROOT}/{title}", json={"host": "h", "port": 104})
        assert invalid_fields(response) == ["aet"] and message in response.json()["errors"][0]["message"]
        for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/echo"), ("POST", "/store")]:
            assert admin.request(method, f"{ROOT}/{title}{path}", json={}).status_code == 400, (method, path)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"host": "h", "port": 0}, "port"),
            ({"host": "h", "port": 65536}, "port"),
            ({"host": "h", "port": "104"}, "port"),
            ({"host": "h", "port": True}, "port"),
            ({"host": "h"}, "port"),
            ({"host": "h", "port": 104, "permissions": ["store", "print"]}, "permissions.1"),
            ({"host": "h", "port": 104, "permissions": "store"}, "permissions"),
            ({"port": 104}, "host"),
            ({"host": "", "port": 104}, "host"),
            ({"host": "two words", "port": 104}, "host"),
            ({"host": "h", "port": 104, "description": "x" * 1025}, "description"),
            ({"host": "h", "port": 104, "aeTitle": "OTHER"}, "aeTitle"),
        ],
        ids=[
            "port-0",
            "port-65536",
            "port-string",
            "port-bool",
            "port-missing",
            "unknown-permission",
            "permissions-not-a-list",
            "host-missing",
            "host-empty",
            "host-with-space",
            "description-too-long",
            "unknown-field",
        ],
    )
    def test_invalid_body(self, admin: httpx.Client, body: dict[str, Any], field: str) -> None:
        """400 naming the field to fix; nothing stored."""
        assert invalid_fields(admin.put(f"{ROOT}/BAD", json=body)) == [field]
        assert admin.get(f"{ROOT}/BAD").status_code == 404

    def test_not_json(self, admin: httpx.Client) -> None:
        assert admin.put(f"{ROOT}/BAD", content=b"host=h", headers={"content-type": "text/plain"}).status_code == 415
        broken = admin.put(f"{ROOT}/BAD", content=b"{", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["detail"]


class TestWhoMay:
    """radiology:manage only: 403 for the other roles, 401 without a token; every call audited."""

    ROUTES = [
        ("GET", ROOT),
        ("GET", ROOT + "/CT2"),
        ("PUT", ROOT + "/CT2"),
        ("DELETE", ROOT + "/CT2"),
        ("POST", ROOT + "/CT2/echo"),
        ("POST", ROOT + "/CT2/store"),
    ]

    @pytest.mark.parametrize("role", [Role.RADIOLOGIST, Role.RADIOLOGY_TECH, Role.DOCTOR])
    def test_other_roles(self, api: Api, role: Role) -> None:
        with api.client(role) as client:
            for method, path in self.ROUTES:
                response = client.request(method, path, json=CT_2)
                assert response.status_code == 403, (method, path)
                assert "radiology:manage" in response.json()["detail"]

    def test_no_token(self, api: Api) -> None:
        with api.client(None) as client:
            for method, path in self.ROUTES:
                response = client.request(method, path, json=CT_2)
                assert response.status_code == 401 and "bearer" in response.headers["www-authenticate"].lower()

    def test_audited(self, api: Api) -> None:
        """Each call leaves an event with its route's action: read, update, delete, echo, retrieve."""
        with api.client(subject="auditor") as client:
            assert client.put(f"{ROOT}/AUDITED", json={"host": "127.0.0.1", "port": free_port()}).status_code == 201
            assert client.get(f"{ROOT}/AUDITED").status_code == 200
            assert client.get(ROOT).status_code == 200
            assert client.post(f"{ROOT}/AUDITED/echo").status_code == 502
            study = generate_uid()
            assert client.post(f"{ROOT}/AUDITED/store", json={"studyInstanceUID": study}).status_code == 404
            assert client.delete(f"{ROOT}/AUDITED").status_code == 204
        events = {(e["method"], e["route"]): e for e in api.audit(user="auditor")}
        assert {key: (e["action"], e["status"]) for key, e in events.items()} == {
            ("PUT", ROOT + "/{aet}"): ("update", 201),
            ("GET", ROOT + "/{aet}"): ("read", 200),
            ("GET", ROOT): ("read", 200),
            ("POST", ROOT + "/{aet}/echo"): ("echo", 502),
            ("POST", ROOT + "/{aet}/store"): ("retrieve", 404),
            ("DELETE", ROOT + "/{aet}"): ("delete", 204),
        }
        assert events["POST", ROOT + "/{aet}/store"]["studyInstanceUID"] == study
        assert all(e["path"].startswith(ROOT) and e["roles"] == ["ADMIN"] for e in events.values())

    def test_openapi(self, api: Api) -> None:
        """The document lists every operation with its permission, its audit action and its statuses."""
        doc = httpx.get(api.server.url + "/api/openapi.json").json()
        operations = {
            (method.upper(), path): operation
            for path, by_method in doc["paths"].items()
            if path.startswith(ROOT)
            for method, operation in by_method.items()
        }
        assert {key: op["x-audit-action"] for key, op in operations.items()} == {
            ("GET", ROOT): "read",
            ("GET", ROOT + "/{aet}"): "read",
            ("PUT", ROOT + "/{aet}"): "update",
            ("DELETE", ROOT + "/{aet}"): "delete",
            ("POST", ROOT + "/{aet}/echo"): "echo",
            ("POST", ROOT + "/{aet}/store"): "retrieve",
        }
        assert {op["x-permission"] for op in operations.values()} == {"radiology:manage"}
        assert {"200", "201", "400"} <= set(operations["PUT", ROOT + "/{aet}"]["responses"])
        assert "502" in operations["POST", ROOT + "/{aet}/store"]["responses"]
        assert "502" not in operations["GET", ROOT]["responses"]
        assert {op["tags"][0] for op in operations.values()} == {"dicom-nodes"}
        schemas = doc["components"]["schemas"]
        assert set(schemas["StoreBody"]["properties"]) == {"studyInstanceUID", "seriesInstanceUID", "sopInstanceUIDs"}
        assert schemas["NodeBody"]["required"] == ["host", "port"]
        assert "/api/dicom-nodes" in doc["info"]["description"] and "/api/radiology" in doc["info"]["description"]


@contextmanager
def verification_scp(ae_title: str = "ECHOSCP", **options: Any) -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom AE answering C-ECHO on a free port: the port, and the calling AE titles it was echoed by."""
    callers: list[str] = []

    def on_echo(event: Any) -> int:
        callers.append(event.assoc.requestor.ae_title)
        return 0x0000

    ae = AE(ae_title=ae_title)
    for name, value in options.items():
        setattr(ae, name, value)
    ae.add_supported_context(Verification)
    port = free_port()
    scp = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_ECHO, on_echo)])
    assert scp is not None
    try:
        yield port, callers
    finally:
        scp.shutdown()


class TestEcho:
    """POST /{aet}/echo: a C-ECHO from the archive's AE title, over a real association."""

    def test_answered(self, admin: httpx.Client) -> None:
        """200 with the node's status (0: Success) and the round trip; the node saw the archive's AE title."""
        with verification_scp() as (port, callers):
            register(admin, "ECHOSCP", port)
            response = admin.post(f"{ROOT}/ECHOSCP/echo")
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["aeTitle"] == "ECHOSCP" and result["status"] == 0 and result["success"] is True
        assert 0 < result["roundTripMs"] < 30_000
        assert callers == ["DICOMWEB"]

    def test_nobody_listens(self, admin: httpx.Client) -> None:
        """A closed port: 502, in the one error shape, saying the node did not answer."""
        register(admin, "CLOSED", free_port())
        response = admin.post(f"{ROOT}/CLOSED/echo")
        assert response.status_code == 502, response.text
        assert response.json()["error"] == "Bad Gateway" and "did not answer" in response.json()["detail"]

    def test_unknown_host(self, admin: httpx.Client) -> None:
        register(admin, "NOWHERE", 104, host="no-such-host.invalid")
        assert admin.post(f"{ROOT}/NOWHERE/echo").status_code == 502

    def test_association_rejected(self, admin: httpx.Client) -> None:
        """A node registered under an AE title its AE does not answer to: rejected, 502 saying so."""
        with verification_scp("REALNAME", require_called_aet=True) as (port, callers):
            register(admin, "WRONGNAME", port)
            response = admin.post(f"{ROOT}/WRONGNAME/echo")
        assert response.status_code == 502 and "rejected" in response.json()["detail"]
        assert callers == []

    def test_unknown_node(self, admin: httpx.Client) -> None:
        response = admin.post(f"{ROOT}/NEVERSEEN/echo")
        assert response.status_code == 404 and "NEVERSEEN" in response.json()["detail"]


@dataclass
class Study:
    """A study stored in the archive: two series of two instances each, as sent (data sets by SOP Instance UID)."""

    study: str
    series: list[str]
    sent: dict[str, pydicom.Dataset]

    def of_series(self, series: str) -> set[str]:
        return {uid for uid, ds in self.sent.items() if ds.SeriesInstanceUID == series}


PATIENT = "PAT-NODES"


def moved_into(path: Path, study: str, series: str) -> bytes:
    """A real test file moved into a study of PATIENT: new study, series and instance UIDs, its encoding and pixel
    data unchanged."""
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName = PATIENT, "Doe^Jane"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def study(api: Api) -> Study:
    """CT (explicit VR little endian) and JPEG 2000 in one series, MR (explicit VR big endian) and a synthetic CT in
    the other."""
    uid, first, second = generate_uid(), generate_uid(), generate_uid()
    parts = [
        moved_into(CT, uid, first),
        moved_into(JPEG2000, uid, first),
        moved_into(MR_BIG_ENDIAN, uid, second),
        ct_instance(uid, second, patient_id=PATIENT, patient_name="Doe^Jane"),
    ]
    with api.client() as admin:
        headers = {**stow_headers(), "authorization": admin.headers["authorization"]}
        response = httpx.post(api.server.dicomweb + "/studies", content=multipart(parts), headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    sent: dict[str, pydicom.Dataset] = {}
    for part in parts:
        ds = pydicom.dcmread(io.BytesIO(part))
        sent[ds.SOPInstanceUID] = ds
    return Study(uid, [first, second], sent)


@dataclass
class StoreSCP:
    """DCMTK's storescp, accepting every storage SOP class in every transfer syntax it knows, writing each data set
    to ``folder`` exactly as received (``--bit-preserving``: no trailing padding dropped, no group length added)."""

    port: int
    folder: Path

    def received(self) -> dict[str, pydicom.Dataset]:
        """The data sets written so far, by SOP Instance UID."""
        datasets = (pydicom.dcmread(path) for path in sorted(self.folder.iterdir()))
        return {ds.SOPInstanceUID: ds for ds in datasets}


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    if not STORESCP.exists():
        pytest.skip("DCMTK is installed by .ci/run")
    port, folder = free_port(), tmp_path / "received"
    folder.mkdir()
    log = tmp_path / "storescp.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                str(STORESCP),
                "--aetitle",
                "STORESCP",
                "+xa",
                "--bit-preserving",
                "--output-directory",
                str(folder),
                str(port),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not start listening"
                time.sleep(0.05)
        yield StoreSCP(port, folder)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def counts(response: httpx.Response) -> tuple[int, int, int, list[str]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["aeTitle"] == "STORESCP"
    return body["completed"], body["failed"], body["warning"], body["failedSOPInstanceUIDs"]


class TestStore:
    """POST /{aet}/store: the archive sends stored instances to a real storage SCP (DCMTK's storescp)."""

    def test_study(self, admin: httpx.Client, study: Study, storescp: StoreSCP) -> None:
        """Every instance of the study, counted exactly; each data set arrives equal to the one stored, in the
        transfer syntax it was stored in."""
        register(admin, "STORESCP", storescp.port)
        response = admin.post(f"{ROOT}/STORESCP/store", json={"studyInstanceUID": study.study})
        assert counts(response) == (4, 0, 0, [])
        received = storescp.received()
        assert set(received) == set(study.sent)
        for uid, ds in received.items():
            assert ds.file_meta.TransferSyntaxUID == study.sent[uid].file_meta.TransferSyntaxUID
            assert ds == study.sent[uid], uid  # every element of the data set, pixel data included

    def test_series(self, admin: httpx.Client, study: Study, storescp: StoreSCP) -> None:
        register(admin, "STORESCP", storescp.port)
        body = {"studyInstanceUID": study.study, "seriesInstanceUID": study.series[1]}
        assert counts(admin.post(f"{ROOT}/STORESCP/store", json=body)) == (2, 0, 0, [])
        received = storescp.received()
        assert set(received) == study.of_series(study.series[1])
        assert all(ds == study.sent[uid] for uid, ds in received.items())

    def test_some_instances(self, admin: httpx.Client, study: Study, storescp: StoreSCP) -> None:
        """Instances named across both series; a name given twice is sent once."""
        register(admin, "STORESCP", storescp.port)
        wanted = sorted(study.of_series(study.series[0]))[:1] + sorted(study.of_series(study.series[1]))[:1]
        body = {"studyInstanceUID": study.study, "sopInstanceUIDs": [*wanted, wanted[0]]}
        assert counts(admin.post(f"{ROOT}/STORESCP/store", json=body)) == (2, 0, 0, [])
        assert set(storescp.received()) == set(wanted)

    def test_audit_names_study_and_series(self, api: Api, study: Study, storescp: StoreSCP) -> None:
        with api.client(subject="sender") as client:
            register(client, "STORESCP", storescp.port)
            body = {"studyInstanceUID": study.study, "seriesInstanceUID": study.series[0]}
            assert client.post(f"{ROOT}/STORESCP/store", json=body).status_code == 200
        [event] = api.audit(user="sender", action="retrieve")
        assert event["studyInstanceUID"] == study.study and event["seriesInstanceUID"] == study.series[0]
        assert event["patientId"] == PATIENT  # looked up from the study
        assert event in api.audit(study=study.study)

    def test_not_stored(self, admin: httpx.Client, study: Study, storescp: StoreSCP) -> None:
        """An unknown study, series or instance: 404 naming it, nothing sent."""
        register(admin, "STORESCP", storescp.port)
        unknown = generate_uid()
        for body in [
            {"studyInstanceUID": unknown},
            {"studyInstanceUID": study.study, "seriesInstanceUID": unknown},
            {"studyInstanceUID": study.study, "sopInstanceUIDs": [next(iter(study.sent)), unknown]},
            {"studyInstanceUID": study.study, "seriesInstanceUID": study.series[0],
             "sopInstanceUIDs": sorted(study.of_series(study.series[1]))},
        ]:  # fmt: skip
            response = admin.post(f"{ROOT}/STORESCP/store", json=body)
            assert response.status_code == 404, (body, response.text)
            assert "not stored" in response.json()["detail"]
        assert storescp.received() == {}

    def test_unknown_node(self, admin: httpx.Client, study: Study) -> None:
        response = admin.post(f"{ROOT}/NEVERSEEN/store", json={"studyInstanceUID": study.study})
        assert response.status_code == 404 and "NEVERSEEN" in response.json()["detail"]

    def test_nobody_listens(self, admin: httpx.Client, study: Study) -> None:
        register(admin, "GONE", free_port())
        response = admin.post(f"{ROOT}/GONE/store", json={"studyInstanceUID": study.study})
        assert response.status_code == 502 and "did not answer" in response.json()["detail"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "studyInstanceUID"),
            ({"studyInstanceUID": "1.2.abc"}, "studyInstanceUID"),
            ({"studyInstanceUID": "1.2.3", "seriesInstanceUID": "../x"}, "seriesInstanceUID"),
            ({"studyInstanceUID": "1.2.3", "sopInstanceUIDs": []}, "sopInstanceUIDs"),
            ({"studyInstanceUID": "1.2.3", "sopInstanceUIDs": ["1.2", "x"]}, "sopInstanceUIDs.1"),
            ({"studyInstanceUID": "1.2.3", "study": "1.2.3"}, "study"),
        ],
        ids=["no-study", "bad-study", "bad-series", "no-instances", "bad-instance", "unknown-field"],
    )
    def test_invalid_body(self, admin: httpx.Client, body: dict[str, Any], field: str) -> None:
        assert invalid_fields(admin.post(f"{ROOT}/ANY/store", json=body)) == [field]
