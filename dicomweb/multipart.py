"""Streaming multipart reader for STOW-RS bodies (multipart/related, RFC 2387) and the reporting API's uploads
(multipart/form-data, RFC 7578: the same framing): each part is spooled to a temp file.

Guarantees: server memory stays bounded whatever the request size (a part's bytes are held at most
``PART_BUFFER_BYTES`` at a time before they are written out); parts are byte-exact; a body that ends before its
closing boundary, or that is not multipart at all, raises ``BadRequest``; more than ``max_bytes`` raises
``PayloadTooLarge``. The caller owns the spooled files and must discard them on failure; on an exception the
reader removes the part it was writing.

Limits (``DICOMWEB_MAX_PARTS``, ``DICOMWEB_MAX_PART_HEADER_BYTES``): more than ``max_parts`` parts raises
``PayloadTooLarge`` (413: the content is more than the server is willing to process, RFC 9110 §15.5.14, and
PS3.18's Store transaction lists 413 among its status codes; the request is well-formed, so not 400, and the
client's remedy is the same as for too many bytes: split it). More than ``max_header_bytes`` of headers in one
part, or of preamble before the first boundary (RFC 2046 §5.1.1 allows one and says to ignore it), raises
``BadRequest``: no real client sends that much, and it would otherwise be held in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from .errors import BadRequest, PayloadTooLarge
from .storage import SpooledFile, Storage, TempWriter

PART_BUFFER_BYTES = 1024 * 1024  # bytes of one part held in memory before they go to its temp file
MAX_PART_HEADERS = 100  # header lines in one part (a STOW part has one to four); the byte limit applies as well


@dataclass(frozen=True)
class ReceivedPart:
    """One complete body part: its spooled file and its headers (names in lower case)."""

    file: SpooledFile
    headers: Mapping[str, str]

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


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

    def __init__(self, max_parts: int, max_header_bytes: int) -> None:
        self.parts: list[_PartState] = []
        self.finished = False
        self.count = 0
        self.max_parts = max_parts
        self.max_header_bytes = max_header_bytes

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
        self.count += 1
        if self.count > self.max_parts:
            raise PayloadTooLarge(
                f"the request has more than {self.max_parts} parts; send at most {self.max_parts} per request"
            )
        self.parts.append(_PartState())

    def header_limit(self) -> BadRequest:
        return BadRequest(f"a multipart part has more than {self.max_header_bytes} bytes of headers")

    def _count_header(self, size: int) -> None:
        self.current.header_bytes += size
        if self.current.header_bytes > self.max_header_bytes:
            raise self.header_limit()

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


class _Preamble:
    """Drops what comes before the first boundary delimiter (RFC 2046 §5.1.1: the preamble "is to be ignored"),
    holding at most ``limit`` bytes of it; the parser itself accepts none."""

    def __init__(self, boundary: bytes, limit: int) -> None:
        self.delimiter = b"--" + boundary
        self.limit = limit
        self.pending: bytearray | None = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        """The body from its first delimiter on, once it has arrived; empty before."""
        if self.pending is None:
            return chunk
        self.pending += chunk
        # The first delimiter begins the body or follows a CRLF (RFC 2046 §5.1.1).
        if self.pending.startswith(self.delimiter):
            size = start = 0
        else:
            size = self.pending.find(b"\r\n" + self.delimiter)
            start = size + 2
        # Not found yet: the end of what arrived may be the start of the delimiter, which is not preamble.
        if size > self.limit or (size < 0 and len(self.pending) > self.limit + len(self.delimiter) + 2):
            raise BadRequest(f"the multipart body has more than {self.limit} bytes before its first boundary")
        if size < 0:
            return b""
        body = bytes(self.pending[start:])
        self.pending = None
        return body


async def read_multipart(
    chunks: AsyncIterable[bytes],
    boundary: bytes,
    storage: Storage,
    max_bytes: int,
    *,
    max_parts: int,
    max_header_bytes: int,
) -> AsyncIterator[ReceivedPart]:
    """Yield each part of a multipart body as soon as it is complete and spooled to disk."""
    events = _Events(max_parts, max_header_bytes)
    parser = MultipartParser(
        boundary,
        events.callbacks(),  # type: ignore[arg-type]
        max_header_count=MAX_PART_HEADERS,
        max_header_size=max_header_bytes,
    )
    preamble = _Preamble(boundary, max_header_bytes)
    writer: TempWriter | None = None
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the {max_bytes // (1024 * 1024)} MiB limit")
            try:
                parser.write(preamble.feed(chunk))
            except MultipartParseError as exc:
                # The parser's own limits, set from ours, in our words.
                if str(exc).startswith("Maximum header size"):
                    raise events.header_limit() from None
                if str(exc).startswith("Maximum header count"):
                    raise BadRequest(f"a multipart part has more than {MAX_PART_HEADERS} headers") from None
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
                yield ReceivedPart(spooled, part.headers)
        if preamble.pending is not None:
            raise BadRequest(f"the body has no multipart boundary --{boundary.decode('latin-1')}")
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


async def read_single(chunks: AsyncIterable[bytes], storage: Storage, max_bytes: int) -> ReceivedPart:
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
        return ReceivedPart(await writer.close(b"".join(buffer)), {})
    except BaseException:
        await writer.abort()
        raise
