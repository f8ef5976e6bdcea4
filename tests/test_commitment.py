"""Storage Commitment Push Model (dicomweb/dimse/commitment.py): a real N-ACTION from a pynetdicom SCU is answered
success once the request is recorded (a failure while the database is gone), and the N-EVENT-REPORT says which
instances the archive commits to: stored, missing and corrupted ones, on the same association and, once the requester
has gone, on a new one to its registered node. What happens when the report cannot be sent at once is
tests/test_commitment_reports.py's."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dicomweb.config import Settings
from dicomweb.db.embedded import EmbeddedPostgres

from .conftest import Database, LiveServer, free_port, serve_in_thread, wait_until
from .data import ct_instance
from .test_dimse import register, stow
from .test_metrics import samples

CT = "1.2.840.10008.5.1.4.1.1.2"
INSTANCE = "1.2.840.10008.1.20.1.1"


@pytest.fixture
def server(server_factory: Any) -> LiveServer:
    live: LiveServer = server_factory(dimse_port=free_port())
    register(live, "VIEWER", "127.0.0.1", 104, ["find"])
    return live


def stored_instances(server: LiveServer, count: int) -> list[str]:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    parts = [ct_instance(study, series, InstanceNumber=n) for n in range(count)]
    stow(server, parts)
    return [str(pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID) for part in parts]


def request(transaction: str, uids: list[str], sop_class: str = CT) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


class Reports:
    """The N-EVENT-REPORTs a modality receives, on its own association or as a listening node."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handler(self, event: Any) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None

    def one(self) -> tuple[int, Dataset]:
        assert self.arrived.wait(30), "no N-EVENT-REPORT"
        [report] = self.received
        return report


