"""The audit trail: who touched which patient's data, written before the answer, searchable by managers."""

from __future__ import annotations

from typing import Any

import httpx
from pydicom.uid import generate_uid

from dicomweb.permissions import Role
from dicomweb.tokens import create_token, load_or_create_secret

from .data import ct_instance, multipart, stow_headers


def bearer(server: Any, role: Role, subject: str) -> dict[str, str]:
    token = create_token(load_or_create_secret(server.data_dir), subject, [role], 600, "dicomweb")
    return {"Authorization": f"Bearer {token}"}


class TestAuditTrail:
    """Events for store, search, retrieve and delete; GET /api/audit."""

    def test_events_and_search(self, server_factory: Any) -> None:
        """Each access leaves an event naming user, roles, action, patient, study and outcome."""
        server = server_factory(auth="enabled")
        admin, doctor = bearer(server, Role.ADMIN, "alice"), bearer(server, Role.DOCTOR, "bob")
        study = str(generate_uid())
        body = multipart([ct_instance(study, patient_id="PAT-AUDIT")])
        stored = httpx.post(f"{server.dicomweb}/studies/{study}", content=body, headers={**stow_headers(), **admin})
        assert stored.status_code == 200
        searched = httpx.get(f"{server.dicomweb}/studies", params={"PatientID": "PAT-AUDIT"}, headers=doctor)
        assert searched.status_code == 200
        metadata = httpx.get(f"{server.dicomweb}/studies/{study}/metadata", headers=doctor)
        assert metadata.status_code == 200
        missing = httpx.get(f"{server.dicomweb}/studies/1.2.3/metadata", headers=doctor)
        assert missing.status_code == 404

        events = httpx.get(f"{server.url}/api/audit", headers=admin).json()
        by_action = {(e["action"], e["user"], e["status"]): e for e in events}
        store = by_action[("store", "alice", 200)]
        assert store["studyInstanceUID"] == study and store["roles"] == ["ADMIN"]
        search = by_action[("search", "bob", 200)]
        assert search["query"] == "PatientID=PAT-AUDIT"
        retrieve = by_action[("retrieve", "bob", 200)]
        assert retrieve["patientId"] == "PAT-AUDIT" and retrieve["requestId"] == metadata.headers["x-request-id"]
        assert ("retrieve", "bob", 404) in by_action

        only_bob = httpx.get(f"{server.url}/api/audit", params={"user": "bob", "action": "retrieve"}, headers=admin)
        assert {(e["user"], e["action"]) for e in only_bob.json()} == {("bob", "retrieve")}
        by_patient = httpx.get(f"{server.url}/api/audit", params={"patient": "PAT-AUDIT"}, headers=admin).json()
        assert {e["action"] for e in by_patient} == {"store", "retrieve"}  # the search named no study
        page = httpx.get(f"{server.url}/api/audit", params={"limit": 1, "offset": 1}, headers=admin).json()
        assert len(page) == 1

    def test_only_managers_read_the_trail(self, server_factory: Any) -> None:
        """A doctor may not read the audit trail: 403; bad filters: 400."""
        server = server_factory(auth="enabled")
        assert httpx.get(f"{server.url}/api/audit", headers=bearer(server, Role.DOCTOR, "bob")).status_code == 403
        admin = bearer(server, Role.ADMIN, "alice")
        bad = httpx.get(f"{server.url}/api/audit", params={"since": "yesterday"}, headers=admin)
        assert bad.status_code == 400 and "since" in bad.json()["detail"]

    def test_no_unaudited_access(self, server_factory: Any) -> None:
        """When the event cannot be written, the request fails (500) instead of serving the data."""
        server = server_factory()
        server.db.fetch("DROP TABLE audit_event")
        response = httpx.get(f"{server.dicomweb}/studies")
        assert response.status_code == 500
        assert "audited" in response.json()["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # probes touch no patient data
