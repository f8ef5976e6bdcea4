"""What the archive does for each DIMSE request: thin handlers over the same store as STOW-RS, audited like HTTP.

Each handler runs in the association's thread (pynetdicom) and hands its work to the archive's event loop through
``server.Bridge``. Statuses are the ones PS3.4 and PS3.7 name (``status.py``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event as DimseEvent
from pynetdicom.events import EventHandlerType

from ..actions import DIMSE_ACTIONS, DimseOperation
from ..db.audit import Event
from ..db.outage import unreachable
from ..services.store import StoreResult, store_spooled
from ..status import DimseStatus, FailureReason
from . import find, get

if TYPE_CHECKING:
    from .server import Bridge

log = logging.getLogger("dicomweb")

IMPLEMENTATION_VERSION_NAME = "DICOMWEB"  # (0002,0013) of the files the archive writes for C-STORE


def bound(bridge: Bridge) -> list[EventHandlerType]:
    """The event handlers of the listener, each with the bridge to the archive."""
    return [
        (evt.EVT_C_ECHO, lambda event: handle_echo(bridge, event)),
        (evt.EVT_C_STORE, lambda event: handle_store(bridge, event)),
        (evt.EVT_C_FIND, lambda event: handle_find(bridge, event)),
        (evt.EVT_C_GET, lambda event: handle_get(bridge, event)),
        (evt.EVT_CONN_CLOSE, handle_close),
    ]


def handle_close(event: DimseEvent) -> None:
    """A connection that closed in the middle of a C-STORE data set (aborted, cut): pynetdicom leaves the temp file
    it was receiving into open and on disk; close and remove it. The instance was never acknowledged."""
    message = getattr(event.assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is not None:
        partial.close()
        Path(partial.name).unlink(missing_ok=True)


def handle_echo(bridge: Bridge, event: DimseEvent) -> int:
    """C-ECHO (PS3.7 §9.1.5): success, audited."""
    bridge.run(audit(bridge, event, "C-ECHO", DimseStatus.SUCCESS))
    return DimseStatus.SUCCESS


def handle_store(bridge: Bridge, event: DimseEvent) -> Dataset:
    """C-STORE (PS3.4 Annex B): the received data set as a PS3.10 file, stored by the same function as STOW-RS."""
    request = event.request
    assert isinstance(request, C_STORE)
    calling = _calling(event)
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
    except OSError as exc:
        log.error("C-STORE from %s: the received data set could not be spooled: %s", calling, exc)
        return _status(FailureReason.OUT_OF_RESOURCES, f"cannot write the data set: {exc.strerror}")
    result: StoreResult | None = None
    try:
        result = bridge.run(store_spooled(bridge.archive, spooled, None))
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
    uids = {"sop_instance_uid": str(request.AffectedSOPInstanceUID)}
    if result is not None and result.instance is not None:
        uids.update(
            study_instance_uid=result.instance.study_instance_uid,
            series_instance_uid=result.instance.series_instance_uid,
        )
    bridge.run(audit(bridge, event, "C-STORE", int(status.Status), **uids))
    return status


def handle_find(bridge: Bridge, event: DimseEvent) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND (PS3.4 C.4.1): pending responses as the search finds matches (``find.py``), C-CANCEL honoured between
    two; audited with its keys and outcome."""
    identifier = event.identifier
    final: int = DimseStatus.SUCCESS
    matches = 0
    try:
        for found in find.find(bridge, identifier, bridge.archive.settings.dimse_aet):
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
            log.exception("C-FIND from %s failed", _calling(event))
            final = DimseStatus.UNABLE_TO_PROCESS
            yield _status(final, "the search failed; the archive's log has the details"), None
            return
        final = FailureReason.OUT_OF_RESOURCES
        yield _status(final, "the archive's database is not reachable; retry later"), None
    finally:
        query = urlencode(find.keys_of(identifier))
        bridge.run(audit(bridge, event, "C-FIND", int(final), query=f"{query}&matches={matches}"))


def handle_get(bridge: Bridge, event: DimseEvent) -> Iterator[int | tuple[int | Dataset, Dataset | None]]:
    """C-GET (PS3.4 C.4.3): the number of sub-operations, then each instance to send on this association (pynetdicom
    sends it and counts completed, failed and warning); C-CANCEL honoured between two; audited with the scope."""
    scope = get.scope_of(event.identifier)
    if isinstance(scope, str):
        yield 0
        yield _status(DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, scope), None
        bridge.run(audit(bridge, event, "C-GET", DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS))
        return
    files = get.files_of(bridge, scope)
    accepted: dict[str, set[str]] = {}
    for context in event.assoc.accepted_contexts:
        if not context.as_scu:  # only the storage contexts in which the archive may act as the SCU
            continue
        accepted.setdefault(str(context.abstract_syntax), set()).add(str(context.transfer_syntax[0]))
    yield len(files)
    offered = 0
    for dataset in get.datasets(bridge, files, accepted):
        if event.is_cancelled:
            yield DimseStatus.CANCEL, None
            break
        offered += 1
        yield DimseStatus.PENDING, dataset
    bridge.run(
        audit(bridge, event, "C-GET", DimseStatus.SUCCESS, query=f"instances={len(files)}&offered={offered}",
              study_instance_uid=scope.study, series_instance_uid=scope.series)
    )  # fmt: skip


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


def _calling(event: DimseEvent) -> str:
    return str(event.assoc.requestor.ae_title).strip()


async def audit(
    bridge: Bridge,
    event: DimseEvent,
    operation: DimseOperation,
    status: int,
    query: str | None = None,
    **uids: str | None,
) -> None:
    """An event in the audit trail, as for HTTP: the calling AE title is the user, its address the client, the
    action the one of the HTTP transaction that does the same work (``actions.DIMSE_ACTIONS``), the DIMSE status the
    outcome. Kept for later while the database is gone."""
    record = Event(
        request_id=uuid.uuid4().hex,
        subject=_calling(event),
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
        client=str(event.assoc.requestor.address),
    )
    writer = bridge.archive.audit
    try:
        await writer.write(record)
    except Exception as exc:
        if not unreachable(exc):
            raise
        writer.keep(record)
