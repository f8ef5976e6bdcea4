"""``dicomweb backup`` and ``dicomweb restore`` with the instances in a bucket (DICOMWEB_STORAGE=s3): a real radosgw
(tests/s3/start_rgw.sh), real PostgreSQL, a client storing while the backup runs, every instance read back over
WADO-RS from a server on the restored bucket; and a folder archive moved into a bucket by a backup and a restore."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from dicomweb import backup as backup_module
from dicomweb.backup import BackupError, Refused, backup
from dicomweb.config import Settings
from dicomweb.restore import restore
from dicomweb.storage import open_storage
from dicomweb.storage.s3 import PART_BYTES, S3Storage

from .conftest import Database, LiveServer, bucket_settings, serve_in_thread
from .data import ct_instance
from .test_backup import Storer, archive_contents, file_prefix, instance_path, read_manifest, sop_of, stow
from .test_cli import dicomweb

NewBucket = Callable[[], dict[str, Any]]


@pytest.fixture
def new_bucket(radosgw: dict[str, str], tmp_path: Path) -> NewBucket:
    """A factory of archive settings, each on a new, empty bucket."""
    return lambda: bucket_settings(radosgw, tmp_path)


def bucket(s3: dict[str, Any]) -> S3Storage:
    storage = open_storage(Settings().replace(**s3))
    assert isinstance(storage, S3Storage)
    return storage


def objects(s3: dict[str, Any]) -> dict[str, int]:
    """The bucket's objects under files/ (relative path -> size)."""
    return dict(bucket(s3).list_now())


def environment(s3: dict[str, Any], database: Database) -> dict[str, str]:
    """The DICOMWEB_* variables of an archive on the bucket of ``s3`` and the database."""
    variables = Settings().replace(**s3).to_env()
    return {k: v for k, v in variables.items() if "S3" in k or "STORAGE" in k} | {"DICOMWEB_DATABASE_URL": database.url}


def rows(database: Database) -> dict[str, int]:
    """The instance rows' files (relative path -> size)."""
    return {row[0]: row[1] for row in database.fetch("SELECT file_path, file_size FROM instance")}


def serve_restored(data_dir: Path, database: Database, s3: dict[str, Any] | None = None) -> dict[str, bytes]:
    """Every instance of the restored archive, retrieved as stored by a server started on it."""
    settings = Settings(data_dir=data_dir, auth="disabled", dimse_port=0).replace(**(s3 or {}))
    with serve_in_thread(settings, database) as live:
        return archive_contents(live.url)


