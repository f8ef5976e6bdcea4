"""What the archive does for each DIMSE request: thin handlers over the same store as STOW-RS, audited like HTTP.

Each handler runs in the association's thread (pynetdicom) and hands its work to the archive's event loop through
``server.Bridge``. Statuses are the ones PS3.4 and PS3.7 name (``status.py``).
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from weakref import WeakKeyDictionary

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE, N_CREATE, N_SET
from pynetdicom.dsutils import decode
from pynetdicom.events import Event as DimseEvent
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from ..actions import DIMSE_ACTIONS, DimseOperation
from ..db import commitment as commitment_db
from ..db.audit import Event
from ..db.nodes import get_node
from ..db.outage import unreachable
from ..db.retrieve import StoredFile
from ..services import store
from ..services.store import StoreResult
from ..status import DimseStatus, FailureReason
from . import access, commitment, commitment_reports, find, mpps, outgoing, retrieve, worklist
from .nodes import NodePermission

if TYPE_CHECKING:
    from .server import Bridge

log = logging.getLogger("dicomweb")

IMPLEMENTATION_VERSION_NAME = "DICOMWEB"  # (0002,0013) of the files the archive writes for C-STORE


def bound(bridge: Bridge) -> list[EventHandlerType]:
    """The event handlers of the listener, each with the bridge to the archive."""
    return [
        (evt.EVT_REQUESTED, lambda event: access.admit(bridge, event)),
        (evt.EVT_ACCEPTED, lambda event: bridge.count_association(event.assoc, "accepted")),
        (evt.EVT_REJECTED, lambda event: bridge.count_association(event.assoc, "rejected")),
        (evt.EVT_C_ECHO, lambda event: handle_echo(bridge, event)),
        (evt.EVT_C_STORE, lambda event: handle_store(bridge, event)),
        (evt.EVT_C_FIND, lambda event: handle_find(bridge, event)),
        (evt.EVT_C_GET, lambda event: handle_get(bridge, event)),
        (evt.EVT_C_MOVE, lambda event: handle_move(bridge, event)),
        (evt.EVT_N_CREATE, lambda event: handle_mpps(bridge, event, "MPPS N-CREATE")),
        (evt.EVT_N_SET, lambda event: handle_mpps(bridge, event, "MPPS N-SET")),
        (evt.EVT_N_ACTION, lambda event: handle_commit(bridge, event)),
        (evt.EVT_CONN_CLOSE, lambda event: handle_close(bridge, event)),
    ]


@dataclass
class Stores:
    """What the C-STOREs of one association did to one study: the audit trail has one event per study and
    association (a modality sends hundreds of instances on one), with these counts."""

    stored: int = 0
    failed: int = 0
    status: int = DimseStatus.SUCCESS  # the last failure's, if any
    series: set[str] = field(default_factory=set)


# The C-STOREs of each association being served, by StudyInstanceUID (None: not known, the data set was refused
# before); audited when its connection closes.
_stores: WeakKeyDictionary[Association, dict[str | None, Stores]] = WeakKeyDictionary()


def handle_close(bridge: Bridge, event: DimseEvent) -> None:
    """The connection of an association closed (released, aborted or cut). Audit its C-STOREs, one event per
    study. If it closed in the middle of a C-STORE data set, pynetdicom leaves the temp file it was receiving into
    open and on disk: close and remove it (the instance was never acknowledged)."""
    message = getattr(event.assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is not None:
        partial.close()
        Path(partial.name).unlink(missing_ok=True)
    for study, stores in _stores.pop(event.assoc, {}).items():
        series = next(iter(stores.series)) if len(stores.series) == 1 else None
        query = f"stored={stores.stored}&failed={stores.failed}&series={len(stores.series)}"
        bridge.run(
            audit(bridge, event.assoc, "C-STORE", stores.status, query=query, count=False,
                  study_instance_uid=study, series_instance_uid=series)
        )  # fmt: skip


def _tally(assoc: Association, status: int, study: str | None = None, series: str | None = None) -> None:
    stores = _stores.setdefault(assoc, {}).setdefault(study, Stores())
    if status == DimseStatus.SUCCESS:
        stores.stored += 1
    else:
        stores.failed += 1
        stores.status = status
    if series is not None:
        stores.series.add(series)


def handle_echo(bridge: Bridge, event: DimseEvent) -> int:
    """C-ECHO (PS3.7 §9.1.5): success, audited."""
    bridge.run(audit(bridge, event.assoc, "C-ECHO", DimseStatus.SUCCESS))
    return DimseStatus.SUCCESS


def handle_store(bridge: Bridge, event: DimseEvent) -> Dataset:
    """C-STORE (PS3.4 Annex B): the received data set as a PS3.10 file, stored by the same function as STOW-RS."""
    request = event.request
    assert isinstance(request, C_STORE)
    calling = access.calling_ae_title(event.assoc)
    if not access.may(bridge, event.assoc, NodePermission.STORE):
        bridge.count_operation("C-STORE", DimseStatus.NOT_AUTHORIZED)
        _tally(event.assoc, DimseStatus.NOT_AUTHORIZED)
        return _status(DimseStatus.NOT_AUTHORIZED, f"{calling} may not store here")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(request.AffectedSOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(str(request.AffectedSOPInstanceUID))
    meta.TransferSyntaxUID = UID(str(event.context.transfer_syntax))
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    meta.SourceApplicationEntityTitle = calling  # (0002,0016): who sent it (PS3.10 §7.1)
    try:
        # The data set as pynetdicom received it, after its own File Meta Information, behind ours.
        received = event.dataset_path
        spooled = bridge.archive.storage.spool_copy(received, _encoded_meta(meta), _data_set_start(received))
        try:
            # Parsed and put in place in this association's thread: off the event loop, with no hand-off.
            prepared = store.prepare_here(bridge.archive.storage, spooled, None, bridge.archive.on_store)
        except BaseException:
            spooled.path.unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.error("C-STORE from %s: the received data set could not be spooled: %s", calling, exc)
        bridge.count_operation("C-STORE", FailureReason.OUT_OF_RESOURCES)
        _tally(event.assoc, FailureReason.OUT_OF_RESOURCES)
        return _status(FailureReason.OUT_OF_RESOURCES, f"cannot write the data set: {exc.strerror}")
    result: StoreResult | None = None
    try:
        result = bridge.run(store.store_prepared(bridge.archive, spooled, prepared, stored_by=calling))
    except Exception as exc:
        spooled.path.unlink(missing_ok=True)
        if not unreachable(exc):
            raise
        status = _status(FailureReason.OUT_OF_RESOURCES, "the archive's database is not reachable; retry later")
    else:
        if result.failure is None:
            status = _status(DimseStatus.SUCCESS)
        else:
            log.info("C-STORE from %s refused %s: %s", calling, result.sop_instance_uid, result.detail)
            status = _status(result.failure, result.detail)
    bridge.count_operation("C-STORE", int(status.Status))
    instance = result.instance if result is not None else None
    if instance is None:
        _tally(event.assoc, int(status.Status))
    else:
        _tally(event.assoc, int(status.Status), instance.study_instance_uid, instance.series_instance_uid)
    return status


def handle_find(bridge: Bridge, event: DimseEvent) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND (PS3.4 C.4.1), and the Modality Worklist's (Annex K, ``worklist.py``): pending responses as the search
    finds matches, C-CANCEL honoured between two; audited with its keys and outcome."""
    identifier = event.identifier
    request = event.request
    assert isinstance(request, C_FIND)
    is_worklist = request.AffectedSOPClassUID == ModalityWorklistInformationFind
    operation: DimseOperation = "MWL C-FIND" if is_worklist else "C-FIND"
    final: int = DimseStatus.SUCCESS
    matches = 0
    if not access.may(bridge, event.assoc, NodePermission.WORKLIST if is_worklist else NodePermission.FIND):
        # Audited first: pynetdicom does not resume a handler after its final status.
        bridge.run(audit(bridge, event.assoc, operation, DimseStatus.NOT_AUTHORIZED))
        what = "query the worklist" if is_worklist else "query"
        yield _status(DimseStatus.NOT_AUTHORIZED, f"{access.calling_ae_title(event.assoc)} may not {what} here"), None
        return
    try:
        if is_worklist:
            responses = worklist.find(bridge, identifier, access.own_station(event.assoc))
        else:
            responses = find.find(bridge, identifier, bridge.archive.settings.dimse_aet)
        for found in responses:
            if event.is_cancelled:
                final = DimseStatus.CANCEL
                break
            if found.identifier is None:
                final = found.status
                yield _status(found.status, found.comment), None
                return
            matches += 1
            yield DimseStatus.PENDING, found.identifier
        yield final, None
    except Exception as exc:
        if not unreachable(exc):
            log.exception("%s from %s failed", operation, access.calling_ae_title(event.assoc))
            final = DimseStatus.UNABLE_TO_PROCESS
            yield _status(final, "the search failed; the archive's log has the details"), None
            return
        final = FailureReason.OUT_OF_RESOURCES
        yield _status(final, "the archive's database is not reachable; retry later"), None
    finally:
        query = urlencode(find.keys_of(identifier))
        bridge.run(audit(bridge, event.assoc, operation, int(final), query=f"{query}&matches={matches}"))


