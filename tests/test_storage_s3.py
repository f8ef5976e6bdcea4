"""The archive on S3 (DICOMWEB_STORAGE=s3, dicomweb/storage/s3.py): a live server on a real socket whose instances are
objects in a bucket of a real radosgw (tests/s3/start_rgw.sh), through the whole DICOMweb round trip, the reporting
API's file download, ``dicomweb import`` and DIMSE C-STORE / C-GET."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import obstore
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomweb.config import Settings
from dicomweb.storage import SpooledFile, open_storage
from dicomweb.storage.s3 import PART_BYTES, StorageUnavailable

from .conftest import (
    LiveServer,
    PartialUpload,
    bucket_settings,
    free_port,
    multipart_uploads,
    run,
    shared_server,
    wait_until,
)
from .data import CT, JPEG2000, MR, MULTIFRAME_US, RT_DOSE, ct_instance, multipart, stow_headers
from .test_dimse import StorageNode, c_get, c_move, register, study_identifier

NATIVE_MULTIFRAME = RT_DOSE  # 15 native frames (implicit VR)
STORED = (CT, MR, JPEG2000, MULTIFRAME_US, NATIVE_MULTIFRAME)  # (MR_small_RLE.dcm is MR_small.dcm's UID)
CALLING = "MODALITY1"


@pytest.fixture(scope="module")
def s3_settings(radosgw: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The settings of an archive on a new bucket of its own, its key pair in a credentials file."""
    return bucket_settings(radosgw, tmp_path_factory.mktemp("aws"))


@pytest.fixture(scope="module")
def server(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory, s3_settings: dict[str, Any]
) -> Iterator[LiveServer]:
    """A server on the bucket, its DIMSE listener on a free port."""
    with shared_server(
        postgres_url, tmp_path_factory.mktemp("s3-archive"), dimse_port=free_port(), **s3_settings
    ) as live:
        live.db.fetch(
            "INSERT INTO dicom_node (ae_title, host, port, permissions) VALUES ($1, '127.0.0.1', 104, $2)",
            CALLING,
            ["store", "find", "get", "move"],
        )
        yield live


def objects(server: LiveServer, folder: str = "files/") -> dict[str, int]:
    """The bucket's objects under the archive's prefix: relative path -> size."""
    storage = open_storage(server.settings)

    async def listing() -> dict[str, int]:
        from dicomweb.storage.s3 import S3Storage

        assert isinstance(storage, S3Storage)
        return {o.relative_path: o.size async for o in storage.bucket.listing(folder)}

    found: dict[str, int] = run(listing())
    return found


def object_bytes(server: LiveServer, relative_path: str) -> bytes:
    storage = open_storage(server.settings)
    return run(storage.read_bytes(relative_path))  # type: ignore[no-any-return]


def stow(server: LiveServer, parts: list[bytes]) -> httpx.Response:
    return httpx.post(server.dicomweb + "/studies", content=multipart(parts), headers=stow_headers(), timeout=60)


def uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def instance_url(server: LiveServer, data: bytes) -> str:
    study, series, sop = uids(data)
    return f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}"


def temp_files(server: LiveServer) -> list[Path]:
    return list((server.data_dir / "tmp").glob("*"))


def path_of(server: LiveServer, sop: str) -> str:
    [row] = server.db.fetch("SELECT file_path FROM instance WHERE sop_instance_uid = $1", sop)
    return str(row[0])


@pytest.fixture(scope="module")
def stored(server: LiveServer) -> dict[Path, bytes]:
    """pydicom's files stored by STOW-RS: native, JPEG 2000, JPEG multi-frame, native multi-frame."""
    files = {path: path.read_bytes() for path in STORED}
    response = stow(server, list(files.values()))
    assert response.status_code == 200, response.text
    return files


