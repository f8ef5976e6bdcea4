"""Streaming multipart/related reader (RFC 2387) for STOW-RS bodies: each part is spooled to a temp file.

Guarantees: server memory stays bounded whatever the request size (a part's bytes are held at most
``PART_BUFFER_BYTES`` at a time before they are written out); parts are byte-exact; a body that ends before its
closing boundary, or that is not multipart at all, raises ``BadRequest``; more than ``max_bytes`` raises
``PayloadTooLarge``. The caller owns the spooled files and must discard them on failure; on an exception the
reader removes the part it was writing.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from .errors import BadRequest, PayloadTooLarge
from .storage import FileStorage, SpooledFile, TempWriter

PART_BUFFER_BYTES = 1024 * 1024  # bytes of one part held in memory before they go to its temp file
MAX_PART_HEADER_BYTES = 16 * 1024  # bytes of headers allowed per part


@dataclass(frozen=True)
class ReceivedPart:
    """One complete body part: its spooled file and its Content-Type header (None when the part has none)."""

    file: SpooledFile
    content_type: str | None


@dataclass
class _PartState:
    headers: dict[str, str] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    header_bytes: int = 0
    buffer: list[bytes] = field(default_factory=list)
    buffered: int = 0
    ended: bool = False


class _Events:
    """Collects the parser's callbacks during one ``write``; the async side acts on them afterwards."""

    def __init__(self) -> None:
        self.parts: list[_PartState] = []
        self.finished = False

    @property
    def current(self) -> _PartState:
        return self.parts[-1]

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts.append(_PartState())

    def _count_header(self, size: int) -> None:
        self.current.header_bytes += size
        if self.current.header_bytes > MAX_PART_HEADER_BYTES:
            raise BadRequest(f"a multipart part has more than {MAX_PART_HEADER_BYTES} bytes of headers")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.current.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.current.header_value += data[start:end]

    def on_header_end(self) -> None:
        part = self.current
        name = part.header_field.decode("latin-1").strip().lower()
        part.headers[name] = part.header_value.decode("latin-1").strip()
        part.header_field.clear()
        part.header_value.clear()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        part.buffer.append(data[start:end])
        part.buffered += end - start

    def on_part_end(self) -> None:
        self.current.ended = True

    def on_end(self) -> None:
        self.finished = True


async def read_multipart(
    chunks: AsyncIterable[bytes], boundary: bytes, storage: FileStorage, max_bytes: int
) -> AsyncIterator[ReceivedPart]:
    """Yield each part of a multipart body as soon as it is complete and spooled to disk."""
    events = _Events()
    parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    writer: TempWriter | None = None
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the {max_bytes // (1024 * 1024)} MiB limit")
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise BadRequest(f"malformed multipart body: {exc}") from None
            while events.parts:
                part = events.parts[0]
                if not part.ended:
                    if part.buffered >= PART_BUFFER_BYTES:
                        writer = writer or storage.temp_writer()
                        await writer.write(_take(part))
                    break
                events.parts.pop(0)
                writer = writer or storage.temp_writer()
                spooled = await writer.close(_take(part))
                writer = None
                yield ReceivedPart(spooled, part.headers.get("content-type"))
        if not events.finished:
            raise BadRequest("multipart body ends before its closing boundary (truncated request?)")
    finally:
        if writer is not None:
            await writer.abort()


def _take(part: _PartState) -> bytes:
    data = b"".join(part.buffer)
    part.buffer.clear()
    part.buffered = 0
    return data


async def read_single(chunks: AsyncIterable[bytes], storage: FileStorage, max_bytes: int) -> ReceivedPart:
    """Spool a whole single-part body (Content-Type application/dicom)."""
    writer = storage.temp_writer()
    buffer: list[bytes] = []
    buffered = received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the {max_bytes // (1024 * 1024)} MiB limit")
            buffer.append(chunk)
            buffered += len(chunk)
            if buffered >= PART_BUFFER_BYTES:
                await writer.write(b"".join(buffer))
                buffer.clear()
                buffered = 0
        if received == 0:
            raise BadRequest("the request body is empty")
        return ReceivedPart(await writer.close(b"".join(buffer)), None)
    except BaseException:
        await writer.abort()
        raise