def ask(server: LiveServer, calling: str, action: Dataset, reports: Reports, stay: bool = True) -> int:
    """N-ACTION on a new association; with ``stay``, wait on it for the report, else release at once."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", server.settings.dimse_port, ae_title="DICOMWEB",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])  # fmt: skip
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(action, 1, StorageCommitmentPushModel, INSTANCE)
        if stay:
            reports.arrived.wait(30)
    finally:
        assoc.release()
    return int(status.Status)


def failures(report: Dataset) -> dict[str, int]:
    return {str(item.ReferencedSOPInstanceUID): int(item.FailureReason) for item in report.get("FailedSOPSequence", [])}


def committed(report: Dataset) -> list[str]:
    return [str(item.ReferencedSOPInstanceUID) for item in report.get("ReferencedSOPSequence", [])]


class TestCommitment:
    def test_all_stored_on_the_same_association(self, server: LiveServer) -> None:
        register(server, "MODALITY1", "127.0.0.1", 104, ["store", "commit"])
        uids = stored_instances(server, 3)
        reports = Reports()
        assert ask(server, "MODALITY1", request("2.25.1", uids), reports) == 0x0000
        event_type, report = reports.one()
        assert event_type == 1 and report.TransactionUID == "2.25.1"
        assert committed(report) == uids and "FailedSOPSequence" not in report

    def test_missing_corrupted_and_wrong_class_fail(self, server: LiveServer) -> None:
        """Not stored: 0x0112; another SOP class than stored: 0x0119; a file changed on disk since it was stored
        (its SHA-256 no longer the recorded one): 0x0110. The others are committed."""
        register(server, "MODALITY1", "127.0.0.1", 104, ["store", "commit"])
        good, corrupted, other_class = stored_instances(server, 3)
        [path] = [p for p in Path(server.data_dir, "files").rglob(f"{corrupted}.*.dcm")]
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        missing = str(pydicom.uid.generate_uid())
        action = request("2.25.2", [good, corrupted, missing])
        action.ReferencedSOPSequence.append(
            request("", [other_class], "1.2.840.10008.5.1.4.1.1.4").ReferencedSOPSequence[0]
        )
        reports = Reports()
        assert ask(server, "MODALITY1", action, reports) == 0x0000
        event_type, report = reports.one()
        assert event_type == 2 and committed(report) == [good]
        assert failures(report) == {corrupted: 0x0110, missing: 0x0112, other_class: 0x0119}

    def test_report_on_a_new_association_to_the_node(self, server: LiveServer) -> None:
        """The requester released its association at once: the report comes on a new association to its host and
        port, the archive proposing the SCP role."""
        port = free_port()
        reports = Reports()
        listener = AE(ae_title="MODALITY2")
        listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        node = listener.start_server(("127.0.0.1", port), block=False,
                                     evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])  # fmt: skip
        assert node is not None
        try:
            register(server, "MODALITY2", "127.0.0.1", port, ["store", "commit"])
            uids = stored_instances(server, 2)
            assert ask(server, "MODALITY2", request("2.25.3", uids), Reports(), stay=False) == 0x0000
            event_type, report = reports.one()
        finally:
            node.shutdown()
        assert event_type == 1 and committed(report) == uids

    def test_refused(self, server: LiveServer) -> None:
        reports = Reports()
        assert ask(server, "VIEWER", request("2.25.4", []), reports, stay=False) == 0x0124
        register(server, "MODALITY1", "127.0.0.1", 104, ["commit"])
        no_transaction = request("", [])
        del no_transaction.TransactionUID
        assert ask(server, "MODALITY1", no_transaction, reports, stay=False) == 0x0120
        assert reports.received == []

    def test_recorded_before_the_answer(self, server: LiveServer) -> None:
        """The request is a row of the database when the N-ACTION's success arrives (so that any server process can
        send its report); once reported, the row says so, /metrics counts it and managers list it."""
        register(server, "MODALITY1", "127.0.0.1", 104, ["store", "commit"])
        uids = stored_instances(server, 2)
        reports = Reports()
        assert ask(server, "MODALITY1", request("2.25.5", uids), reports, stay=False) == 0x0000
        [row] = server.db.fetch("SELECT * FROM storage_commitment")
        assert (row["transaction_uid"], row["calling_ae_title"], row["attempts"]) == ("2.25.5", "MODALITY1", 1)
        assert [item["ReferencedSOPInstanceUID"] for item in orjson.loads(row["referenced_sop_sequence"])] == uids
        # The node at port 104 does not answer: the report waits for its next attempt.
        wait_until(lambda: server.db.value("SELECT last_error FROM storage_commitment") is not None, "an attempt")
        assert server.db.value("SELECT state FROM storage_commitment") == "pending"
        assert samples(server)[("dicomweb_storage_commitments", (("state", "pending"),))] == 1
        assert ask(server, "MODALITY1", request("2.25.6", uids), reports) == 0x0000
        reports.one()
        wait_until(lambda: server.db.value("SELECT count(*) FROM storage_commitment WHERE state = 'reported'") == 1,
                   "the report recorded")  # fmt: skip
        with server.client() as client:
            listed = client.get("/api/radiology/storage-commitments").json()
            reported = client.get("/api/radiology/storage-commitments", params={"state": "reported"}).json()
        assert [item["transactionUID"] for item in listed["items"]] == ["2.25.6", "2.25.5"]  # newest first
        assert listed["total"] == 2 and listed["items"][1]["lastError"]
        [item] = reported["items"]
        assert (item["state"], item["eventTypeID"], item["instances"], item["failedInstances"]) == ("reported", 1, 2, 0)
        values = samples(server)
        assert values[("dicomweb_storage_commitments", (("state", "reported"),))] == 1
        assert values[("dicomweb_storage_commitments", (("state", "pending"),))] == 1


def test_database_unreachable_is_a_processing_failure(tmp_path: Path) -> None:
    """A request that cannot be recorded is not promised: the N-ACTION is answered 0x0110 (Processing failure)
    with a comment saying why, and the modality keeps its copies."""
    postgres = EmbeddedPostgres(tmp_path / "external")  # a PostgreSQL of this test's own, to stop
    try:
        db = Database(postgres.start())
        settings = Settings(data_dir=tmp_path / "archive", auth="disabled", dimse_port=free_port())
        with serve_in_thread(settings, db) as live:
            register(live, "MODALITY1", "127.0.0.1", 104, ["store", "commit"])
            ae = AE(ae_title="MODALITY1")
            ae.add_requested_context(StorageCommitmentPushModel)
            assoc = ae.associate("127.0.0.1", settings.dimse_port, ae_title="DICOMWEB")
            assert assoc.is_established
            try:
                postgres.stop()
                status, _ = assoc.send_n_action(request("2.25.7", ["2.25.8"]), 1, StorageCommitmentPushModel, INSTANCE)
            finally:
                assoc.release()
        assert status.Status == 0x0110 and "database is not reachable" in status.ErrorComment
    finally:
        postgres.stop()
