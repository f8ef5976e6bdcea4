"""Stored instance files as objects in an S3-compatible bucket (AWS S3, Ceph radosgw, MinIO), through obstore.

The S3 backend of the storage area (``S3Storage``; the bucket itself, ``S3Bucket``): the same relative paths as
under the data folder (``files/<study>/<series>/<sop>.<random>.dcm``), as keys under an optional prefix. What the
archive needs of it, and no more: put a received file under its final key, never over an existing object (a file
larger than one part is uploaded while it arrives, and the upload completed when its instance is placed:
``StreamingWriter``); read an object whole as a stream, or byte ranges of it (a frame, a bulk data element) without
reading the rest; delete; list a folder for reconciliation.

obstore (the Rust ``object_store`` crate of Apache Arrow, with async Python bindings) was measured against aiobotocore
on the same radosgw, 2 cores: 3 to 5 times less client CPU per request (PUT 512 KiB 0.7 against 2.0-2.3 ms, ranged
GET 64 KiB 0.2-0.3 against 1.2-1.4 ms, GET 10 KiB 0.3-0.4 against 1.0-1.3 ms) and 1.2 to 2.4 times the requests per
second; our server's CPU is what limits it, so the client's CPU is what counts.

Credentials come from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``), which obstore reads itself, unless given here; they are never logged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import S3Store
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag, Tag

from .temp import Spool, SpooledFile, TempWriter, check_relative, temp_name

if TYPE_CHECKING:
    from obstore import WritableFile
    from obstore.store import ClientConfig

log = logging.getLogger("dicomweb")

# Objects up to this size go up in one PUT with If-None-Match: * (an object never replaces another); larger ones as a
# multipart upload of parts of this size, read from the file as they are sent (memory stays bounded). S3's smallest
# part is 5 MiB (except the last).
PART_BYTES = 8 * 1024 * 1024
PARALLEL_PARTS = 4  # parts of one multipart upload in flight: 4 x 8 MiB at the most in memory per upload
READ_CHUNK_BYTES = 1024 * 1024  # the least a streamed GET hands over at once
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit)
LOST_AND_FOUND = "lost+found"  # the prefix orphan objects are moved under (as reconcile.py's folder)
# The last of the UIDs an object's key is made of, in the order of a data set's tags: SOP Instance UID (0008,0018),
# Study Instance UID (0020,000D), Series Instance UID (0020,000E). A received file's first bytes are read up to it.
LAST_KEY_TAG = Tag("SeriesInstanceUID")


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

    def put_now(self, path: Path, relative_path: str) -> None:
        """Upload a local file (a received instance) under its key (blocking: obstore's sync call, which releases
        the GIL, in the calling worker thread). ObjectExists if the key is taken.

        A file up to PART_BYTES is one PUT with If-None-Match: *. A larger one is a multipart upload, read from the
        file part by part: S3 has no conditional multipart completion everywhere, so the key must be new, as the
        archive's keys are (their last part is random); the object appears whole when the upload completes, or not
        at all."""
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

    def read_ranges_now(self, relative_path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Byte ranges ``(offset, length)`` of the object (a frame's fragments), requested together (blocking);
        nothing else of the object is read. FileNotFoundError if there is no such object."""
        if not ranges:
            return []
        starts = [offset for offset, _ in ranges]
        ends = [offset + length for offset, length in ranges]
        return [bytes(part) for part in obstore.get_ranges(self._store, relative_path, starts=starts, ends=ends)]

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

    def temp_writer(self) -> TempWriter:
        return StreamingWriter(self.tmp / temp_name(), self)

    def begin_upload(self, head: bytes) -> MultipartUpload | None:
        """A multipart upload under the final key of the instance file that begins with ``head`` (a received part past
        PART_BYTES), sent ``head`` already; None if its first bytes give no valid Study, Series and SOP Instance UID
        (the file then goes up once received and parsed, as a smaller one). Blocking."""
        uids = _uids_in_header(head)
        try:
            relative_path = self.new_path(*uids) if uids else None
        except ValueError:  # an invalid UID, refused by the parse later
            relative_path = None
        if relative_path is None:
            return None
        upload = MultipartUpload(self._store, relative_path)
        try:
            upload.write(head)
        except BaseException:
            upload.abort()
            raise
        return upload

    def place_now(self, spooled: SpooledFile, relative_path: str) -> None:
        """Put a received temp file under its final key, then remove the temp file (blocking; call from a worker
        thread): a file whose multipart upload ran while it arrived (``StreamingWriter``) has its upload completed (its
        last part goes up and the object appears), any other is uploaded now (``put_now``). On failure the temp file
        stays in tmp/ for the store to discard; no object is left (short of a completion that fails half-way: then only
        an incomplete upload, which the bucket's lifecycle rule aborts, README "S3 storage")."""
        check_relative(relative_path)
        upload = spooled.upload
        if upload is not None:
            if upload.relative_path == relative_path:
                upload.complete()
                spooled.path.unlink(missing_ok=True)
                return
            upload.abort()
        self.put_now(spooled.path, relative_path)
        spooled.path.unlink(missing_ok=True)

    def put_now(self, path: Path, relative_path: str) -> None:
        """Upload a local file under a key (blocking), never over an object (``S3Bucket.put_now``)."""
        check_relative(relative_path)
        self.bucket.put_now(path, relative_path)

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
        return self.bucket.read_ranges_now(relative_path, ranges)

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


