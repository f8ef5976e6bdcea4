"""The streaming multipart/related reader: framing, preambles and the per-request limits, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from dicomweb.errors import BadRequest, DicomwebError, PayloadTooLarge
from dicomweb.multipart import MAX_PART_HEADERS, read_multipart
from dicomweb.storage import FileStorage

BOUNDARY = b"b0und4ry"
MAX_PARTS = 3
MAX_HEADER_BYTES = 256


def body(
    parts: Iterable[bytes], headers: bytes = b"Content-Type: application/dicom\r\n", preamble: bytes = b""
) -> bytes:
    """A multipart/related body with the same headers on every part."""
    chunks = [preamble]
    for part in parts:
        chunks += [b"--" + BOUNDARY + b"\r\n", headers, b"\r\n", part, b"\r\n"]
    chunks.append(b"--" + BOUNDARY + b"--\r\n")
    return b"".join(chunks)


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(tmp_path: Path, data: bytes, chunk_size: int = 7) -> list[bytes]:
    """The parts' bytes, read in chunks of ``chunk_size``; the storage's tmp/ folder is left empty."""
    storage = FileStorage(tmp_path)
    storage.prepare()

    async def go() -> list[bytes]:
        contents = []
        stream = read_multipart(
            _chunks(data, chunk_size),
            BOUNDARY,
            storage,
            1 << 30,
            max_parts=MAX_PARTS,
            max_header_bytes=MAX_HEADER_BYTES,
        )
        async for part in stream:
            contents.append(part.file.path.read_bytes())
            part.file.path.unlink()
        return contents

    try:
        return asyncio.run(go())
    finally:
        assert not list(storage.tmp.iterdir())


def refused(tmp_path: Path, data: bytes, chunk_size: int = 7) -> DicomwebError:
    with pytest.raises(DicomwebError) as info:
        read(tmp_path, data, chunk_size)
    return info.value


class TestFraming:
    """Parts come out byte-exact, however the body is cut into chunks."""

    @pytest.mark.parametrize("chunk_size", [1, 7, 4096])
    def test_parts(self, tmp_path: Path, chunk_size: int) -> None:
        """Two parts, one of them containing CRLF and dashes."""
        parts = [b"first\r\n--not-the-boundary", b"\x00" * 1000]
        assert read(tmp_path, body(parts), chunk_size) == parts

    @pytest.mark.parametrize("preamble", [b"\r\n", b"This is a preamble.\r\n", b"--b0und\r\nx" * 3 + b"\r\n"])
    @pytest.mark.parametrize("chunk_size", [1, 5, 4096])
    def test_preamble_ignored(self, tmp_path: Path, preamble: bytes, chunk_size: int) -> None:
        """Text before the first boundary is ignored (RFC 2046 §5.1.1), even one that resembles the boundary."""
        assert read(tmp_path, body([b"data"], preamble=preamble), chunk_size) == [b"data"]

    def test_no_boundary(self, tmp_path: Path) -> None:
        """A short body without the boundary: 400 naming the boundary it lacks."""
        error = refused(tmp_path, b"GIF89a" * 10)
        assert isinstance(error, BadRequest) and "no multipart boundary --b0und4ry" in error.detail

    def test_truncated(self, tmp_path: Path) -> None:
        """A body without its closing boundary: 400."""
        error = refused(tmp_path, body([b"data"])[:-20])
        assert isinstance(error, BadRequest) and "closing boundary" in error.detail


class TestLimits:
    """Too many parts: 413; too many header bytes or preamble: 400; each message names the limit."""

    def test_parts_up_to_the_limit(self, tmp_path: Path) -> None:
        """Exactly max_parts parts are read."""
        assert len(read(tmp_path, body([b"x"] * MAX_PARTS))) == MAX_PARTS

    @pytest.mark.parametrize("chunk_size", [1, 65536])
    def test_too_many_parts(self, tmp_path: Path, chunk_size: int) -> None:
        """One part more: 413, and the parts read so far are the caller's to discard (none left in tmp/ here)."""
        error = refused(tmp_path, body([b"x"] * (MAX_PARTS + 1)), chunk_size)
        assert isinstance(error, PayloadTooLarge) and f"more than {MAX_PARTS} parts" in error.detail

    @pytest.mark.parametrize(
        "headers",
        [
            b"Content-Type: application/dicom\r\nX-Long: " + b"v" * MAX_HEADER_BYTES + b"\r\n",
            b"X-" + b"n" * MAX_HEADER_BYTES + b": v\r\n",
            b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(8)),
        ],
        ids=["long-value", "long-name", "many-lines"],
    )
    @pytest.mark.parametrize("chunk_size", [3, 65536])
    def test_part_headers(self, tmp_path: Path, headers: bytes, chunk_size: int) -> None:
        """More header bytes than the limit in one part, in one line or in several: 400."""
        error = refused(tmp_path, body([b"x"], headers=headers), chunk_size)
        assert isinstance(error, BadRequest) and f"more than {MAX_HEADER_BYTES} bytes of headers" in error.detail

    def test_header_lines(self, tmp_path: Path) -> None:
        """More header lines than MAX_PART_HEADERS, however short: 400."""
        storage = FileStorage(tmp_path)
        storage.prepare()
        headers = b"".join(b"a: \r\n" for _ in range(MAX_PART_HEADERS + 1))

        async def go() -> None:
            stream = read_multipart(
                _chunks(body([b"x"], headers=headers), 65536), BOUNDARY, storage, 1 << 30, max_parts=3,
                max_header_bytes=1 << 20,
            )  # fmt: skip
            async for _ in stream:
                pass

        with pytest.raises(BadRequest, match=f"more than {MAX_PART_HEADERS} headers"):
            asyncio.run(go())

    @pytest.mark.parametrize("chunk_size", [1, 100, 65536])
    def test_preamble(self, tmp_path: Path, chunk_size: int) -> None:
        """A preamble longer than the limit: 400 (it is not held in memory without bound)."""
        error = refused(tmp_path, body([b"x"], preamble=b"p" * (MAX_HEADER_BYTES * 2) + b"\r\n"), chunk_size)
        assert isinstance(error, BadRequest) and f"more than {MAX_HEADER_BYTES} bytes before" in error.detail

    def test_preamble_at_the_limit(self, tmp_path: Path) -> None:
        """A preamble of exactly the limit is ignored."""
        for chunk_size in (1, 65536):
            preamble = b"p" * MAX_HEADER_BYTES + b"\r\n"
            assert read(tmp_path, body([b"x"], preamble=preamble), chunk_size) == [b"x"]
