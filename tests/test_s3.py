"""The S3 backend (dicomweb/storage/s3.py) against a real S3 server: Ceph's radosgw from Debian, started by
tests/s3/start_rgw.sh for this session (``.ci/run`` installs Ceph). Without Ceph the tests skip locally and fail under
``CI=true``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dicomweb.storage.s3 import PART_BYTES, ObjectExists, S3Bucket, S3Location

from .conftest import create_bucket


@pytest.fixture
def bucket(radosgw: dict[str, str], request: pytest.FixtureRequest) -> S3Bucket:
    """A new bucket for the test, as the archive would be configured for it (path-style, a key prefix)."""
    name = f"t{abs(hash(request.node.nodeid)) % 10**12}"
    storage = S3Bucket(
        S3Location(name, endpoint=radosgw["S3_ENDPOINT_URL"], prefix="archive/", path_style=True),
        access_key_id=radosgw["AWS_ACCESS_KEY_ID"],
        secret_access_key=radosgw["AWS_SECRET_ACCESS_KEY"],
    )
    create_bucket(radosgw, name)
    return storage


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def collect(chunks: Any) -> bytes:
    return b"".join([chunk async for chunk in chunks])


KEY = "files/1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm"


class TestObjects:
    def test_put_then_read_whole_and_ranges(self, bucket: S3Bucket, tmp_path: Path) -> None:
        """A file goes up under its key and comes back byte for byte: whole, from an offset, a range, and several
        ranges at once (a frame's fragments)."""
        data = os.urandom(300_000)
        (tmp_path / "part").write_bytes(data)
        bucket.put_now(tmp_path / "part", KEY)
        assert run(collect(bucket.read(KEY))) == data
        assert run(collect(bucket.read(KEY, start=1000))) == data[1000:]
        assert run(collect(bucket.read(KEY, start=1000, end=5000))) == data[1000:5000]
        assert bucket.read_ranges_now(KEY, [(10, 20), (200_000, 65_536), (0, 1)]) == [
            data[10:30],
            data[200_000:265_536],
            data[:1],
        ]
        found = run(bucket.stat(KEY))
        assert found is not None and found.size == len(data) and found.relative_path == KEY

    def test_never_over_an_existing_object(self, bucket: S3Bucket, tmp_path: Path) -> None:
        """A second upload under a taken key is refused (If-None-Match: *) and the stored object is unchanged."""
        (tmp_path / "first").write_bytes(b"first")
        (tmp_path / "second").write_bytes(b"second")
        bucket.put_now(tmp_path / "first", KEY)
        with pytest.raises(ObjectExists, match="already stored"):
            bucket.put_now(tmp_path / "second", KEY)
        assert run(collect(bucket.read(KEY))) == b"first"

    def test_large_file_in_parts(self, bucket: S3Bucket, tmp_path: Path) -> None:
        """A file larger than one part goes up as a multipart upload and is read back whole and by range."""
        size = 2 * PART_BYTES + 12345
        source = tmp_path / "large"
        digest = hashlib.sha256()
        with source.open("wb") as out:
            for _ in range(size // (1 << 20) + 1):
                block = os.urandom(1 << 20)
                out.write(block)
        source.write_bytes(source.read_bytes()[:size])
        digest.update(source.read_bytes())
        bucket.put_now(source, KEY)

        async def hashed() -> tuple[str, int]:
            back = hashlib.sha256()
            chunks = 0
            async for chunk in bucket.read(KEY):
                back.update(chunk)
                chunks += 1
            return back.hexdigest(), chunks

        sha256, chunks = run(hashed())
        assert sha256 == digest.hexdigest() and chunks > 1  # streamed, not one buffer
        middle = PART_BYTES - 10
        assert bucket.read_ranges_now(KEY, [(middle, 20)]) == [source.read_bytes()[middle : middle + 20]]

    def test_large_upload_memory_bounded(self, radosgw: dict[str, str], bucket: S3Bucket, tmp_path: Path) -> None:
        """A 160 MB file goes up in parts read as they are sent: the uploading process grows by far less than the
        file (PARALLEL_PARTS parts at the most in memory)."""
        source = tmp_path / "big"
        with source.open("wb") as out:
            out.truncate(160 * 10**6)
        script = f"""
import resource, sys
from pathlib import Path
from dicomweb.storage.s3 import S3Location, S3Bucket
storage = S3Bucket(S3Location({bucket.location.bucket!r}, endpoint={radosgw["S3_ENDPOINT_URL"]!r}, prefix="archive/",
                    path_style=True), access_key_id=sys.argv[1], secret_access_key=sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
storage.put_now(Path({str(source)!r}), "files/big.dcm")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""
        credentials = [radosgw["AWS_ACCESS_KEY_ID"], radosgw["AWS_SECRET_ACCESS_KEY"]]
        done = subprocess.run([sys.executable, "-c", script, *credentials], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        grown = int(done.stdout.strip())
        assert grown < 80 * 10**6, f"the upload grew the process by {grown / 1e6:.0f} MB"
        found = run(bucket.stat("files/big.dcm"))
        assert found is not None and found.size == 160 * 10**6

    def test_missing_object(self, bucket: S3Bucket) -> None:
        """Reading an object that is not there raises FileNotFoundError, as a missing file does."""
        with pytest.raises(FileNotFoundError):
            run(collect(bucket.read("files/none.dcm")))
        with pytest.raises(FileNotFoundError):
            bucket.read_ranges_now("files/none.dcm", [(0, 10)])
        assert run(bucket.stat("files/none.dcm")) is None

    def test_listing_and_removal(self, bucket: S3Bucket, tmp_path: Path) -> None:
        """A listing covers every object of a folder across pages (more than S3's 1,000 keys a page) and nothing
        outside it; removal takes them all, and removing what is gone is no error."""
        (tmp_path / "small").write_bytes(b"x")

        async def put_many(count: int) -> None:
            queue = [f"files/s/{n:05d}.dcm" for n in range(count)]

            async def worker() -> None:
                while queue:
                    await asyncio.to_thread(bucket.put_now, tmp_path / "small", queue.pop())

            await asyncio.gather(*(worker() for _ in range(16)))

        async def listed(folder: str) -> list[str]:
            return [found.relative_path async for found in bucket.listing(folder)]

        run(put_many(1100))
        bucket.put_now(tmp_path / "small", "thumbnails/1.png")
        keys = run(listed("files/"))
        assert sorted(keys) == [f"files/s/{n:05d}.dcm" for n in range(1100)]
        run(bucket.remove(keys + ["files/gone.dcm"]))
        assert run(listed("files/")) == []
        assert run(listed("thumbnails/")) == ["thumbnails/1.png"]

    def test_wrong_credentials_refused(self, radosgw: dict[str, str], bucket: S3Bucket, tmp_path: Path) -> None:
        """Wrong credentials: the upload fails with the server's refusal, and the message carries no secret."""
        wrong = S3Bucket(
            bucket.location, access_key_id=radosgw["AWS_ACCESS_KEY_ID"], secret_access_key="not-the-secret-key-at-all"
        )
        (tmp_path / "part").write_bytes(b"x")
        with pytest.raises(Exception) as refused:
            wrong.put_now(tmp_path / "part", KEY)
        assert "not-the-secret-key-at-all" not in str(refused.value) and "403" in str(refused.value)
        assert "secret" not in repr(wrong)
        assert run(bucket.stat(KEY)) is None