def handle_mpps(bridge: Bridge, event: DimseEvent, operation: DimseOperation) -> tuple[Dataset, Dataset | None]:
    """MPPS N-CREATE and N-SET (``mpps.py``) for a caller with the ``mpps`` permission; audited with the step and
    its order's study."""
    assoc = event.assoc
    if not access.may(bridge, assoc, NodePermission.MPPS):
        bridge.run(audit(bridge, assoc, operation, DimseStatus.NOT_AUTHORIZED))
        return _status(DimseStatus.NOT_AUTHORIZED, f"{access.calling_ae_title(assoc)} may not report MPPS"), None
    request = event.request
    if operation == "MPPS N-CREATE":
        assert isinstance(request, N_CREATE)
        uid = str(request.AffectedSOPInstanceUID) if request.AffectedSOPInstanceUID else None
        outcome = mpps.n_create(bridge, access.calling_ae_title(assoc), uid, event.attribute_list)
    else:
        assert isinstance(request, N_SET)
        outcome = mpps.n_set(bridge, str(request.RequestedSOPInstanceUID), event.modification_list)
    bridge.run(
        audit(bridge, assoc, operation, outcome.status, sop_instance_uid=outcome.sop_instance_uid,
              study_instance_uid=outcome.study_instance_uid)
    )  # fmt: skip
    if outcome.status != mpps.SUCCESS:
        return _status(outcome.status, outcome.comment), None
    answer = Dataset()
    if operation == "MPPS N-CREATE" and outcome.sop_instance_uid and uid is None:
        answer.AffectedSOPInstanceUID = outcome.sop_instance_uid  # pynetdicom puts it in the response's command
    return _status(mpps.SUCCESS), answer