class TestBackupOfABucket:
    """A backup of an archive on S3, restored elsewhere, serves every instance acknowledged before it began."""

    def test_backup_while_storing_restores_every_acknowledged_instance(
        self,
        server_factory: Callable[..., LiveServer],
        new_database: Callable[[], Database],
        new_bucket: NewBucket,
        tmp_path: Path,
    ) -> None:
        """Backed up (a real process) while a client stores, each object downloaded into DEST as a file under its
        key; restored into a new bucket and a new database, every instance acknowledged before the backup began
        comes back byte for byte, and the new bucket holds exactly the objects the restored rows name."""
        source = new_bucket()
        server = server_factory(**source)
        dest, restored = tmp_path / "backup", tmp_path / "restored"
        sent = [ct_instance(size=32) for _ in range(5)] + [ct_instance(generate_uid(), size=32) for _ in range(5)]
        stow(server.url, sent[:5])
        stow(server.url, sent[5:])
        storer = Storer(server.url)
        storer.start()
        try:
            assert storer.started_one.wait(30)
            before = sent + storer.acknowledged[:]  # acknowledged before the backup began
            result = dicomweb(
                "backup", str(dest), "--data-dir", str(server.data_dir), env=environment(source, server.db)
            )
            during = len(storer.acknowledged) - (len(before) - len(sent))
        finally:
            storer.stop()
        assert result.returncode == 0, result.stderr
        assert during > 0  # the client stored while the backup ran
        manifest = read_manifest(dest)
        assert manifest["instances"] >= len(before) and manifest["copied"] >= len(before) and manifest["linked"] == 0
        assert manifest["deleted"] == [] and manifest["missing"] == []
        assert f"{manifest['copied']} objects downloaded" in result.stderr
        backed_up = {str(p.relative_to(dest)): p.stat().st_size for p in (dest / "files").rglob("*") if p.is_file()}
        assert len(backed_up) == manifest["instances"]  # and no .part file left
        in_bucket = objects(source)
        assert all(in_bucket[path] == size for path, size in backed_up.items())

        target, database = new_bucket(), new_database()
        result = dicomweb("restore", str(dest), "--data-dir", str(restored), env=environment(target, database))
        assert result.returncode == 0, result.stderr
        assert f"{manifest['instances']} files uploaded into the bucket, 0 there already" in result.stderr
        assert objects(target) == rows(database) == backed_up
        assert not (restored / "files").exists()
        found = serve_restored(restored, database, target)
        assert len(found) == manifest["instances"]
        everything = {sop_of(instance): instance for instance in sent + storer.acknowledged}
        for instance in before:
            assert found[sop_of(instance)] == instance
        for sop, content in found.items():  # the ones stored during the backup that made it: intact too
            assert content == everything[sop]

    def test_second_backup_downloads_only_new_objects(
        self,
        server_factory: Callable[..., LiveServer],
        new_database: Callable[[], Database],
        new_bucket: NewBucket,
        tmp_path: Path,
    ) -> None:
        """A second run into the same DEST downloads the new objects only, leaves the earlier files alone and
        removes the deleted instance's; the backup of the bucket restores into a data folder."""
        source = new_bucket()
        server = server_factory(**source)
        dest = tmp_path / "backup"
        study = generate_uid()
        first = [ct_instance(study, size=32) for _ in range(3)]
        stow(server.url, first)
        assert asyncio.run(backup(server.settings, dest)).copied == 3
        earlier = {p.relative_to(dest): p.stat().st_ino for p in (dest / "files").rglob("*.dcm")}

        second = [ct_instance(study, size=32) for _ in range(2)]
        stow(server.url, second)
        assert httpx.delete(server.url + instance_path(first[0])).status_code == 204
        manifest = asyncio.run(backup(server.settings, dest))
        assert (manifest.instances, manifest.copied, manifest.removed) == (4, 2, 1)
        now = {p.relative_to(dest): p.stat().st_ino for p in (dest / "files").rglob("*.dcm")}
        assert {str(p) for p in now} == set(rows(server.db)) == set(objects(source))
        kept = set(earlier) & set(now)
        assert len(kept) == 2 and all(now[p] == earlier[p] for p in kept)  # not downloaded again

        database, restored = new_database(), tmp_path / "restored"
        assert asyncio.run(restore(Settings(data_dir=restored, database_url=database.url), dest)).missing == []
        assert serve_restored(restored, database) == {sop_of(i): i for i in first[1:] + second}

    def test_instance_deleted_while_backing_up_is_left_out(
        self,
        server_factory: Callable[..., LiveServer],
        new_database: Callable[[], Database],
        new_bucket: NewBucket,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An object listed and then deleted before its download is skipped; an instance stored after the first
        downloads and deleted right after the snapshot (its object gone before step 3 fetched it) is listed as
        deleted, and the restore deletes its row; a row whose object the bucket lacks is kept and reported."""
        source = new_bucket()
        server = server_factory(**source)
        kept, lost, listed, raced = (ct_instance(size=32) for _ in range(4))
        stow(server.url, [kept, lost, listed])
        lost_path = server.db.value("SELECT file_path FROM instance WHERE sop_instance_uid = $1", sop_of(lost))
        asyncio.run(bucket(source).remove([lost_path]))  # damage the archive: a row without its object

        def delete_after_listing(original: Callable[..., None]) -> Callable[..., None]:
            def mirror_all(mirror: Any, files: Any) -> None:
                everything = list(files)
                assert httpx.delete(server.url + instance_path(listed)).status_code == 204
                original(mirror, everything)

            return mirror_all

        def around_the_snapshot(original: Callable[..., Any]) -> Callable[..., Any]:
            async def dump(*args: Any) -> Any:
                await asyncio.to_thread(stow, server.url, [raced])  # after step 1, before the snapshot
                snapshot = await original(*args)
                response = await asyncio.to_thread(httpx.delete, server.url + instance_path(raced))
                assert response.status_code == 204  # after the snapshot, before step 3
                return snapshot

            return dump

        monkeypatch.setattr(backup_module, "mirror_all", delete_after_listing(backup_module.mirror_all))
        monkeypatch.setattr(backup_module, "dump", around_the_snapshot(backup_module.dump))
        dest = tmp_path / "backup"
        manifest = asyncio.run(backup(server.settings, dest))
        assert manifest.instances == 3
        [deleted] = manifest.deleted
        assert deleted.startswith(file_prefix(raced))
        assert manifest.missing == [lost_path]
        kept_path = server.db.value("SELECT file_path FROM instance WHERE sop_instance_uid = $1", sop_of(kept))
        assert [str(p.relative_to(dest)) for p in (dest / "files").rglob("*") if p.is_file()] == [kept_path]

        target, database = new_bucket(), new_database()
        settings = Settings(data_dir=tmp_path / "restored", database_url=database.url).replace(**target)
        restored = asyncio.run(restore(settings, dest))
        assert restored.instances == 2 and restored.studies == 2  # the raced instance's study went with it
        assert restored.missing == [lost_path]
        assert database.value("SELECT count(*) FROM instance WHERE sop_instance_uid = $1", sop_of(raced)) == 0


class TestFolderToBucket:
    """A folder archive moved into a bucket: its backup restored with DICOMWEB_STORAGE=s3."""

    def test_folder_backup_restores_into_a_bucket(
        self,
        server_factory: Callable[..., LiveServer],
        new_database: Callable[[], Database],
        new_bucket: NewBucket,
        tmp_path: Path,
    ) -> None:
        """Every file of the folder archive's backup becomes an object under its path (a large one in a multipart
        upload), and a server on the bucket serves every instance byte for byte."""
        server = server_factory()
        sent = [ct_instance(size=32) for _ in range(4)] + [ct_instance(size=2100)]
        assert len(sent[-1]) > PART_BYTES
        stow(server.url, sent)
        dest, restored = tmp_path / "backup", tmp_path / "restored"
        asyncio.run(backup(server.settings, dest))
        target, database = new_bucket(), new_database()
        result = dicomweb("restore", str(dest), "--data-dir", str(restored), env=environment(target, database))
        assert result.returncode == 0, result.stderr
        assert "restored 5 instances (5 studies)" in result.stderr
        assert objects(target) == rows(database) == rows(server.db)
        assert serve_restored(restored, database, target) == {sop_of(i): i for i in sent}

    def test_restore_run_again_keeps_what_it_uploaded(
        self,
        server_factory: Callable[..., LiveServer],
        new_database: Callable[[], Database],
        new_bucket: NewBucket,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A restore that stops part way (the connection to the bucket lost after two uploads) leaves those two
        objects; run again into an emptied data folder and database, it keeps them and uploads the rest."""
        server = server_factory()
        sent = [ct_instance(size=32) for _ in range(6)]
        stow(server.url, sent)
        dest, restored = tmp_path / "backup", tmp_path / "restored"
        asyncio.run(backup(server.settings, dest))
        target = new_bucket()
        put_now = S3Storage.put_now
        uploads = threading.Semaphore(2)

        def failing(storage: S3Storage, path: Path, relative_path: str) -> None:
            if not uploads.acquire(blocking=False):
                raise BackupError("the connection to the bucket was lost")
            put_now(storage, path, relative_path)

        monkeypatch.setattr(S3Storage, "put_now", failing)
        settings = Settings(data_dir=restored, database_url=new_database().url).replace(**target)
        with pytest.raises(BackupError, match="connection to the bucket was lost"):
            asyncio.run(restore(settings, dest))
        assert len(objects(target)) == 2
        monkeypatch.setattr(S3Storage, "put_now", put_now)

        shutil.rmtree(restored)
        database = new_database()
        again = asyncio.run(restore(settings.replace(database_url=database.url), dest))
        assert (again.present, again.copied, again.instances, again.missing) == (2, 4, 6, [])
        assert objects(target) == rows(database)


