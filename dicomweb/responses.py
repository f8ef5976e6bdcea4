"""Response classes, one per media type."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .media import DICOM_JSON
from .storage import CHUNK_BYTES, read_chunks
from .zerocopy import SENDFILES

log = logging.getLogger("dicomweb")

MAX_WARNINGS = 20  # explanations sent as Warning header values; the rest are counted


def warning_headers(request: Request, texts: list[str]) -> dict[str, str]:
    """Explanations as ``Warning: 299`` values (RFC 7234 §5.5; PS3.18 answers with them what a response leaves out
    or could not do), the first MAX_WARNINGS of them, quoted and in ASCII; none for no texts."""
    if not texts:
        return {}
    agent = request.url.hostname or "dicomweb"  # RFC 7234 §5.5: the host that adds the warning
    shown = [t.replace('"', "'").replace("\\", "/").encode("ascii", "replace").decode() for t in texts[:MAX_WARNINGS]]
    if len(texts) > MAX_WARNINGS:
        shown.append(f"{len(texts) - MAX_WARNINGS} more")
    return {"warning": ", ".join(f'299 {agent} "{text}"' for text in shown)}


def bytes_part(content_type: str, data: bytes) -> Part:
    """A part whose bytes are already in memory."""

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return Part(content_type, chunks())


async def chain(first: Part, rest: AsyncIterator[Part]) -> AsyncIterator[Part]:
    """``first`` (made before the response started, so that its failure could still be a status) and then ``rest``."""
    yield first
    async for part in rest:
        yield part


class DicomJSONResponse(Response):
    """``application/dicom+json`` (PS3.18 Annex F) rendered with orjson."""

    media_type = DICOM_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(frozen=True)
class Part:
    """One body part of a multipart/related response: its Content-Type and its bytes, produced lazily."""

    content_type: str
    chunks: AsyncIterator[bytes]
    location: str | None = None


class Framing:
    """The framing of one ``multipart/related`` body (RFC 2046 §5.1.1, RFC 2387): a new boundary, the body's
    Content-Type, each part's head and the closing delimiter."""

    def __init__(self, part_type: str) -> None:
        self.boundary = uuid.uuid4().hex
        self.media_type = f'multipart/related; type="{part_type}"; boundary={self.boundary}'
        self.close = f"--{self.boundary}--\r\n".encode("latin-1")

    def head(self, content_type: str, location: str | None = None) -> bytes:
        """The delimiter and headers before a part's bytes (a part's bytes are followed by CRLF)."""
        head = f"--{self.boundary}\r\nContent-Type: {content_type}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        return (head + "\r\n").encode("latin-1")


class MultipartRelatedResponse(StreamingResponse):
    """``multipart/related`` (RFC 2387), streamed part by part: the first part leaves before the last is read."""

    def __init__(self, parts: AsyncIterator[Part], part_type: str, headers: dict[str, str] | None = None) -> None:
        self.framing = Framing(part_type)
        super().__init__(self._body(parts), media_type=self.framing.media_type, headers=headers)

    async def _body(self, parts: AsyncIterator[Part]) -> AsyncIterator[bytes]:
        """The parts, then the closing delimiter. The producers leave out what they cannot make before its part
        begins; should the next part still fail unexpectedly, the body ends there, well-formed, rather than being cut
        (a part whose bytes fail midway is cut off: a short part must not pass for a whole one)."""
        while True:
            try:
                part = await anext(parts)
            except StopAsyncIteration:
                break
            except Exception:
                log.exception("a multipart/related response ends early: its next part could not be made")
                break
            yield self.framing.head(part.content_type, part.location)
            async for chunk in part.chunks:
                yield chunk
            yield b"\r\n"
        yield self.framing.close


class MultipartBytesResponse(Response):
    """A small ``multipart/related`` response whose parts are already in memory (a few frames, one instance): sent
    as its pieces, so that a frame's bytes are handed to the socket as they are instead of copied into one body."""

    def __init__(self, parts: list[tuple[str, bytes]], headers: Mapping[str, str] | None = None) -> None:
        framing = Framing(parts[0][0].split(";")[0])
        self.pieces: list[bytes] = []
        for content_type, data in parts:
            self.pieces += [framing.head(content_type), data, b"\r\n"]
        self.pieces.append(framing.close)
        super().__init__(None, headers=headers, media_type=framing.media_type)
        self.headers["content-length"] = str(sum(len(piece) for piece in self.pieces))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = len(self.pieces) - 1
        for number, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": number < last})


@dataclass(frozen=True)
class StoredPart:
    """A body part that is a stored file sent as it is: its Content-Type, path and size in bytes."""

    content_type: str
    path: Path
    size: int


FILES_PER_SENDFILES = 32  # files written by the kernel per worker-thread call (zerocopy.py)


class MultipartFilesResponse(Response):
    """Stored files as one ``multipart/related`` body, file by file, with a Content-Length (their sizes are known).
    Each file is sent by the kernel where the server offers zero-copy send (zerocopy.py); else it is read in worker
    threads. Either way the next file is opened (or, when small, read) while the one before it is sent."""

    def __init__(self, parts: list[StoredPart], part_type: str, headers: Mapping[str, str] | None = None) -> None:
        framing = Framing(part_type)
        self.parts = parts
        # What goes before each file: the end of the part before it (if any) and the part's head.
        self.before = [
            (b"\r\n" if number else b"") + framing.head(part.content_type) for number, part in enumerate(parts)
        ]
        self.tail = (b"\r\n" if parts else b"") + framing.close
        super().__init__(None, headers=headers, media_type=framing.media_type)
        length = sum(len(before) + part.size for before, part in zip(self.before, parts, strict=True))
        self.headers["content-length"] = str(length + len(self.tail))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":  # the headers (Content-Length included) without reading a file
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if SENDFILES in scope.get("extensions", {}):
            await self._send_by_kernel(send)
        else:
            await self._send_read(send)
        await send({"type": "http.response.body", "body": self.tail, "more_body": False})

    async def _send_by_kernel(self, send: Send) -> None:
        for start in range(0, len(self.parts), FILES_PER_SENDFILES):
            batch = zip(
                self.before[start : start + FILES_PER_SENDFILES],
                self.parts[start : start + FILES_PER_SENDFILES],
                strict=True,
            )
            parts = [(before, str(part.path), part.size) for before, part in batch]
            await send({"type": SENDFILES, "parts": parts, "more_body": True})

    async def _send_read(self, send: Send) -> None:
        ahead: asyncio.Task[bytes] | None = None
        try:
            for number, (before, part) in enumerate(zip(self.before, self.parts, strict=True)):
                await send({"type": "http.response.body", "body": before, "more_body": True})
                if part.size > CHUNK_BYTES:
                    async for chunk in read_chunks(part.path):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    continue
                data = await (ahead or asyncio.to_thread(part.path.read_bytes))
                ahead = None
                following = self.parts[number + 1] if number + 1 < len(self.parts) else None
                if following is not None and following.size <= CHUNK_BYTES:
                    ahead = asyncio.create_task(asyncio.to_thread(following.path.read_bytes))
                await send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            if ahead is not None:  # cut short: let the read finish, drop its bytes
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
