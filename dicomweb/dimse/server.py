"""The DIMSE listener: a pynetdicom Application Entity on ``DICOMWEB_DIMSE_PORT`` that modalities and workstations
associate with, answering as ``DICOMWEB_DIMSE_AET``.

pynetdicom serves each association in a thread of its own; the handlers (``handlers.py``) reach the archive, whose
asyncpg pools belong to the server's event loop, through ``Bridge``. Received data sets are written to temp files
as they arrive (pynetdicom's ``STORE_RECV_CHUNKED_DATASET``), so an association's memory does not grow with the size
of what it sends.

With ``dicomweb serve --workers N`` every worker process listens on the port (``DimseServer``), so that associations
are served by all of them at once; the archive's state is all in PostgreSQL, so which process serves one does not
matter.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import socket
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config
from pynetdicom import association as pynetdicom_association
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
    uid_to_service_class,
)
from pynetdicom.transport import ThreadedAssociationServer

from ..archive import Archive
from . import access, handlers, outgoing

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("dicomweb")

T = TypeVar("T")

# Received C-STORE data sets go to a temp file as they arrive, not into memory (pynetdicom 2.0 and later).
_config.STORE_RECV_CHUNKED_DATASET = True
# pynetdicom logs every PDU at INFO; the archive logs what matters (associations, stores) itself.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

ACSE_TIMEOUT = 30  # seconds to wait for an association request or release
DIMSE_TIMEOUT = 60  # seconds to wait for the next DIMSE message of an association
NETWORK_TIMEOUT = 60  # seconds without any data before an association is aborted
MAX_ASSOCIATIONS = 32  # associations served at once

# The transfer syntaxes the archive accepts, in the order it prefers them: pynetdicom takes, of those a proposed
# presentation context offers, the first in *this* list (PS3.8 §9.3.3.2 leaves the choice to the acceptor).
# Compressed first, so that what a modality offers compressed is stored as it has it; then Explicit VR Little Endian
# before Implicit, whose data sets lose the VR of private elements (and which a C-GET requester offering both would
# otherwise be sent by decoding and encoding each file stored in Explicit VR again).
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
TRANSFER_SYNTAXES = [uid for uid in ALL_TRANSFER_SYNTAXES if uid not in _NATIVE] + list(_NATIVE)


class Bridge:
    """Runs the archive's coroutines on its event loop from pynetdicom's association threads, and counts what the
    listener does in the server's metrics."""

    def __init__(self, archive: Archive, loop: asyncio.AbstractEventLoop, metrics: Metrics | None = None) -> None:
        self.archive = archive
        self.loop = loop
        self.metrics = metrics
        # This listener's name in the storage commitment requests it holds (commitment_reports.py): unique among
        # the processes on one database, and among the listeners of one process (tests run several).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the archive's loop and wait for its result in this (association) thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def count_association(self, assoc: Association, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.dimse_associations.labels(access.calling_ae_title(assoc), outcome).inc()

    def count_operation(self, operation: str, status: int) -> None:
        if self.metrics is not None:
            self.metrics.dimse_operations.labels(operation, f"0x{status:04X}").inc()


class ArchiveAE(AE):
    """The listener's AE, knowing its bridge to the archive (for ``QueryRetrieveService``)."""

    def __init__(self, ae_title: str, bridge: Bridge) -> None:
        super().__init__(ae_title=ae_title)
        self.bridge = bridge


class QueryRetrieveService(QueryRetrieveServiceClass):
    """pynetdicom's Query/Retrieve service, refusing a C-GET or C-MOVE first when it must be refused: PS3.4 C.4.2.3
    and C.4.3.3 answer a refusal (0x0124, 0xA900, 0xA801) as the only response, which pynetdicom's own can give only
    after its sub-operations began (a C-MOVE associates with its destination first)."""

    def SCP(self, req: Any, context: PresentationContext) -> None:
        ae = self.assoc.ae
        if isinstance(req, C_GET | C_MOVE) and isinstance(ae, ArchiveAE):
            status = handlers.refusal(ae.bridge, self.assoc, req, context)
            if status is not None:
                response = C_GET() if isinstance(req, C_GET) else C_MOVE()
                response.MessageIDBeingRespondedTo = req.MessageID
                response.AffectedSOPClassUID = req.AffectedSOPClassUID
                response.Status = int(status.Status)
                response.ErrorComment = status.get("ErrorComment")
                assert context.context_id is not None
                self.dimse.send_msg(response, context.context_id)
                return
        super().SCP(req, context)


