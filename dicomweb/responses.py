"""Response classes, one per media type."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .media import DICOM_JSON


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


class MultipartRelatedResponse(StreamingResponse):
    """``multipart/related`` (RFC 2387), streamed part by part: the first part leaves before the last is read."""

    def __init__(self, parts: AsyncIterator[Part], part_type: str, headers: dict[str, str] | None = None) -> None:
        self.boundary = uuid.uuid4().hex
        media_type = f'multipart/related; type="{part_type}"; boundary={self.boundary}'
        super().__init__(self._body(parts), media_type=media_type, headers=headers)

    async def _body(self, parts: AsyncIterator[Part]) -> AsyncIterator[bytes]:
        async for part in parts:
            head = f"--{self.boundary}\r\nContent-Type: {part.content_type}\r\n"
            if part.location:
                head += f"Content-Location: {part.location}\r\n"
            yield (head + "\r\n").encode("latin-1")
            async for chunk in part.chunks:
                yield chunk
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode("latin-1")


class MultipartBytesResponse(Response):
    """A small ``multipart/related`` response whose parts are already in memory (a few frames, one instance): sent
    as its pieces, so that a frame's bytes are handed to the socket as they are instead of copied into one body."""

    def __init__(self, parts: list[tuple[str, bytes]], headers: Mapping[str, str] | None = None) -> None:
        boundary = uuid.uuid4().hex
        self.pieces: list[bytes] = []
        for content_type, data in parts:
            self.pieces += [f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1"), data, b"\r\n"]
        self.pieces.append(f"--{boundary}--\r\n".encode("latin-1"))
        part_type = parts[0][0].split(";")[0]
        super().__init__(
            None, headers=headers, media_type=f'multipart/related; type="{part_type}"; boundary={boundary}'
        )
        self.headers["content-length"] = str(sum(len(piece) for piece in self.pieces))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = len(self.pieces) - 1
        for number, piece in enumerate(self.pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": number < last})