class TestStoreAndRetrieve:
    """STOW-RS into the bucket, and every WADO-RS read back from it."""

    def test_objects_in_the_bucket_and_nothing_on_disk(self, server: LiveServer, stored: dict[Path, bytes]) -> None:
        """Each instance is one object under its row's path (the prefix in front), of the size and SHA-256 the row
        records; no files/ folder is made and tmp/ is left empty."""
        found = objects(server)
        for data in stored.values():
            path = path_of(server, uids(data)[2])
            [row] = server.db.fetch("SELECT file_size, file_sha256 FROM instance WHERE file_path = $1", path)
            assert found[path] == row[0]
            assert hashlib.sha256(object_bytes(server, path)).hexdigest() == row[1]
        assert not (server.data_dir / "files").exists()
        assert not temp_files(server)

    def test_instance_byte_for_byte(self, server: LiveServer, stored: dict[Path, bytes]) -> None:
        """WADO-RS of each instance as stored: the object's bytes, single part and multipart; the data set sent."""
        for data in stored.values():
            kept = object_bytes(server, path_of(server, uids(data)[2]))
            single = httpx.get(instance_url(server, data), headers={"Accept": "application/dicom; transfer-syntax=*"})
            assert single.status_code == 200 and single.content == kept
            assert pydicom.dcmread(io.BytesIO(kept)).PixelData == pydicom.dcmread(io.BytesIO(data)).PixelData
            accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
            multi = httpx.get(instance_url(server, data), headers={"Accept": accept})
            assert multi.status_code == 200 and kept in multi.content

    def test_study_streamed_and_transcoded(self, server: LiveServer, stored: dict[Path, bytes]) -> None:
        """A study as stored (objects read ahead, streamed) and transcoded to Explicit VR Little Endian (a temp copy
        for the CPU process): the instances' pixels come back."""
        data = stored[JPEG2000]
        study = uids(data)[0]
        as_stored = httpx.get(
            f"{server.dicomweb}/studies/{study}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        kept = object_bytes(server, path_of(server, uids(data)[2]))
        assert as_stored.status_code == 200 and kept in as_stored.content
        converted = httpx.get(instance_url(server, data), headers={"Accept": "application/dicom"})
        assert converted.status_code == 200, converted.text
        ds = pydicom.dcmread(io.BytesIO(converted.content))
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert (ds.pixel_array == pydicom.dcmread(JPEG2000).pixel_array).all()
        assert not temp_files(server)

    def test_metadata_and_bulk_data(self, server: LiveServer, stored: dict[Path, bytes]) -> None:
        """Metadata from the index; a BulkDataURI's value (the CT's pixels) read as a byte range of the object."""
        data = stored[CT]
        metadata = httpx.get(instance_url(server, data) + "/metadata")
        assert metadata.status_code == 200
        uri = metadata.json()[0]["7FE00010"]["BulkDataURI"]
        value = httpx.get(uri, headers={"Accept": "application/octet-stream"})
        assert value.status_code == 200 and value.content == pydicom.dcmread(CT).PixelData
        part = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == pydicom.dcmread(CT).PixelData[10:20]

    def test_frames_are_ranged_gets(
        self, server: LiveServer, stored: dict[Path, bytes], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A frame is fetched by a ranged GET of its bytes only (the offsets recorded at store time); a whole-object
        GET would fail here."""
        fetched: list[int] = []
        ranged = obstore.get_ranges

        def spy(store: Any, path: str, *, starts: list[int], ends: list[int]) -> Any:
            fetched.append(sum(e - s for s, e in zip(starts, ends, strict=True)))
            return ranged(store, path, starts=starts, ends=ends)

        def whole(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a whole-object GET for a frame")

        monkeypatch.setattr(obstore, "get_ranges", spy)
        monkeypatch.setattr(obstore, "get", whole)
        monkeypatch.setattr(obstore, "get_async", whole)
        native = pydicom.dcmread(NATIVE_MULTIFRAME)
        frame_bytes = native.Rows * native.Columns * native.BitsAllocated // 8
        response = httpx.get(
            instance_url(server, stored[NATIVE_MULTIFRAME]) + "/frames/3",
            headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
        )
        assert response.status_code == 200, response.text
        assert native.PixelData[2 * frame_bytes : 3 * frame_bytes] in response.content
        assert fetched == [frame_bytes] and frame_bytes * 10 < len(stored[NATIVE_MULTIFRAME])
        fetched.clear()
        jpeg = httpx.get(
            instance_url(server, stored[MULTIFRAME_US]) + "/frames/2",
            headers={"Accept": "multipart/related; type=image/jpeg; transfer-syntax=*"},
        )
        assert jpeg.status_code == 200, jpeg.text
        frame = pydicom.encaps.generate_frames(pydicom.dcmread(MULTIFRAME_US).PixelData, number_of_frames=30)
        next(frame)
        assert next(frame) in jpeg.content
        assert len(fetched) == 1 and fetched[0] * 10 < len(stored[MULTIFRAME_US])

    def test_rendered_and_thumbnail(self, server: LiveServer, stored: dict[Path, bytes]) -> None:
        """Rendered from a temp copy of the object; the temp copy is gone afterwards."""
        for path in (CT, JPEG2000):
            rendered = httpx.get(instance_url(server, stored[path]) + "/rendered", headers={"Accept": "image/png"})
            assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
            thumbnail = httpx.get(instance_url(server, stored[path]) + "/thumbnail")
            assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert not temp_files(server)

    def test_wado_uri(self, server: LiveServer, stored: dict[Path, bytes]) -> None:
        """WADO-URI: the object as stored, byte for byte, and a rendered JPEG."""
        study, series, sop = uids(stored[MR])
        query = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
        dicom = httpx.get(
            f"{server.url}/wado", params={**query, "contentType": "application/dicom", "transferSyntax": "*"}
        )
        assert dicom.status_code == 200 and dicom.content == object_bytes(server, path_of(server, sop))
        jpeg = httpx.get(f"{server.url}/wado", params=query)
        assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"


class TestGuarantees:
    """Nothing overwritten, nothing left behind, deleted objects gone."""

    def test_duplicate_never_overwrites(self, server: LiveServer) -> None:
        """The same bytes again: a success, one object. Other bytes under the same SOP Instance UID: refused
        (0x0111), the stored object kept as it was, the new one not left in the bucket."""
        study = pydicom.uid.generate_uid()
        first = ct_instance(study, sop_instance_uid=pydicom.uid.generate_uid())
        sop = uids(first)[2]
        assert stow(server, [first]).status_code == 200
        before = objects(server)
        assert stow(server, [first]).status_code == 200
        other = ct_instance(study, sop_instance_uid=sop, PatientName="Other^Name")
        refused = stow(server, [other])
        assert refused.status_code == 409 and '"00081197":{"vr":"US","Value":[273]}' in refused.text  # 0x0111
        assert objects(server) == before
        assert object_bytes(server, path_of(server, sop)) == first

    def test_failed_commit_leaves_no_object(self, server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every transaction fails after the objects were placed: each instance fails, and no object stays."""
        from dicomweb.db import index

        async def failing(*args: Any) -> None:
            raise asyncpg.exceptions.SerializationError("simulated failure after the objects were placed")

        monkeypatch.setattr(index, "add_counts", failing)
        before = objects(server)
        response = stow(server, [ct_instance(pydicom.uid.generate_uid()) for _ in range(3)])
        assert response.status_code == 409, response.text
        assert objects(server) == before
        assert not temp_files(server)

    def test_delete_removes_the_objects(self, server: LiveServer) -> None:
        study = pydicom.uid.generate_uid()
        parts = [ct_instance(study) for _ in range(2)]
        assert stow(server, parts).status_code == 200
        paths = [path_of(server, uids(p)[2]) for p in parts]
        assert all(p in objects(server) for p in paths)
        assert httpx.delete(f"{server.dicomweb}/studies/{study}").status_code in (200, 204)
        assert not any(p in objects(server) for p in paths)
        assert httpx.get(f"{server.dicomweb}/studies/{study}").status_code == 404

    def test_ready(self, server: LiveServer) -> None:
        """/readyz checks the bucket too: 200 while it answers."""
        assert httpx.get(server.url + "/readyz").status_code == 200

    def test_check_verify_on_the_bucket(self, server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
        """``dicomweb check --verify`` lists the bucket and streams its objects: an object of another size and one of
        the same size but other bytes are found; an orphan object written just now is left alone (unjudged)."""
        from dicomweb.check import check
        from dicomweb.storage.s3 import S3Storage

        study = pydicom.uid.generate_uid()
        parts = [ct_instance(study) for _ in range(3)]
        assert stow(server, parts).status_code == 200
        storage = open_storage(server.settings)
        assert isinstance(storage, S3Storage)
        shorter, changed, _ = (path_of(server, uids(p)[2]) for p in parts)
        obstore.put(storage.bucket.store, shorter, parts[0][:-10])
        obstore.put(storage.bucket.store, changed, parts[1][:-1] + bytes([parts[1][-1] ^ 1]))
        young = f"files/{study}/1.2.3/1.2.3.5.{uuid.uuid4().hex[:16]}.dcm"
        obstore.put(storage.bucket.store, young, b"an orphan of a store still in flight")
        assert run(check(server.settings, verify=True, repairing=True, progress=False)) == 1
        out = capsys.readouterr().out
        assert f"size mismatch    {shorter}" in out
        assert f"hash mismatch    {changed}" in out
        assert young in objects(server) and young not in out

    def test_reconciled_at_start(self, server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A start compares the bucket with the index. Beside a running server (a replica starting beside another):
        an indexed instance whose object is gone is reported (and counted in /readyz); an object no row names is
        left while it is younger than BUSY_MIN_AGE_SECONDS (another replica may be about to commit it), and moved to
        lost+found/ once older (S3 keeps an object's time of writing, so its age is shortened here instead)."""
        from dicomweb import reconcile

        study = pydicom.uid.generate_uid()
        parts = [ct_instance(study) for _ in range(2)]
        assert stow(server, parts).status_code == 200
        storage = open_storage(server.settings)
        missing = path_of(server, uids(parts[0])[2])
        run(storage.remove([missing]))
        orphan = f"files/{study}/1.2.3/1.2.3.4.{uuid.uuid4().hex[:16]}.dcm"
        (tmp_path / "orphan.dcm").write_bytes(parts[1])
        storage.place_now(SpooledFile(tmp_path / "orphan.dcm", len(parts[1]), ""), orphan)

        async def at_start() -> reconcile.Findings | None:
            conn = await asyncpg.connect(server.db.url)
            try:
                return await reconcile.at_start(conn, storage)
            finally:
                await conn.close()

        beside = run(at_start())
        assert beside is not None and orphan not in beside.orphan_files and beside.unjudged >= 1
        assert [f.file_path for f in beside.missing_files] == [missing]
        assert orphan in objects(server)
        assert httpx.get(server.url + "/readyz").json()["missing_files"] == 1
        monkeypatch.setattr(reconcile, "BUSY_MIN_AGE_SECONDS", 0)
        aged = run(at_start())
        assert aged is not None
        assert orphan in aged.orphan_files  # (with any orphan an earlier test of the module left)
        assert orphan not in objects(server)
        assert objects(server, "lost+found/")[f"lost+found/{orphan}"] == len(parts[1])

    def test_missing_bucket_is_a_clear_error(self, s3_settings: dict[str, Any], tmp_path: Path) -> None:
        """A bucket that does not exist: the start fails naming the bucket and the endpoint."""
        settings = Settings(data_dir=tmp_path).replace(**{**s3_settings, "s3_bucket": "no-such-bucket"})
        with pytest.raises(StorageUnavailable, match=r"'no-such-bucket' at http://127\.0\.0\.1:\d+"):
            open_storage(settings).prepare()


LARGE_SIZE = 3600  # a CT of 3,600 x 3,600 16-bit pixels: 25.9 MB, three parts and a bit of a multipart upload
SENT_FIRST = 20 * 10**6  # bytes of it sent before the test looks for its upload; the rest waits


def large_instance(study_instance_uid: str | None = None) -> bytes:
    data = ct_instance(study_instance_uid, size=LARGE_SIZE)
    assert len(data) > 3 * PART_BYTES
    return data


class TestLargeInstanceStreamed:
    """An instance larger than one multipart part goes up to the bucket while its body arrives, under its final key,
    and appears only once it is stored; a store that fails for any reason leaves no object and no upload."""

    def uploads(self, radosgw: dict[str, str], server: LiveServer) -> list[str]:
        return multipart_uploads(radosgw, server.settings.s3_bucket)

    def test_uploaded_while_it_arrives(self, radosgw: dict[str, str], server: LiveServer) -> None:
        """With 20 of its 26 MB sent, its multipart upload is under way under its final key and no object is there
        yet; once the rest has come, the stored object is the instance byte for byte, and no upload is left."""
        data = large_instance()
        study, series, sop = uids(data)
        key_start = f"{server.settings.s3_prefix}files/{study}/{series}/{sop}."
        request = PartialUpload(server.url, multipart([data]), sent=SENT_FIRST)
        wait_until(lambda: any(k.startswith(key_start) for k in self.uploads(radosgw, server)), "the upload to begin")
        assert not [path for path in objects(server) if path.startswith(f"files/{study}/")]
        status, body = request.finish()
        assert status == 200, body
        path = path_of(server, sop)
        assert object_bytes(server, path) == data
        assert f"{server.settings.s3_prefix}{path}".startswith(key_start)
        assert not self.uploads(radosgw, server)
        assert not temp_files(server)

    def test_client_disconnects(self, radosgw: dict[str, str], server: LiveServer) -> None:
        """The client goes away with its upload under way: the upload is aborted, no object, no temp file."""
        data = large_instance()
        study, series, sop = uids(data)
        key_start = f"{server.settings.s3_prefix}files/{study}/{series}/{sop}."
        request = PartialUpload(server.url, multipart([data]), sent=SENT_FIRST)
        wait_until(lambda: any(k.startswith(key_start) for k in self.uploads(radosgw, server)), "the upload to begin")
        request.close()
        wait_until(lambda: not self.uploads(radosgw, server) and not temp_files(server), "the upload to be aborted")
        assert not [path for path in objects(server) if path.startswith(f"files/{study}/")]

    def test_refused_instance(self, radosgw: dict[str, str], server: LiveServer) -> None:
        """Sent to another study's URL: refused (0xA900), its upload aborted, nothing left."""
        data = large_instance()
        other = pydicom.uid.generate_uid()
        request = PartialUpload(server.url, multipart([data]), sent=SENT_FIRST, path=f"/dicomweb/studies/{other}")
        wait_until(lambda: self.uploads(radosgw, server), "the upload to begin")
        status, body = request.finish()
        assert status == 409 and b'"00081197":{"vr":"US","Value":[43264]}' in body  # 0xA900
        assert not self.uploads(radosgw, server)
        assert not [path for path in objects(server) if path.startswith(f"files/{uids(data)[0]}/")]
        assert not temp_files(server)

    def test_failed_commit(self, radosgw: dict[str, str], server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """The transaction fails after the upload completed: the object is removed, no upload is left."""
        from dicomweb.db import index

        async def failing(*args: Any) -> None:
            raise asyncpg.exceptions.SerializationError("simulated failure after the object was placed")

        monkeypatch.setattr(index, "add_counts", failing)
        before = objects(server)
        assert stow(server, [large_instance()]).status_code == 409
        assert objects(server) == before
        assert not self.uploads(radosgw, server)
        assert not temp_files(server)

    def test_same_bytes_again(self, radosgw: dict[str, str], server: LiveServer) -> None:
        """The same large instance twice: both succeed, the first object is kept, the second upload's removed."""
        data = large_instance()
        assert stow(server, [data]).status_code == 200
        path = path_of(server, uids(data)[2])
        before = objects(server)
        assert stow(server, [data]).status_code == 200
        assert objects(server) == before and path_of(server, uids(data)[2]) == path
        assert not self.uploads(radosgw, server)

    def test_not_dicom(self, radosgw: dict[str, str], server: LiveServer) -> None:
        """A large part that is no DICOM file (its first bytes give no key) is refused, and leaves nothing."""
        before = objects(server)
        response = stow(server, [os.urandom(2 * PART_BYTES)])
        assert response.status_code == 409
        assert objects(server) == before
        assert not self.uploads(radosgw, server)
        assert not temp_files(server)


class TestOtherWays:
    """``dicomweb import``, DIMSE C-STORE and C-GET, and the reporting API's download, on the bucket."""

    def test_import(self, server: LiveServer, tmp_path: Path) -> None:
        source = tmp_path / "source"
        source.mkdir()
        study = pydicom.uid.generate_uid()
        parts = [ct_instance(study) for _ in range(3)]
        for number, data in enumerate(parts):
            (source / f"{number}.dcm").write_bytes(data)
        env = {
            **os.environ,
            **{k: v for k, v in server.settings.to_env().items() if "S3" in k or "STORAGE" in k},
            "DICOMWEB_DATABASE_URL": server.db.url,
        }
        result = subprocess.run(
            [sys.executable, "-m", "dicomweb", "import", "--quiet", "--data-dir", str(tmp_path / "data"), str(source)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        for data in parts:
            assert object_bytes(server, path_of(server, uids(data)[2])) == data
            got = httpx.get(instance_url(server, data), headers={"Accept": "application/dicom; transfer-syntax=*"})
            assert got.content == data
        assert not list((tmp_path / "data" / "tmp").glob("*"))

    def test_c_store_then_c_get(self, server: LiveServer) -> None:
        """C-STORE puts an object in the bucket; C-GET sends it back from a temp copy, the same data set."""
        study = pydicom.uid.generate_uid()
        data = ct_instance(study)
        ds = pydicom.dcmread(io.BytesIO(data))
        ae = AE(ae_title=CALLING)
        ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", server.settings.dimse_port, ae_title="DICOMWEB")
        assert assoc.is_established
        try:
            assert assoc.send_c_store(ds).Status == 0x0000
        finally:
            assoc.release()
        assert object_bytes(server, path_of(server, ds.SOPInstanceUID))
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study
        final, received = c_get(server, identifier, [(CTImageStorage, "1.2.840.10008.1.2.1")])
        assert final.Status == 0x0000
        assert [r.SOPInstanceUID for r in received] == [ds.SOPInstanceUID]
        assert received[0].PixelData == ds.PixelData
        assert not temp_files(server)

    def test_c_move_to_a_node(self, server: LiveServer) -> None:
        """C-MOVE sends the study's objects (each from a temp copy) to a registered storage SCP, identical."""
        study = pydicom.uid.generate_uid()
        parts = [ct_instance(study) for _ in range(3)]
        assert stow(server, parts).status_code == 200
        node = StorageNode("S3MOVESCP")
        register(server, "S3MOVESCP", "127.0.0.1", node.port, [])
        try:
            final = c_move(server, study_identifier(study), "S3MOVESCP")[-1]
        finally:
            node.stop()
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
        sent = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(io.BytesIO(part)) for part in parts)}
        assert sorted(ds.SOPInstanceUID for ds in node.received) == sorted(sent)
        assert all(ds.PixelData == sent[ds.SOPInstanceUID].PixelData for ds in node.received)
        assert not temp_files(server)