def _service_class(uid: str) -> type[ServiceClass]:
    found = uid_to_service_class(uid)
    return QueryRetrieveService if found is QueryRetrieveServiceClass else found


# pynetdicom picks the service class of a request by its SOP class, with no hook for an application's own: ours
# replaces its Query/Retrieve one in this process (the archive is the only AE here).
pynetdicom_association.uid_to_service_class = _service_class  # type: ignore[attr-defined]


def port_in_use(port: int) -> str:
    return f"the DIMSE port {port} is in use by another program: set DICOMWEB_DIMSE_PORT to a free one, or to 0"


class _SharedPortServer(ThreadedAssociationServer):
    """pynetdicom's server, bound with SO_REUSEPORT (Linux: only beside sockets of the same user that set it too)."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def application_entity(ae_title: str, bridge: Bridge) -> AE:
    """The archive's AE: Verification, Query/Retrieve, and every storage SOP class pynetdicom knows in every transfer
    syntax it knows (a data set is stored as it is sent, never converted on the way in)."""
    ae = ArchiveAE(ae_title, bridge)
    ae.require_called_aet = True  # another called AE title: A-ASSOCIATE-RJ, called AE title not recognised
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT, NETWORK_TIMEOUT
    ae.connection_timeout = outgoing.CONNECT_TIMEOUT  # of the associations C-MOVE opens to its destinations
    ae.maximum_pdu_size = outgoing.MAX_PDU
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
    for model in (
        ModalityWorklistInformationFind,
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelMove,
    ):
        ae.add_supported_context(model, TRANSFER_SYNTAXES)
    ae.add_supported_context(ModalityPerformedProcedureStep, TRANSFER_SYNTAXES)
    ae.add_supported_context(StorageCommitmentPushModel, TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        # Both roles: a modality stores here (we are SCP), and a C-GET requester is sent its instances on its own
        # association (SCP/SCU Role Selection, PS3.7 D.3.3.4: it is the SCP of the storage sub-operations).
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    return ae


class DimseServer:
    """The listener's lifetime: ``start`` in the server's event loop, ``stop`` at shutdown. ``shared_port``: every
    worker process of ``dicomweb serve --workers N`` listens on the port (SO_REUSEPORT: the kernel spreads the
    associations over them), which the supervisor has bound first (``cli.serve``), so that no other program can
    take it, nor share it unless it asks to."""

    def __init__(self, archive: Archive, metrics: Metrics | None = None, shared_port: bool = False) -> None:
        self.archive = archive
        self.metrics = metrics
        self.shared_port = shared_port
        self.server: ThreadedAssociationServer | None = None
        self.bridge: Bridge | None = None

    def start(self) -> None:
        """Listen on the configured host and port (a port in use by another program fails the start)."""
        settings = self.archive.settings
        bridge = self.bridge = Bridge(self.archive, asyncio.get_running_loop(), self.metrics)
        ae = application_entity(settings.dimse_aet, bridge)
        server_class = _SharedPortServer if self.shared_port else ThreadedAssociationServer
        try:
            server = ae.make_server(
                (settings.host, settings.dimse_port), evt_handlers=handlers.bound(bridge), server_class=server_class
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise RuntimeError(port_in_use(settings.dimse_port)) from None
        ae._servers.append(server)  # as AE.start_server does: the server's shutdown() removes itself from there
        threading.Thread(target=server.serve_forever, name="dicomweb-dimse-listener", daemon=True).start()
        self.server = server
        log.info("DIMSE listening on %s:%d as %s", settings.host, settings.dimse_port, settings.dimse_aet)

    def stop(self) -> None:
        """Stop accepting associations and end the running ones."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