class MultipartUpload:
    """A multipart upload under an object's final key, fed as its bytes arrive: obstore's buffered writer, which
    sends a part each time PART_BYTES have come and holds at most PARALLEL_PARTS parts in flight (a write waits for one
    to finish), so at most (PARALLEL_PARTS + 1) x PART_BYTES in memory. Nothing is visible under the key until
    ``complete``; ``abort`` (S3's AbortMultipartUpload) drops the parts sent. Blocking: call from a worker thread."""

    def __init__(self, store: S3Store, relative_path: str) -> None:
        self.relative_path = relative_path
        self._writer: WritableFile = obstore.open_writer(
            store, relative_path, buffer_size=PART_BYTES, max_concurrency=PARALLEL_PARTS
        )
        self._lock = threading.Lock()
        self._open = True

    def write(self, data: bytes) -> None:
        """Send bytes on (those of the first write must be more than PART_BYTES: the upload is then multipart from
        the start, never a PUT that could replace an object)."""
        self._writer.write(data)

    def complete(self) -> None:
        """Send the last part and complete the upload: the object appears, whole."""
        with self._lock:
            if not self._open:
                raise OSError(f"the upload of {self.relative_path} was aborted")
            self._open = False
            self._writer.close()

    def abort(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            try:
                # obstore aborts a writer that leaves its context with an exception; it has no other abort call.
                self._writer.__exit__(UploadAborted, UploadAborted(), None)
            except Exception as exc:
                log.warning(
                    "aborting the upload of %s failed (%s); the bucket's lifecycle rule will abort it",
                    self.relative_path,
                    _first_line(exc),
                )


class UploadAborted(Exception):
    """A received file's upload is not to be completed (the store of its instance failed, or was refused)."""


class StreamingWriter(TempWriter):
    """The S3 backend's temp writer: a part is spooled, hashed and parsed in ``tmp/`` as for the folder, and once it
    has grown past PART_BYTES it also goes up, part by part as it arrives, as a multipart upload under its final key,
    which its first bytes give (``S3Storage.begin_upload``): a large instance's upload overlaps its receipt instead
    of following it. Placing the file completes the upload; discarding or aborting it aborts the upload. Should the
    upload fail while the part arrives, it is aborted and the file goes up from tmp/ once parsed, as a smaller one."""

    upload: MultipartUpload | None = None

    def __init__(self, path: Path, storage: S3Storage) -> None:
        super().__init__(path)
        self._storage = storage
        self._began = False  # an upload was begun, or could not be

    def _write(self, data: bytes) -> None:
        super()._write(data)
        try:
            if self.upload is not None:
                self.upload.write(data)
            elif not self._began and self.size > PART_BYTES:
                self._began = True
                self.upload = self._storage.begin_upload(self._head())
        except Exception as exc:
            log.warning(
                "uploading %s while it arrives failed (%s); it goes up once received", self.path.name, _first_line(exc)
            )
            if self.upload is not None:
                self.upload.abort()
                self.upload = None

    def _close(self, data: bytes) -> None:
        self._began = True  # a part complete before it grew past PART_BYTES has no receipt left to overlap
        super()._close(data)

    def _head(self) -> bytes:
        """The bytes received so far (PART_BYTES and a little more), read back from the temp file."""
        assert self._file is not None
        self._file.flush()
        return self.path.read_bytes()


def _uids_in_header(head: bytes) -> tuple[str, str, str] | None:
    """The Study, Series and SOP Instance UIDs of a PS3.10 file from its first bytes, or None. The data set is read
    up to the first tag past LAST_KEY_TAG, so never as far as Pixel Data; what it gives is checked again by the parse
    of the whole file (``Spool.path_for``)."""

    def past_key_tags(tag: BaseTag, vr: str | None, length: int) -> bool:
        return bool(tag > LAST_KEY_TAG)

    try:
        ds = read_partial(io.BytesIO(head), stop_when=past_key_tags)
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    except Exception:  # not a PS3.10 file, a UID missing, or the header longer than the bytes so far
        return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
