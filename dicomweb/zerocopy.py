"""Stored files sent to the client by the kernel (``sendfile``), without passing through Python.

uvicorn has no zero-copy send, so ``Protocol`` (uvicorn's httptools protocol, given to uvicorn as its ``http``
class) adds one for plain TCP connections, as the ASGI extension ``dicomweb.sendfiles`` in ``scope["extensions"]``.
A response with a Content-Length sends files with one message per batch of them:
``{"type": "dicomweb.sendfiles", "parts": [(bytes before the file, path, byte count), ...], "more_body": True}``.
Without the extension (TLS, another server) responses read the files themselves.

A batch is written by worker thread calls (a file not in the page cache is read from disk inside ``sendfile``), each
writing until the socket is full; the wait for the client to take more is on the event loop, so a slow client holds
no thread. TCP_CORK is set meanwhile so that the small framing bytes and the files leave in full segments, as
nginx's ``tcp_nopush`` does. The threads write to a duplicate of the connection's socket, made on the event loop:
the socket stays open for them even if the loop closes the connection meanwhile, so the bytes can never reach
another connection that reused the number.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

SENDFILES = "dicomweb.sendfiles"
HTTP_PROTOCOL = "dicomweb.zerocopy:Protocol"  # uvicorn's ``http`` setting
STALL_SECONDS = 60.0  # a client that reads nothing for this long is dropped

FilePart = tuple[bytes, str, int]  # bytes written before the file, its path, how many of its bytes are sent


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering ``dicomweb.sendfiles`` on plain TCP connections."""

    socket_fd: int | None = None  # the connection's socket, when the files can be written to it (no TLS)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self.socket_fd = sock.fileno()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self.socket_fd is not None:
            cycle.scope.setdefault("extensions", {})[SENDFILES] = {}
            app = functools.partial(_with_sendfiles, app, cycle, self.socket_fd)
        super()._start_asgi_task(cycle, app)


async def _with_sendfiles(
    app: Any, cycle: RequestResponseCycle, socket_fd: int, scope: Any, receive: Any, send: Any
) -> None:
    async def send_or_copy(message: Any) -> None:
        if message["type"] != SENDFILES:
            await send(message)
            return
        await _send_files(cycle, socket_fd, message["parts"])
        if not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    await app(scope, receive, send_or_copy)


async def _send_files(cycle: RequestResponseCycle, socket_fd: int, parts: list[FilePart]) -> None:
    if not cycle.response_started or cycle.chunked_encoding is not False or cycle.response_complete:
        raise RuntimeError(f"{SENDFILES} needs a started response with a Content-Length")
    size = sum(len(before) + count for before, _, count in parts)
    if size > cycle.expected_content_length:
        raise RuntimeError("Response content longer than Content-Length")
    cycle.expected_content_length -= size
    if cycle.disconnected or cycle.scope["method"] == "HEAD":
        return
    await _drained(cycle)
    if cycle.disconnected or cycle.transport.is_closing():
        return
    # Duplicated here, on the event loop, where the connection is known to be open, so that the number is this
    # connection's socket (the loop closes it, and the number may be reused, only on this thread); closed only once
    # no worker thread writes to it any more.
    sock = socket.socket(fileno=os.dup(socket_fd))  # left non-blocking, as it is (the default timeout is None)
    progress = _Progress()
    copying: asyncio.Future[bool] | None = None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        while True:
            copying = asyncio.ensure_future(asyncio.to_thread(_copy, sock.fileno(), parts, progress))
            if await asyncio.shield(copying):
                break
            # The socket is full: wait for the client on the event loop, so that a slow client holds no thread.
            await _writable(sock.fileno())
    except (ConnectionError, TimeoutError):  # the client went away or stopped reading: drop the rest, as uvicorn does
        cycle.disconnected = True
        cycle.transport.close()
    finally:
        if copying is not None and not copying.done():  # cancelled while a thread writes: let it stop first
            await asyncio.wait([copying])
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)  # the last segment leaves now
        sock.close()


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await asyncio.wait_for(ready, STALL_SECONDS)
    except TimeoutError:
        raise TimeoutError(f"the client read nothing for {STALL_SECONDS:.0f} s") from None
    finally:
        loop.remove_writer(fd)


async def _drained(cycle: RequestResponseCycle) -> None:
    """Wait until everything written to the transport so far has reached the socket: the files go after it."""
    transport = cycle.transport
    if not transport.get_write_buffer_size():
        return
    transport.set_write_buffer_limits(high=0)  # the protocol is now paused until the buffer is empty
    try:
        await cycle.flow.drain()
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits()


@dataclass
class _Progress:
    """How far a batch has been written: its part, and how many bytes of it (its bytes before the file, then the
    file's) have been sent."""

    part: int = 0
    sent: int = 0


def _copy(fd: int, parts: list[FilePart], progress: _Progress) -> bool:
    """The batch's parts, each its bytes and then its file's first bytes, to the non-blocking socket ``fd`` from
    where ``progress`` says, until the socket is full (False) or all is written (True). A file that is missing or
    shorter than said raises (the response is then cut short); a client that is gone raises ConnectionError."""
    while progress.part < len(parts):
        before, path, count = parts[progress.part]
        try:
            while progress.sent < len(before):
                progress.sent += os.write(fd, memoryview(before)[progress.sent :])
            if progress.sent < len(before) + count:
                with open(path, "rb") as file:
                    while (offset := progress.sent - len(before)) < count:
                        sent = os.sendfile(fd, file.fileno(), offset, count - offset)
                        if sent == 0:
                            raise EOFError(f"{path} is shorter than the {count} bytes to send")
                        progress.sent += sent
        except BlockingIOError:
            return False
        progress.part, progress.sent = progress.part + 1, 0
    return True