def handle_commit(bridge: Bridge, event: DimseEvent) -> tuple[Dataset, Dataset | None]:
    """Storage Commitment N-ACTION (``commitment.py``) for a caller with the ``commit`` permission: answered success
    once the request is recorded in the database, then its instances checked and the N-EVENT-REPORT sent by a
    thread of its own, or by any server process later (``commitment_reports.py``); audited with its count."""
    assoc = event.assoc
    calling = access.calling_ae_title(assoc)
    if not access.may(bridge, assoc, NodePermission.COMMIT):
        bridge.run(audit(bridge, assoc, "COMMIT N-ACTION", DimseStatus.NOT_AUTHORIZED))
        return _status(DimseStatus.NOT_AUTHORIZED, f"{calling} may not ask for storage commitment"), None
    if event.action_type != commitment.COMMIT_REQUEST:
        bridge.run(audit(bridge, assoc, "COMMIT N-ACTION", commitment.NO_SUCH_ACTION_TYPE))
        return _status(commitment.NO_SUCH_ACTION_TYPE, "the action type of a storage commitment request is 1"), None
    parsed = commitment.references_of(event.action_information)
    if isinstance(parsed, str):
        bridge.run(audit(bridge, assoc, "COMMIT N-ACTION", commitment.MISSING_ATTRIBUTE))
        return _status(commitment.MISSING_ATTRIBUTE, parsed), None
    transaction, references = parsed
    query = f"instances={len(references)}"
    lease = bridge.archive.settings.commit_lease_seconds
    try:
        request = bridge.run(
            commitment_db.accept(bridge.archive.pool, transaction, calling, references, bridge.holder, lease)
        )
    except Exception as exc:
        if not unreachable(exc):
            raise
        # Not recorded, so not promised: the modality keeps its copies and asks again.
        bridge.run(audit(bridge, assoc, "COMMIT N-ACTION", commitment.PROCESSING_FAILURE, query=query))
        return _status(commitment.PROCESSING_FAILURE, "the archive's database is not reachable; retry later"), None
    bridge.run(audit(bridge, assoc, "COMMIT N-ACTION", DimseStatus.SUCCESS, query=query))
    # A daemon: a report cut short by the server's stop is sent by another process once this one's hold ends.
    worker = threading.Thread(
        target=commitment_reports.report_soon,
        args=(bridge, assoc, request),
        name="dicomweb-commitment",
        daemon=True,
    )
    worker.start()
    return _status(DimseStatus.SUCCESS), None


