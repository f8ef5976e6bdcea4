"""Stored instance files as objects in an S3-compatible bucket (AWS S3, Ceph radosgw, MinIO), through obstore.

The S3 backend of the storage area (``S3Storage``; the bucket itself, ``S3Bucket``): the same relative paths as
under the data folder (``files/<study>/<series>/<sop>.<random>.dcm``), as keys under an optional prefix. What the
archive needs of it, and no more: put a received file under its final key, never over an existing object; read an
object whole as a stream, or byte ranges of it (a frame, a bulk data element) without reading the rest; delete; list a
folder for reconciliation.

obstore (the Rust ``object_store`` crate of Apache Arrow, with async Python bindings) was measured against aiobotocore
on the same radosgw, 2 cores: 3 to 5 times less client CPU per request (PUT 512 KiB 0.7 against 2.0-2.3 ms, ranged
GET 64 KiB 0.2-0.3 against 1.2-1.4 ms, GET 10 KiB 0.3-0.4 against 1.0-1.3 ms) and 1.2 to 2.4 times the requests per
second; our server's CPU is what limits it, so the client's CPU is what counts.

Credentials come from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``), which obstore reads itself, unless given here; they are never logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import S3Store

from .temp import Spool, check_relative, temp_name

if TYPE_CHECKING:
    from obstore.store import ClientConfig

# Objects up to this size go up in one PUT with If-None-Match: * (an object never replaces another); larger ones as a
# multipart upload of parts of this size, read from the file as they are sent (memory stays bounded). S3's smallest
# part is 5 MiB (except the last).
PART_BYTES = 8 * 1024 * 1024
PARALLEL_PARTS = 4  # parts of one multipart upload in flight: 4 x 8 MiB at the most in memory per upload
READ_CHUNK_BYTES = 1024 * 1024  # the least a streamed GET hands over at once
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit)
LOST_AND_FOUND = "lost+found"  # the prefix orphan objects are moved under (as reconcile.py's folder)


@dataclass(frozen=True)
class S3Location:
    """Where the objects are: a bucket, an endpoint (None: AWS), a key prefix, a region, and whether to address the
    bucket in the path (``http://host/bucket/key``), as radosgw and MinIO usually need, or in the host name."""

    bucket: str
    endpoint: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    path_style: bool = False


@dataclass(frozen=True)
class StoredObject:
    """One object of a listing: its path relative to the storage area, size and time of last change."""

    relative_path: str
    size: int
    modified: datetime


class ObjectExists(FileExistsError):
    """An object is already stored under the key: nothing was written (a stored file is never replaced)."""


class S3Bucket:
    """The bucket, as a storage area of relative paths."""

    def __init__(
        self, location: S3Location, *, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> None:
        self.location = location
        self._credentials = (access_key_id, secret_access_key)
        config: dict[str, Any] = {
            "region": location.region,
            "virtual_hosted_style_request": not location.path_style,
        }
        if location.endpoint:
            config["endpoint"] = location.endpoint
        if access_key_id and secret_access_key:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        client: ClientConfig = {"allow_http": bool(location.endpoint and location.endpoint.startswith("http://"))}
        self._store = S3Store(
            location.bucket, prefix=location.prefix.strip("/") or None, client_options=client, **config
        )

    def __reduce__(self) -> tuple[Any, ...]:  # for the importer's processes: built again there, from the same values
        access_key_id, secret_access_key = self._credentials
        return (_bucket, (self.location, access_key_id, secret_access_key))

    @property
    def store(self) -> S3Store:
        return self._store

    def __repr__(self) -> str:  # never the credentials
        return f"S3Bucket(bucket={self.location.bucket!r}, endpoint={self.location.endpoint!r})"

    async def put_file(self, path: Path, relative_path: str) -> None:
        """Upload a local file (a received instance) under its key. ObjectExists if the key is taken.

        A file up to PART_BYTES is one conditional PUT. A larger one is a multipart upload: S3 has no conditional
        multipart completion everywhere, so the key must be new, as the archive's keys are (their last part is
        random); the object appears whole when the upload completes, or not at all."""
        size = path.stat().st_size
        try:
            if size <= PART_BYTES:
                await obstore.put_async(self._store, relative_path, path, mode="create")
            else:
                await obstore.put_async(
                    self._store,
                    relative_path,
                    path,  # read by obstore in parts as they are sent, off the event loop
                    use_multipart=True,
                    chunk_size=PART_BYTES,
                    max_concurrency=PARALLEL_PARTS,
                )
        except AlreadyExistsError as exc:
            raise ObjectExists(f"an object is already stored under {relative_path}") from exc

    async def read(self, relative_path: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The object's bytes from ``start`` to ``end`` (exclusive; None: its end), streamed. FileNotFoundError if
        there is no such object."""
        options: dict[str, Any] = {}
        if end is not None:
            if end <= start:
                return
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        result = await obstore.get_async(self._store, relative_path, options=options or None)  # type: ignore[arg-type]
        async for chunk in result.stream(min_chunk_size=READ_CHUNK_BYTES):
            yield bytes(chunk)

    async def read_ranges(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Byte ranges ``(offset, length)`` of the object (a frame's fragments), requested together; nothing else
        of the object is read. FileNotFoundError if there is no such object."""
        if not ranges:
            return []
        starts = [offset for offset, _ in ranges]
        ends = [offset + length for offset, length in ranges]
        found = await obstore.get_ranges_async(self._store, relative_path, starts=starts, ends=ends)
        return [bytes(part) for part in found]

    async def stat(self, relative_path: str) -> StoredObject | None:
        """The object's size and time of change; None if there is none."""
        try:
            meta = await obstore.head_async(self._store, relative_path)
        except FileNotFoundError:
            return None
        return StoredObject(relative_path, meta["size"], meta["last_modified"])

    async def remove(self, relative_paths: Iterable[str]) -> None:
        """Delete objects; one already gone is no error."""
        keys = list(relative_paths)
        for first in range(0, len(keys), DELETE_BATCH):
            await obstore.delete_async(self._store, keys[first : first + DELETE_BATCH])

    async def listing(self, folder: str = "files/") -> AsyncIterator[StoredObject]:
        """Every object under a folder of the storage area, page by page (S3 lists 1,000 keys a request)."""
        async for page in obstore.list(self._store, prefix=folder, chunk_size=DELETE_BATCH):
            for meta in page:
                yield StoredObject(meta["path"], meta["size"], meta["last_modified"])


def _bucket(location: S3Location, access_key_id: str | None, secret_access_key: str | None) -> S3Bucket:
    return S3Bucket(location, access_key_id=access_key_id, secret_access_key=secret_access_key)


class StorageUnavailable(OSError):
    """The bucket cannot be reached or does not exist: the archive cannot store or read instances."""


class S3Storage(Spool):
    """The S3 backend: received files are spooled and parsed in the local ``tmp/`` as for the folder, then placed
    as objects under the same relative paths (``files/...``) as keys under the prefix. Reads stream the object, or
    fetch byte ranges of it (a frame, a bulk data element); a reader that needs a file (pydicom in the CPU processes,
    DIMSE sending) gets a temp copy in ``tmp/``, removed after it. The sync calls of obstore release the GIL and run
    in the worker thread that calls them."""

    kind = "s3"

    def __init__(self, root: Path, bucket: S3Bucket) -> None:
        super().__init__(root)
        self.bucket = bucket
        self._store = bucket.store

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r})"

    def describe(self) -> str:
        location = self.bucket.location
        prefix = f" under {location.prefix!r}" if location.prefix else ""
        return f"objects in S3 bucket {location.bucket!r} at {location.endpoint or 'AWS'}{prefix}"

    def prepare(self) -> None:
        """Create ``tmp/``, sweep it, and check that the bucket is there (StorageUnavailable naming it if not)."""
        self.prepare_temp()
        self.check_bucket()

    def check_bucket(self) -> None:
        """One listing request: StorageUnavailable, naming the bucket and endpoint, unless it answers (blocking)."""
        try:
            for _ in obstore.list(self._store, prefix="files/", chunk_size=1):
                break
        except Exception as exc:
            raise StorageUnavailable(f"{self.describe()} cannot be listed: {_first_line(exc)}") from None

    def local_path(self, relative_path: str) -> Path | None:
        check_relative(relative_path)
        return None  # objects are no local files

    @contextlib.contextmanager
    def local_copy(self, relative_path: str) -> Iterator[Path]:
        """The object downloaded, streamed, into a temp file that is removed after the block (blocking).
        FileNotFoundError if there is no such object."""
        target = self.tmp / temp_name()
        try:
            self.copy_now(relative_path, target)
            yield target
        finally:
            target.unlink(missing_ok=True)

    def copy_now(self, relative_path: str, target: Path) -> None:
        """The object downloaded into ``target``, streamed (blocking; memory stays bounded whatever its size).
        FileNotFoundError if there is no such object (and then no file is made)."""
        check_relative(relative_path)
        result = obstore.get(self._store, relative_path)
        with open(target, "wb") as file:
            for chunk in result.stream(min_chunk_size=READ_CHUNK_BYTES):
                file.write(chunk)

    def list_now(self) -> Iterator[tuple[str, int]]:
        """Every object under ``files/`` as listed now, with its size, a page (1,000 keys) per request (blocking).
        Each key is a path inside ``files/``: obstore fails the listing (InvalidPathError) at a key with a ``.``,
        ``..`` or empty segment, which a local copy named after it could follow out of its folder."""
        for page in obstore.list(self._store, prefix="files/", chunk_size=DELETE_BATCH):
            for meta in page:
                yield meta["path"], meta["size"]

    def place_now(self, temp: Path, relative_path: str) -> None:
        """Upload a received temp file under its final key (``put_now``), then remove the temp file (blocking; call
        from a worker thread). On failure the temp file stays in tmp/ for the store to discard; no object is left."""
        self.put_now(temp, relative_path)
        temp.unlink(missing_ok=True)

    def put_now(self, path: Path, relative_path: str) -> None:
        """Upload a local file under a key (blocking), never over an object: a file up to PART_BYTES is one PUT with
        If-None-Match: * (ObjectExists if the key is taken), a larger one a multipart upload under a new key (its
        last part is random), read from the file part by part."""
        check_relative(relative_path)
        size = path.stat().st_size
        try:
            if size <= PART_BYTES:
                obstore.put(self._store, relative_path, path, mode="create")
            else:
                obstore.put(
                    self._store,
                    relative_path,
                    path,
                    use_multipart=True,
                    chunk_size=PART_BYTES,
                    max_concurrency=PARALLEL_PARTS,
                )
        except AlreadyExistsError as exc:
            raise ObjectExists(f"an object is already stored under {relative_path}") from exc

    async def remove(self, relative_paths: Iterable[str]) -> None:
        keys = [p for p in relative_paths if check_relative(p)]
        await self.bucket.remove(keys)

    def remove_now(self, relative_paths: Iterable[str]) -> None:
        keys = [p for p in relative_paths if check_relative(p)]
        for first in range(0, len(keys), DELETE_BATCH):
            obstore.delete(self._store, keys[first : first + DELETE_BATCH])

    async def read(self, relative_path: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_relative(relative_path)
        async for chunk in self.bucket.read(relative_path, start, end):
            yield chunk

    async def read_bytes(self, relative_path: str) -> bytes:
        check_relative(relative_path)
        result = await obstore.get_async(self._store, relative_path)
        return bytes(await result.bytes_async())

    def read_ranges_now(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Byte ranges ``(offset, length)`` of the object, in ranged GETs (blocking); nothing else is read."""
        check_relative(relative_path)
        if not ranges:
            return []
        starts = [offset for offset, _ in ranges]
        ends = [offset + length for offset, length in ranges]
        return [bytes(part) for part in obstore.get_ranges(self._store, relative_path, starts=starts, ends=ends)]

    async def missing(self, relative_paths: Sequence[str]) -> list[str]:
        """Those of the paths that name no object: one listing per series folder (1,000 keys a request), not a
        request per object."""
        folders = sorted({p.rsplit("/", 1)[0] + "/" for p in relative_paths if check_relative(p)})
        present: set[str] = set()
        for folder in folders:
            async for stored in self.bucket.listing(folder):
                present.add(stored.relative_path)
        return [p for p in relative_paths if p not in present]

    async def move_to_lost_found(self, relative_path: str) -> str:
        """Move an object no row names to ``lost+found/`` at the same relative path (copied, then deleted: S3 has no
        rename); where it went. Its key has a random part, so the copy replaces nothing but an earlier copy of the
        same object (a move whose delete failed)."""
        check_relative(relative_path)
        target = f"{LOST_AND_FOUND}/{relative_path}"
        await obstore.copy_async(self._store, relative_path, target)
        await obstore.delete_async(self._store, relative_path)
        return target

    def check_writable(self) -> None:
        """Raise OSError unless the temp folder takes a file and the bucket answers (for /readyz)."""
        self.check_temp_writable()
        self.check_bucket()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
