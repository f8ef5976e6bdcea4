"""dimse/patches.py: the fixes to pynetdicom 3.0 the archive applies, each checked on pynetdicom's own objects."""

from __future__ import annotations

import socket

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket

import dicomweb.dimse.patches  # noqa: F401 (applies them)

from .conftest import free_port


def store_response() -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 1
    response.AffectedSOPClassUID = CTImageStorage
    response.AffectedSOPInstanceUID = "1.2.3.4"
    response.Status = 0x0000
    return response


class TestReactorRace:
    def test_a_response_taken_during_a_send_goes_back_to_the_sender(self) -> None:
        assoc = Association(AE(), "requestor")
        assoc._reactor_checkpoint.clear()  # as send_c_store() does while it waits for its response
        assoc._serve_request(store_response(), 1)
        assert assoc.dimse.get_msg(block=False)[1] is not None

    def test_an_unexpected_response_is_still_dropped(self) -> None:
        assoc = Association(AE(), "requestor")  # no send under way: the checkpoint is set
        assoc._serve_request(store_response(), 1)
        assert assoc.dimse.get_msg(block=False) == (None, None)


class TestSockets:
    def test_no_delay(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            accepted, _ = listener.accept()
            wrapped = AssociationSocket(Association(AE(), "acceptor"), client_socket=accepted)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            wrapped.close()
            client.close()

    def test_refused_connection_closes_its_socket(self) -> None:
        ae = AE()
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", free_port())  # nobody listens: refused
        assert not assoc.is_established
        # The socket pynetdicom made was closed (its file descriptor released), not left to the garbage collector.
        assert assoc.dul.socket is None or assoc.dul.socket.socket is None or assoc.dul.socket.socket.fileno() == -1
