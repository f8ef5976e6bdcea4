"""Storage Commitment Push Model SCP (PS3.4 Annex J): a modality asks the archive to commit to instances it sent
(N-ACTION) before it deletes its own copies; the archive answers at once, then checks each instance and reports
(N-EVENT-REPORT) which it has committed to and which not.

An instance is committed to only when it is durably stored as it was sent: indexed, of the SOP class named, and its
file present with the content its SHA-256 (recorded at store time) says. The report goes on the requester's
association while it is open, else on a new association to the requester's registered node, the archive proposing
the SCP role (PS3.4 J.3.3); a requester that is not a node and has gone gets none (logged).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role
from pynetdicom.association import Association
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from ..db.nodes import get_node
from . import outgoing

if TYPE_CHECKING:
    from .server import Bridge

log = logging.getLogger("dicomweb")

# The Storage Commitment Push Model SOP Instance (PS3.4 J.3.5): the one instance every request and report names.
INSTANCE_UID = "1.2.840.10008.1.20.1.1"
COMMIT_REQUEST = 1  # Action Type ID of "Request Storage Commitment" (J.3.2.1)
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs of the report (J.3.3)
NO_SUCH_OBJECT_INSTANCE = 0x0112  # Failure Reasons (PS3.3 C.14.1.1)
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION_TYPE, MISSING_ATTRIBUTE = 0x0123, 0x0120  # N-ACTION failures (PS3.7 C.4.3)
REPORT_DELAY = 0.05  # seconds: the N-ACTION response goes first (pynetdicom sends it when the handler returns)
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Reference:
    """One instance of the request (Referenced SOP Sequence item)."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Stored:
    """What the archive holds of an instance."""

    sop_class_uid: str
    file_path: str
    file_sha256: str


def references_of(action_information: Dataset) -> tuple[str, list[Reference]] | str:
    """The Transaction UID and the instances of a request, or what is missing from it."""
    transaction = str(action_information.get("TransactionUID", "") or "").strip()
    if not transaction:
        return "Transaction UID (0008,1195) is missing"
    if "ReferencedSOPSequence" not in action_information:
        return "Referenced SOP Sequence (0008,1199) is missing"
    references = [
        Reference(str(item.get("ReferencedSOPClassUID", "")), str(item.get("ReferencedSOPInstanceUID", "")))
        for item in action_information.ReferencedSOPSequence
    ]
    return transaction, references


def failure_of(
    reference: Reference, stored: Stored | None, local_copy: Callable[[str], AbstractContextManager[Path]]
) -> int | None:
    """None when the archive can commit to the instance, else the Failure Reason."""
    if stored is None:
        return NO_SUCH_OBJECT_INSTANCE
    if stored.sop_class_uid != reference.sop_class_uid:
        return CLASS_INSTANCE_CONFLICT
    digest = hashlib.sha256()
    try:
        with local_copy(stored.file_path) as path, open(path, "rb") as file:
            while chunk := file.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError:
        return PROCESSING_FAILURE
    return None if digest.hexdigest() == stored.file_sha256 else PROCESSING_FAILURE


def report_of(transaction: str, references: list[Reference], failures: dict[str, int]) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT: its Event Type ID and Event Information (PS3.4 Table J.3-2)."""
    report = Dataset()
    report.TransactionUID = transaction
    committed, failed = [], []
    for reference in references:
        item = Dataset()
        item.ReferencedSOPClassUID = reference.sop_class_uid
        item.ReferencedSOPInstanceUID = reference.sop_instance_uid
        reason = failures.get(reference.sop_instance_uid)
        if reason is None:
            committed.append(item)
        else:
            item.FailureReason = reason
            failed.append(item)
    if committed:
        report.ReferencedSOPSequence = committed
    if failed:
        report.FailedSOPSequence = failed
    return (SOME_FAILED if failed else ALL_COMMITTED), report


def commit(bridge: Bridge, assoc: Association, calling: str, transaction: str, references: list[Reference]) -> int:
    """Check the instances and send the report (in a thread of its own); the number that failed."""
    time.sleep(REPORT_DELAY)
    uids = [r.sop_instance_uid for r in references]
    rows = bridge.run(_stored(bridge, uids))
    local_copy = bridge.archive.storage.local_copy
    failures: dict[str, int] = {}
    for reference in references:
        reason = failure_of(reference, rows.get(reference.sop_instance_uid), local_copy)
        if reason is not None:
            failures[reference.sop_instance_uid] = reason
    event_type, report = report_of(transaction, references, failures)
    if assoc.is_established:
        assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel, INSTANCE_UID)
    else:
        _report_on_a_new_association(bridge, calling, event_type, report)
    return len(failures)


async def _stored(bridge: Bridge, uids: list[str]) -> dict[str, Stored]:
    rows = await bridge.archive.pool.fetch(
        "SELECT sop_instance_uid, sop_class_uid, file_path, file_sha256 FROM instance "
        "WHERE sop_instance_uid = ANY($1::text[])",
        uids,
    )
    return {r["sop_instance_uid"]: Stored(r["sop_class_uid"], r["file_path"], r["file_sha256"]) for r in rows}


def _report_on_a_new_association(bridge: Bridge, calling: str, event_type: int, report: Dataset) -> None:
    node = bridge.run(get_node(bridge.archive.pool, calling))
    if node is None:
        log.warning("storage commitment report for %s not sent: it left, and is not a registered node", calling)
        return
    ae = AE(ae_title=bridge.archive.settings.dimse_aet)
    ae.connection_timeout = outgoing.CONNECT_TIMEOUT
    ae.acse_timeout, ae.dimse_timeout = outgoing.ACSE_TIMEOUT, outgoing.DIMSE_TIMEOUT
    context = build_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True)  # the archive reports as the SCP (J.3.3)
    assoc = ae.associate(node.host, node.port, contexts=[context], ae_title=node.ae_title, ext_neg=[role])
    if not assoc.is_established:
        log.warning(
            "storage commitment report for %s not sent: no association with %s:%d", calling, node.host, node.port
        )
        return
    try:
        assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel, INSTANCE_UID)
    finally:
        assoc.release()
