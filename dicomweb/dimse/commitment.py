"""Storage Commitment Push Model SCP (PS3.4 Annex J): a modality asks the archive to commit to instances it sent
(N-ACTION) before it deletes its own copies; the archive records the request and answers, then checks each instance
and reports (N-EVENT-REPORT) which it has committed to and which not. This module: what a request names, what the
archive can commit to, what the report says, and sending it; when it is sent, and by which process, is
``commitment_reports.py``'s.

An instance is committed to only when it is durably stored as it was sent: indexed, of the SOP class named, and its
file present with the content its SHA-256 (recorded at store time) says. The report goes on the requester's
association while it is open, else on a new association to the requester's registered node, the archive proposing
the SCP role (PS3.4 J.3.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role
from pynetdicom.association import Association
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from ..db.nodes import get_node
from . import outgoing

if TYPE_CHECKING:
    from .server import Bridge

# The Storage Commitment Push Model SOP Instance (PS3.4 J.3.5): the one instance every request and report names.
INSTANCE_UID = "1.2.840.10008.1.20.1.1"
COMMIT_REQUEST = 1  # Action Type ID of "Request Storage Commitment" (J.3.2.1)
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs of the report (J.3.3)
NO_SUCH_OBJECT_INSTANCE = 0x0112  # Failure Reasons (PS3.3 C.14.1.1)
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110  # also the N-ACTION's status when the request cannot be recorded
NO_SUCH_ACTION_TYPE, MISSING_ATTRIBUTE = 0x0123, 0x0120  # N-ACTION failures (PS3.7 C.4.3)
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


class NotSent(Exception):
    """The report did not reach the requester, or the requester did not answer it with success; the message says
    which (the attempt's ``last_error``)."""


def failures_of(bridge: Bridge, references: list[Reference]) -> dict[str, int]:
    """The Failure Reason of each instance the archive cannot commit to now, by SOP Instance UID (blocks: it reads
    the files)."""
    rows = bridge.run(_stored(bridge, [r.sop_instance_uid for r in references]))
    local_copy = bridge.archive.storage.local_copy
    failures: dict[str, int] = {}
    for reference in references:
        reason = failure_of(reference, rows.get(reference.sop_instance_uid), local_copy)
        if reason is not None:
            failures[reference.sop_instance_uid] = reason
    return failures


async def _stored(bridge: Bridge, uids: list[str]) -> dict[str, Stored]:
    rows = await bridge.archive.pool.fetch(
        "SELECT sop_instance_uid, sop_class_uid, file_path, file_sha256 FROM instance "
        "WHERE sop_instance_uid = ANY($1::text[])",
        uids,
    )
    return {r["sop_instance_uid"]: Stored(r["sop_class_uid"], r["file_path"], r["file_sha256"]) for r in rows}


def associate(bridge: Bridge, calling: str) -> Association:
    """A new association with the requester's registered node, the archive proposing the SCP role (J.3.3); NotSent
    when it is no node or cannot be associated with."""
    node = bridge.run(get_node(bridge.archive.pool, calling))
    if node is None:
        raise NotSent(f"{calling} has left and is not a registered node")
    ae = AE(ae_title=bridge.archive.settings.dimse_aet)
    ae.connection_timeout = outgoing.CONNECT_TIMEOUT
    ae.acse_timeout, ae.dimse_timeout = outgoing.ACSE_TIMEOUT, outgoing.DIMSE_TIMEOUT
    context = build_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    where = f"{node.ae_title} at {node.host}:{node.port}"
    try:
        assoc = ae.associate(node.host, node.port, contexts=[context], ae_title=node.ae_title, ext_neg=[role])
    except OSError as exc:  # the host name does not resolve
        raise NotSent(f"{where} cannot be reached: {exc}") from None
    if not assoc.is_established:
        raise NotSent(f"no association with {where}")
    return assoc


def send(assoc: Association, event_type: int, report: Dataset) -> None:
    """The N-EVENT-REPORT on ``assoc``; NotSent unless the requester answers it with success or a warning."""
    try:
        status, _ = assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel, INSTANCE_UID)
    except (RuntimeError, ValueError) as exc:  # the association ended meanwhile, or has no context for the report
        raise NotSent(f"the N-EVENT-REPORT could not be sent: {exc}") from None
    code = status.get("Status")
    if code is None:
        raise NotSent("the requester did not answer the N-EVENT-REPORT")
    if code_to_category(int(code)) not in (STATUS_SUCCESS, STATUS_WARNING):
        raise NotSent(f"the requester answered the N-EVENT-REPORT with 0x{int(code):04X}")
