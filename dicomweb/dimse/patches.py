"""A fix to pynetdicom 3.0, applied on import (by ``outgoing.py``, hence by every user of the DIMSE code).

``AssociationSocket._shutdown_socket`` calls ``shutdown()`` and then ``close()`` in one ``try``: on a socket that never
connected (connection refused, timed out) ``shutdown()`` raises ENOTCONN and the socket is never closed, so each
failed association (a node that is down, an echo to a closed port) leaks a file descriptor until the garbage
collector finds it. Here the socket is always closed.
"""

from __future__ import annotations

import socket

from pynetdicom.transport import AssociationSocket


def _shutdown_and_close(self: AssociationSocket) -> None:
    sock = self.socket
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected, or already shut down
    sock.close()


AssociationSocket._shutdown_socket = _shutdown_and_close  # type: ignore[method-assign]
