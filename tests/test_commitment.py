"""Storage Commitment Push Model (dicomweb/dimse/commitment.py): a real N-ACTION from a pynetdicom SCU is answered at
once, and the N-EVENT-REPORT says which instances the archive commits to: stored, missing and corrupted ones, on the
same association and, once the requester has gone, on a new one to its registered node."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from .conftest import LiveServer, free_port
from .data import ct_instance
from .test_dimse import register, stow

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