class TestRestoreIntoABucketRefuses:
    """A restore never merges into another archive's objects: it refuses, changing nothing."""

    @pytest.fixture
    def backup_folder(self, server_factory: Callable[..., LiveServer], tmp_path: Path) -> Path:
        server = server_factory()
        stow(server.url, [ct_instance(size=32) for _ in range(2)])
        dest = tmp_path / "backup"
        asyncio.run(backup(server.settings, dest))
        return dest

    def test_a_bucket_holding_other_objects(
        self, backup_folder: Path, new_bucket: NewBucket, new_database: Callable[[], Database], tmp_path: Path
    ) -> None:
        """An object under files/ that no file of the backup is, or one under a backup file's key but of another
        size: exit 2, naming the bucket and the object; nothing uploaded, no data folder made."""
        file = next((backup_folder / "files").rglob("*.dcm"))
        other = tmp_path / "other.dcm"
        other.write_bytes(b"another archive's instance")
        for key in ("files/1.2.3/4.5.6/7.8.9.0123456789abcdef.dcm", str(file.relative_to(backup_folder))):
            target, database, restored = new_bucket(), new_database(), tmp_path / "restored"
            bucket(target).put_now(other, key)
            result = dicomweb(
                "restore", str(backup_folder), "--data-dir", str(restored), env=environment(target, database)
            )
            assert result.returncode == 2, result.stderr
            assert f"S3 bucket {target['s3_bucket']!r}" in result.stderr
            assert f"holds 1 object(s) under files/ that are not this backup's files (such as {key})" in result.stderr
            assert objects(target) == {key: other.stat().st_size}
            assert not restored.exists() and database.value("SELECT to_regclass('instance')") is None

    def test_a_bucket_that_is_not_there(self, backup_folder: Path, new_bucket: NewBucket, tmp_path: Path) -> None:
        """Backup and restore on a bucket that does not exist: refused, naming it."""
        missing = new_bucket() | {"s3_bucket": "no-such-bucket"}
        settings = Settings(data_dir=tmp_path / "data", database_url="postgresql://unused/").replace(**missing)
        with pytest.raises(Refused, match="'no-such-bucket' at http"):
            asyncio.run(restore(settings, backup_folder))
        with pytest.raises(Refused, match="'no-such-bucket' at http"):
            asyncio.run(backup(settings, tmp_path / "dest"))
        assert not (tmp_path / "data").exists() and not (tmp_path / "dest").exists()