def refusal(
    bridge: Bridge, assoc: Association, request: C_GET | C_MOVE, context: PresentationContext
) -> Dataset | None:
    """Why a C-GET or C-MOVE is refused before any sub-operation (PS3.4 C.4.2.1.5, C.4.3.1.5), as its only
    response's status: the caller may not (0x0124), the identifier names no instances (0xA900), the Move Destination
    is not a registered node (0xA801); None when it may go on. A refusal is audited."""
    operation: DimseOperation = "C-GET" if isinstance(request, C_GET) else "C-MOVE"
    permission = NodePermission.GET if operation == "C-GET" else NodePermission.MOVE
    status: Dataset | None = None
    if not access.may(bridge, assoc, permission):
        status = _status(DimseStatus.NOT_AUTHORIZED, f"{access.calling_ae_title(assoc)} may not {operation} here")
    elif request.Identifier is None:
        status = _status(DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "the request has no identifier")
    else:
        syntax = context.transfer_syntax[0]
        try:
            identifier = decode(request.Identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
            scope = retrieve.scope_of(identifier)
        except Exception as exc:  # pydicom's errors of a malformed identifier
            scope = f"the identifier cannot be read: {exc}"
        request.Identifier.seek(0)  # pynetdicom's SCP decodes it again
        if isinstance(scope, str):
            status = _status(DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, scope)
        elif isinstance(request, C_MOVE):
            destination = str(request.MoveDestination).strip()
            try:
                node = bridge.run(get_node(bridge.archive.pool, destination))
            except Exception as exc:
                if not unreachable(exc):
                    raise
                status = _status(DimseStatus.UNABLE_TO_CALCULATE_MATCHES, "the archive's database is not reachable")
            else:
                if node is None:
                    status = _status(DimseStatus.MOVE_DESTINATION_UNKNOWN, f"{destination} is not a registered node")
    if status is not None:
        query = f"destination={str(request.MoveDestination).strip()}" if isinstance(request, C_MOVE) else None
        bridge.run(audit(bridge, assoc, operation, int(status.Status), query=query))
    return status


def handle_get(bridge: Bridge, event: DimseEvent) -> Iterator[int | tuple[int | Dataset, Dataset | None]]:
    """C-GET (PS3.4 C.4.3): the number of sub-operations, then each instance to send on this association (pynetdicom
    sends it and counts completed, failed and warning); C-CANCEL honoured between two; audited with the scope.
    Refusals were answered before (``refusal``)."""
    scope = retrieve.scope_of(event.identifier)
    assert isinstance(scope, retrieve.Scope)
    files = retrieve.files_of(bridge, scope)
    accepted = outgoing.accepted_of(event.assoc)  # the storage contexts in which the archive may act as the SCU
    yield len(files)
    offered: list[StoredFile] = []
    try:
        yield from _sub_operations(bridge, event, files, accepted, offered)
    finally:
        query = f"instances={len(files)}&offered={len(offered)}"
        bridge.run(
            audit(bridge, event.assoc, "C-GET", DimseStatus.SUCCESS, query=query,
                  study_instance_uid=scope.study, series_instance_uid=scope.series)
        )  # fmt: skip


def handle_move(bridge: Bridge, event: DimseEvent) -> Iterator[Any]:
    """C-MOVE (PS3.4 C.4.2): the destination node's address, the number of sub-operations, then each instance to
    send; pynetdicom opens the association to the destination (proposing the contexts the instances need) and
    counts completed, failed and warning. C-CANCEL honoured between two; audited with the scope and destination.
    Refusals were answered before (``refusal``)."""
    request = event.request
    assert isinstance(request, C_MOVE)
    scope = retrieve.scope_of(event.identifier)
    assert isinstance(scope, retrieve.Scope)
    destination = str(request.MoveDestination).strip()
    node = bridge.run(get_node(bridge.archive.pool, destination))
    if node is None or not _resolves(node.host):  # removed since the refusal check, or no such host: 0xA801
        status = DimseStatus.MOVE_DESTINATION_UNKNOWN
        bridge.run(audit(bridge, event.assoc, "C-MOVE", status, query=f"destination={destination}"))
        yield None, None
        return
    files = retrieve.files_of(bridge, scope)
    accepted: outgoing.Accepted = {}
    associated = False

    def established(accepted_event: DimseEvent) -> None:
        nonlocal associated
        associated = True
        accepted.update(outgoing.accepted_of(accepted_event.assoc))

    contexts = outgoing.contexts_for(files)  # (no association when there is nothing to send)
    offered: list[StoredFile] = []
    try:
        yield node.host, node.port, {"contexts": contexts, "evt_handlers": [(evt.EVT_ACCEPTED, established)]}
        yield len(files)
        yield from _sub_operations(bridge, event, files, accepted, offered)
    finally:  # also when pynetdicom could not associate with the destination (it answered 0xA801)
        status = DimseStatus.SUCCESS if associated or not files else DimseStatus.MOVE_DESTINATION_UNKNOWN
        query = f"destination={destination}&instances={len(files)}&offered={len(offered)}"
        bridge.run(
            audit(bridge, event.assoc, "C-MOVE", status, query=query,
                  study_instance_uid=scope.study, series_instance_uid=scope.series)
        )  # fmt: skip


def _sub_operations(
    bridge: Bridge,
    event: DimseEvent,
    files: list[StoredFile],
    accepted: outgoing.Accepted,
    offered: list[StoredFile],
) -> Iterator[tuple[int, Dataset | None]]:
    """C-GET's and C-MOVE's pending sub-operations: each file's data set as ``outgoing.py`` chooses it for what the
    peer ``accepted`` (noted in ``offered``), until a C-CANCEL, answered with the Cancel status."""
    for file in files:
        if event.is_cancelled:
            yield DimseStatus.CANCEL, None
            return
        offered.append(file)
        # A local file for the send: the stored file itself, or a copy of its object until pynetdicom has sent it
        # and asks for the next sub-operation.
        with bridge.archive.storage.local_copy(file.file_path) as path:
            yield DimseStatus.PENDING, outgoing.dataset_to_send(path, file, accepted)


def _resolves(host: str) -> bool:
    """Whether the host name resolves (pynetdicom's own association attempt would raise, answering 0xC515)."""
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        log.warning("C-MOVE destination host %s does not resolve", host)
        return False
    return True


def _data_set_start(path: Path) -> int:
    """Where the data set begins in a PS3.10 file: after the preamble, "DICM" and the File Meta Information group,
    whose length its first element, File Meta Information Group Length (0002,0000) UL, gives (PS3.10 §7.1)."""
    with open(path, "rb") as file:
        file.seek(132 + 8)  # preamble, "DICM", then the group length element's tag, VR and value length
        return 132 + 12 + int.from_bytes(file.read(4), "little")


def _encoded_meta(meta: FileMetaDataset) -> bytes:
    """Preamble, "DICM" and the File Meta Information group (PS3.10 §7.1)."""
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()


def _status(code: int, comment: str = "") -> Dataset:
    status = Dataset()
    status.Status = int(code)
    if comment:
        status.ErrorComment = comment[:64]  # (0000,0902) LO: at most 64 characters
    return status


async def audit(
    bridge: Bridge,
    assoc: Association,
    operation: DimseOperation,
    status: int,
    query: str | None = None,
    count: bool = True,
    **uids: str | None,
) -> None:
    """An event in the audit trail, as for HTTP: the calling AE title is the user, its address the client, the
    action the one of the HTTP transaction that does the same work (``actions.DIMSE_ACTIONS``), the DIMSE status the
    outcome (and, unless ``count`` is False, counted in /metrics). Kept for later while the database is gone."""
    if count:
        bridge.count_operation(operation, status)
    record = Event(
        request_id=uuid.uuid4().hex,
        subject=access.calling_ae_title(assoc),
        roles=[],
        action=DIMSE_ACTIONS[operation],
        method=operation,
        route="dimse",
        path=f"{operation} {bridge.archive.settings.dimse_aet}",
        query=query,
        patient_id=None,
        study_instance_uid=uids.get("study_instance_uid"),
        series_instance_uid=uids.get("series_instance_uid"),
        sop_instance_uid=uids.get("sop_instance_uid"),
        status=status,
        client=str(assoc.requestor.address),
    )
    writer = bridge.archive.audit
    try:
        await writer.write(record)
    except Exception as exc:
        if not unreachable(exc):
            raise
        writer.keep(record)
