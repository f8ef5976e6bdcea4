"""The DIMSE listener: a pynetdicom Application Entity on ``DICOMWEB_DIMSE_PORT`` that modalities and workstations
associate with, answering as ``DICOMWEB_DIMSE_AET``.

pynetdicom serves each association in a thread of its own; the handlers (``handlers.py``) reach the archive, whose
asyncpg pools belong to the server's event loop, through ``Bridge``. Received data sets are written to temp files
as they arrive (pynetdicom's ``STORE_RECV_CHUNKED_DATASET``), so an association's memory does not grow with the size
of what it sends.

With ``dicomweb serve --workers N`` every worker process tries to listen; the first to bind the port serves it and
the others leave it (the archive's state is all in PostgreSQL, so which process serves does not matter).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from ..archive import Archive
from . import handlers

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


class Bridge:
    """Runs the archive's coroutines on its event loop from pynetdicom's association threads."""

    def __init__(self, archive: Archive, loop: asyncio.AbstractEventLoop) -> None:
        self.archive = archive
        self.loop = loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the archive's loop and wait for its result in this (association) thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def application_entity(ae_title: str) -> AE:
    """The archive's AE: Verification, and every storage SOP class pynetdicom knows in every transfer syntax it
    knows (a data set is stored as it is sent, never converted on the way in)."""
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True  # another called AE title: A-ASSOCIATE-RJ, called AE title not recognised
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT, NETWORK_TIMEOUT
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for model in (
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelGet,
    ):
        ae.add_supported_context(model, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        # Both roles: a modality stores here (we are SCP), and a C-GET requester is sent its instances on its own
        # association (SCP/SCU Role Selection, PS3.7 D.3.3.4: it is the SCP of the storage sub-operations).
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    return ae


class DimseServer:
    """The listener's lifetime: ``start`` in the server's event loop, ``stop`` at shutdown."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.server: ThreadedAssociationServer | None = None

    def start(self) -> bool:
        """Listen on the configured host and port; False when another process listens there already."""
        settings = self.archive.settings
        bridge = Bridge(self.archive, asyncio.get_running_loop())
        ae = application_entity(settings.dimse_aet)
        try:
            self.server = ae.start_server(
                (settings.host, settings.dimse_port), block=False, evt_handlers=handlers.bound(bridge)
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            log.info("DIMSE port %d is served by another worker process", settings.dimse_port)
            return False
        log.info("DIMSE listening on %s:%d as %s", settings.host, settings.dimse_port, settings.dimse_aet)
        return True

    def stop(self) -> None:
        """Stop accepting associations and end the running ones."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
