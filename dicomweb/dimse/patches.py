"""Three fixes to pynetdicom 3.0, applied on import (by ``outgoing.py``, hence by every user of the DIMSE code);
what makes it faster is in ``speedups.py``:

- ``TCP_NODELAY`` on every association's socket. pynetdicom leaves Nagle's algorithm on: the last, short segment of
  each message then waits for the peer's delayed ACK (~40 ms on Linux) before it leaves, once per C-STORE, C-FIND
  response or sub-operation, which capped a C-GET at ~45 instances/s (DCMTK's FAQ #48 tells the same of its tools).
- ``AssociationSocket._shutdown_socket`` calls ``shutdown()`` and then ``close()`` in one ``try``: on a socket that
  never connected (connection refused, timed out) ``shutdown()`` raises ENOTCONN and the socket is never closed, so
  each failed association (a node that is down, an echo to a closed port) leaked a file descriptor until the garbage
  collector found it. Here the socket is always closed.
- A race between an association's reactor thread and a ``send_c_store`` (or another ``send_*``) of another thread:
  the sender pauses the reactor, but a reactor woken by the previous send's end can still take the response to the
  new request off the queue, log "Received unexpected C-STORE service message" and drop it; the sender then waits
  for the DIMSE timeout and counts a failure. It shows once answers come fast (TCP_NODELAY): a C-MOVE of 300
  instances failed 234 of them. Here a response the reactor takes while a send is under way goes back to the queue
  for the sender.
"""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

_init = AssociationSocket.__init__


def _init_without_delay(self: AssociationSocket, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    sock = self.socket
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _shutdown_and_close(self: AssociationSocket) -> None:
    sock = self.socket
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected, or already shut down
    sock.close()


_serve_request = Association._serve_request


def _serve_request_or_hand_back(self: Association, msg: Any, context_id: int) -> None:
    sending = not self._reactor_checkpoint.is_set()  # a send_*() of another thread is waiting for its response
    if sending and not msg.is_valid_request and msg.is_valid_response:
        self.dimse.msg_queue.put((context_id, msg))
        return
    _serve_request(self, msg, context_id)


AssociationSocket.__init__ = _init_without_delay  # type: ignore[method-assign]
AssociationSocket._shutdown_socket = _shutdown_and_close  # type: ignore[method-assign]
Association._serve_request = _serve_request_or_hand_back  # type: ignore[method-assign]
