"""The audit trail: who touched which patient's data, written before the answer, searchable by managers."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pydicom
import pytest
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
        reads = httpx.get(f"{server.url}/api/audit", params={"action": "audit"}, headers=admin).json()
        assert len(reads) >= 4 and {(e["user"], e["route"]) for e in reads} == {("alice", "/api/audit")}

    def test_store_event_commits_with_the_instances(self, server_factory: Any) -> None:
        """A STOW-RS request's event is written in the transaction that stores its instances (one commit for both),
        once, with the answer's status: 200, and 202 when one of its parts was refused."""
        server = server_factory(auth="enabled")
        admin = bearer(server, Role.ADMIN, "alice")
        study = str(generate_uid())
        for parts, status in (([ct_instance(study)], 200), ([ct_instance(study), b"not DICOM"], 202)):
            stored = httpx.post(
                f"{server.dicomweb}/studies", content=multipart(parts), headers={**stow_headers(), **admin}
            )
            assert stored.status_code == status, stored.text
            events = server.db.fetch(
                "SELECT status, study_instance_uid, xmin::text AS tx FROM audit_event WHERE request_id = $1",
                stored.headers["x-request-id"],
            )
            assert [(e["status"], e["study_instance_uid"]) for e in events] == [(status, study)]
            sop = pydicom.dcmread(io.BytesIO(parts[0])).SOPInstanceUID
            assert events[0]["tx"] == server.db.value(
                "SELECT xmin::text FROM instance WHERE sop_instance_uid = $1", sop
            )

    def test_store_event_when_the_transaction_is_retried(
        self, server_factory: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The store's first transaction fails and its instances are stored by the retries: the event is written
        once all the same, after them, with the answer's status."""
        import asyncpg

        from dicomweb.db import index

        original = index.add_counts
        calls: list[int] = []

        async def failing_once(*args: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise asyncpg.exceptions.SerializationError("simulated failure of the first transaction")
            await original(*args)

        monkeypatch.setattr(index, "add_counts", failing_once)
        server = server_factory(auth="enabled")
        admin = bearer(server, Role.ADMIN, "alice")
        body = multipart([ct_instance(), ct_instance()])
        stored = httpx.post(f"{server.dicomweb}/studies", content=body, headers={**stow_headers(), **admin})
        assert stored.status_code == 200 and len(calls) == 3
        events = server.db.fetch("SELECT status FROM audit_event WHERE request_id = $1", stored.headers["x-request-id"])
        assert [e["status"] for e in events] == [200]

    def test_only_managers_read_the_trail(self, server_factory: Any) -> None:
        """A doctor may not read the audit trail: 403; bad filters (a time, an action not in the vocabulary): 400."""
        server = server_factory(auth="enabled")
        assert httpx.get(f"{server.url}/api/audit", headers=bearer(server, Role.DOCTOR, "bob")).status_code == 403
        admin = bearer(server, Role.ADMIN, "alice")
        bad = httpx.get(f"{server.url}/api/audit", params={"since": "yesterday"}, headers=admin)
        assert bad.status_code == 400 and "since" in bad.json()["detail"]
        # A misspelt action would find nothing, as if nobody had done it: the answer names the vocabulary.
        unknown = httpx.get(f"{server.url}/api/audit", params={"action": "Retrieve"}, headers=admin)
        assert unknown.status_code == 400 and "search, retrieve, store" in unknown.json()["detail"]

    def test_no_unaudited_access(self, server_factory: Any) -> None:
        """When the event cannot be written, the request fails (500) instead of serving the data."""
        server = server_factory()
        server.db.fetch("DROP TABLE audit_event")
        response = httpx.get(f"{server.dicomweb}/studies")
        assert response.status_code == 500
        assert "audited" in response.json()["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # probes touch no patient data


class TestAuditWriter:
    """Events of concurrent requests share a commit; a bad event fails only its own request."""

    @staticmethod
    def event(request_id: str) -> Any:
        from dicomweb.db.audit import Event

        return Event(request_id, "alice", ["DOCTOR"], "retrieve", "GET", "/r", "/p", None, None, "1.2.3", None,
                     None, 200, "127.0.0.1")  # fmt: skip

    def test_batches_and_isolates_failures(self, new_database: Any) -> None:
        import asyncio

        import asyncpg

        from dicomweb.db.audit import AuditWriter
        from dicomweb.db.pool import ensure_schema

        db = new_database()
        batches: list[int] = []

        class Counting(AuditWriter):
            async def _write(self, batch: list[Any]) -> None:
                batches.append(len(batch))
                await super()._write(batch)

        async def scenario() -> tuple[list[Any], list[Any], list[str]]:
            pool = await asyncpg.create_pool(db.url, min_size=1, max_size=2)
            assert pool is not None
            try:
                async with pool.acquire() as conn:
                    await ensure_schema(conn)
                writer = Counting(pool)
                good = await asyncio.gather(*(writer.write(self.event(f"a{n}")) for n in range(8)))
                # A NUL cannot be stored in text: that event fails, the others of its batch are written.
                ids = [f"b{n}" for n in range(4)] + ["bad\x00id"]
                mixed = await asyncio.gather(*(writer.write(self.event(i)) for i in ids), return_exceptions=True)
                async with pool.acquire() as conn:
                    stored = [row[0] for row in await conn.fetch("SELECT request_id FROM audit_event ORDER BY 1")]
                return good, mixed, stored
            finally:
                await pool.close()

        good, mixed, stored = asyncio.run(scenario())
        assert good == [None] * 8 and mixed[:4] == [None] * 4 and isinstance(mixed[4], Exception)
        assert batches == [8, 5, 1, 1, 1, 1, 1]  # eight at once; then five, retried one by one after the failure
        assert stored == [f"a{n}" for n in range(8)] + [f"b{n}" for n in range(4)]
