"""Files and index reconciled at every start and by ``dicomweb check`` (dicomweb/reconcile.py, dicomweb/check.py):
crashes injected into live servers (SIGKILL, a COMMIT held back by a lock the test holds), findings made by hand."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pydicom
import pytest

from dicomweb.check import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS, check
from dicomweb.db.files import STILL_WRITING
from dicomweb.reconcile import BUSY_MIN_AGE_SECONDS, LOST_AND_FOUND, at_start_supervised, stale_temp_files
from dicomweb.storage import STALE_TEMP_SECONDS, FileStorage, temp_name

from .conftest import Database, LiveServer, PartialUpload, free_port, serve_subprocess, wait_until
from .data import ct_instance, multipart, stow_headers

ONE_PROCESS = {"DICOMWEB_WORKERS": "1"}  # the process that stores is the one killed
GATE_KEY = 16016  # the advisory lock a held-back COMMIT waits for
BIG = 1200  # Rows and Columns of an instance whose first half (over 1 MiB) is spooled to a temp file on arrival


class Session:
    """A database connection the test keeps open across its steps (a session advisory lock lives as long as it)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(url))

    def execute(self, sql: str, *args: Any) -> Any:
        return self.loop.run_until_complete(self.conn.fetchval(sql, *args))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


class CommitGate:
    """A deferred trigger on ``instance``: every COMMIT that stores an instance first waits for the advisory lock
    the test holds (``hold``), and sleeps ``pause`` seconds per instance. A store's files are in place by then and
    its COMMIT still to come: the window in which a crash leaves a file that no committed row names."""

    def __init__(self, url: str, hold: bool, pause: float = 0.0) -> None:
        self.session = Session(url)
        self.session.execute(
            f"""
            CREATE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock_shared({GATE_KEY}); PERFORM pg_sleep({pause}); RETURN NULL; END $$
            """
        )
        self.session.execute(
            "CREATE CONSTRAINT TRIGGER test_gate AFTER INSERT ON instance DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION test_gate()"
        )
        if hold:
            self.session.execute("SELECT pg_advisory_lock($1)", GATE_KEY)

    def end_other_sessions(self) -> None:
        """What a crash does to the server's transactions: their connections end and PostgreSQL rolls them back."""
        self.session.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    def waiting_check(self) -> bool:
        """Whether another session waits for transactions to end (``db.files.wait_for_transactions``)."""
        found = self.session.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query = $1",
            STILL_WRITING,
        )
        return bool(found)

    def release(self) -> None:
        self.session.execute("SELECT pg_advisory_unlock_all()")

    def close(self) -> None:
        self.release()
        self.session.execute("DROP TRIGGER test_gate ON instance")
        self.session.execute("DROP FUNCTION test_gate")
        self.session.close()


class Background:
    """A call run in a thread; its result or its exception afterwards."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.result: Any = None

        def run() -> None:
            try:
                self.result = function()
            except Exception as exc:
                self.result = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        return self.result


def stow(url: str, instances: list[bytes]) -> httpx.Response:
    return httpx.post(url + "/dicomweb/studies", content=multipart(instances), headers=stow_headers(), timeout=60)


def files_in(data_dir: Path, folder: str = "files") -> set[str]:
    """The files under a folder of the data folder, relative to the data folder."""
    return {p.relative_to(data_dir).as_posix() for p in (data_dir / folder).rglob("*") if p.is_file()}


@contextlib.contextmanager
def commit_held_back(server: LiveServer, held: bytes) -> Iterator[tuple[CommitGate, Background]]:
    """A running server storing ``held`` with its file in place and its COMMIT held back until ``gate.release()``
    (as beside a ``dicomweb import`` in flight); yields the gate and the pending STOW-RS request."""
    stow(server.url, [ct_instance()])  # the schema is there
    gate = CommitGate(server.db.url, hold=True)
    try:
        pending = Background(lambda: stow(server.url, [held]))
        wait_until(lambda: len(files_in(server.data_dir)) == 2, "the held store's file placed")
        yield gate, pending
    finally:
        gate.close()


def sop_instance_uid(instance: bytes) -> str:
    return str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(instance), stop_before_pixels=True).SOPInstanceUID)


def assert_consistent(data_dir: Path, db: Database, acknowledged: dict[str, bytes]) -> None:
    """Nothing acknowledged lost (each file holds the bytes received), no file without its row or row without its
    file, no temp file."""
    rows = {r["sop_instance_uid"]: r["file_path"] for r in db.fetch("SELECT sop_instance_uid, file_path FROM instance")}
    assert files_in(data_dir) == set(rows.values())
    assert not files_in(data_dir, "tmp")
    for uid, instance in acknowledged.items():
        assert uid in rows, f"acknowledged instance {uid} lost"
        assert (data_dir / rows[uid]).read_bytes() == instance


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def archive(new_database: Any, tmp_path: Path) -> Iterator[tuple[Database, Path, dict[str, str]]]:
    """A database, a data folder and the environment of a one-process server on them."""
    db: Database = new_database()
    yield db, tmp_path / "archive", {"DICOMWEB_DATABASE_URL": db.url, **ONE_PROCESS}


class TestCrash:
    """SIGKILL in the middle of stores, then a restart: nothing acknowledged lost, nothing left orphaned."""

    def test_crash_between_placement_and_commit(self, archive: tuple[Database, Path, dict[str, str]]) -> None:
        """Killed while a store's file is in place and its COMMIT held back, with another upload half received: the
        restart moves the placed file to lost+found/ (same relative path, a log line), removes the temp file, and
        keeps the acknowledged instance; the instance that was never acknowledged can be sent again."""
        db, data_dir, env = archive
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        first, held = ct_instance(study, series), ct_instance(study, series, size=128)
        with serve_subprocess(env, data_dir) as server:
            assert stow(server.url, [first]).status_code == 200
            stored = files_in(data_dir)
            gate = CommitGate(db.url, hold=True)
            try:
                pending = Background(lambda: stow(server.url, [held]))
                wait_until(lambda: len(files_in(data_dir)) == 2, "the held store's file placed")
                upload = PartialUpload(server.url, multipart([ct_instance(size=BIG)]))
                try:
                    wait_until(lambda: bool(files_in(data_dir, "tmp")), "the half-received upload's temp file")
                    server.process.kill()
                    server.process.wait()
                finally:
                    upload.close()
                gate.end_other_sessions()
            finally:
                gate.close()
            outcome = pending.join()
            assert not isinstance(outcome, httpx.Response), "the held store was answered before its COMMIT"
        (orphan,) = files_in(data_dir) - stored
        with serve_subprocess(env, data_dir) as restarted:
            assert_consistent(data_dir, db, {sop_instance_uid(first): first})
            assert (data_dir / LOST_AND_FOUND / orphan).read_bytes() == held
            assert f"orphan file {orphan} (no committed row names it) moved to {LOST_AND_FOUND}/{orphan}" in (
                restarted.log
            )
            assert stow(restarted.url, [held]).status_code == 200
            assert_consistent(data_dir, db, {sop_instance_uid(i): i for i in (first, held)})

    def test_sigkill_at_many_points(self, archive: tuple[Database, Path, dict[str, str]]) -> None:
        """Killed at random moments while slow multi-part and single-instance stores arrive (each COMMIT slowed
        after the files are placed), then restarted, several times over: every acknowledged instance is there byte
        for byte, every file has its row and every row its file, no temp file is left."""
        db, data_dir, env = archive
        rng = random.Random(16)
        acknowledged: dict[str, bytes] = {}
        kills = 5
        gate: CommitGate | None = None
        try:
            for round_ in range(kills + 1):
                with serve_subprocess(env, data_dir) as server:
                    assert_consistent(data_dir, db, acknowledged)
                    if round_ == kills:
                        break
                    gate = gate or CommitGate(db.url, hold=False, pause=0.02)
                    stop = threading.Event()
                    senders = [
                        Background(functools.partial(send_until, stop, server.url, 8, 0.01, acknowledged)),
                        Background(functools.partial(send_until, stop, server.url, 1, 0.0, acknowledged)),
                    ]
                    time.sleep(rng.uniform(0.3, 1.5))
                    server.process.kill()
                    server.process.wait()
                    gate.end_other_sessions()
                    stop.set()
                    for sender in senders:
                        sender.join()
        finally:
            if gate is not None:
                gate.close()
        assert len(acknowledged) >= kills


def send_until(stop: threading.Event, url: str, batch: int, pause: float, acknowledged: dict[str, bytes]) -> None:
    """STOW ``batch`` new instances per request, the body in 4 KB pieces ``pause`` seconds apart, until stopped or
    the server is gone; what was acknowledged (200) into ``acknowledged``."""
    while not stop.is_set():
        instances = [ct_instance(size=64) for _ in range(batch)]
        body = multipart(instances)

        def slowly(body: bytes = body) -> Iterator[bytes]:
            for offset in range(0, len(body), 4096):
                yield body[offset : offset + 4096]
                time.sleep(pause)

        try:
            response = httpx.post(url + "/dicomweb/studies", content=slowly(), headers=stow_headers(), timeout=10)
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            acknowledged.update((sop_instance_uid(i), i) for i in instances)


class TestStart:
    """What a start leaves alone: a live process's uploads; what it reports: rows without their file."""

    def test_supervisor_start_beside_a_live_upload(
        self, archive: tuple[Database, Path, dict[str, str]], tmp_path: Path
    ) -> None:
        """``serve --workers 2`` started on the data folder of a running server with an upload half received (a
        replica beside another): its supervisor sees the other's connections, so it removes the temp file of a
        process that is gone and moves an orphan to lost+found/ only as they are over BUSY_MIN_AGE_SECONDS old,
        before the workers start; it leaves a young file no row names (another process's store may be about to
        commit it) and the live upload's temp file (which then completes and is stored), and reports the
        instance whose file was deleted: a log line with its UIDs, ``dicomweb_missing_files`` in /metrics, a detail
        in /readyz, which stays 200."""
        db, data_dir, env = archive
        kept, lost = ct_instance(), ct_instance()
        with serve_subprocess(env, data_dir) as running:
            assert stow(running.url, [kept, lost]).status_code == 200
            path = db.value("SELECT file_path FROM instance WHERE sop_instance_uid = $1", sop_instance_uid(lost))
            (data_dir / path).unlink()
            orphan = (
                f"files/{pydicom.uid.generate_uid()}/{pydicom.uid.generate_uid()}/1.2.3.{uuid.uuid4().hex[:16]}.dcm"
            )
            young = orphan.replace(".dcm", ".young.dcm")  # as placed by the running server, its COMMIT to come
            (data_dir / orphan).parent.mkdir(parents=True)
            (data_dir / orphan).write_bytes(ct_instance())
            (data_dir / young).write_bytes(ct_instance())
            dead = data_dir / "tmp" / f"{dead_pid()}-{int(time.time()) - 60}-{uuid.uuid4().hex}.part"
            dead.write_bytes(b"half an instance")
            past = time.time() - BUSY_MIN_AGE_SECONDS - 60
            for path in (data_dir / orphan, dead):
                os.utime(path, (past, past))
            late = ct_instance(size=BIG)
            upload = PartialUpload(running.url, multipart([late]))
            try:
                wait_until(lambda: len(files_in(data_dir, "tmp")) == 2, "the live upload's temp file")
                (live,) = files_in(data_dir, "tmp") - {dead.relative_to(data_dir).as_posix()}
                with serve_subprocess({**env, "DICOMWEB_WORKERS": "2"}, data_dir) as second:
                    assert files_in(data_dir, "tmp") == {live}
                    assert files_in(data_dir, LOST_AND_FOUND) == {f"{LOST_AND_FOUND}/{orphan}"}
                    assert (data_dir / young).is_file()
                    assert "connection(s) of other archive processes" in second.log
                    missing = (
                        f"StudyInstanceUID={pydicom.dcmread(pydicom.filebase.DicomBytesIO(lost)).StudyInstanceUID}"
                    )
                    assert "indexed instance without its file: " + missing in second.log
                    ready = httpx.get(second.url + "/readyz")
                    assert ready.status_code == 200 and ready.json()["missing_files"] == 1
                    assert "dicomweb_missing_files 1.0" in httpx.get(second.url + "/metrics").text
                assert upload.finish()[0] == 200
            finally:
                upload.close()
        assert db.value("SELECT count(*) FROM instance WHERE sop_instance_uid = $1", sop_instance_uid(late)) == 1

    def test_start_beside_a_pending_commit(self, server_factory: Any) -> None:
        """A start on the data folder of a running server whose store has its file in place and its COMMIT held
        back (as beside a ``dicomweb import`` in flight): the start waits for the transaction instead of taking the
        file for an orphan; once the COMMIT comes the store is answered 200 and its file is where its row says."""
        server = server_factory()
        held = ct_instance()
        with commit_held_back(server, held) as (gate, pending):
            starting = Background(lambda: asyncio.run(at_start_supervised(server.settings)))
            wait_until(lambda: gate.waiting_check() or not starting.thread.is_alive(), "the start waiting")
            gate.release()
            assert pending.join().status_code == 200
            assert starting.join() is None
        path = server.db.value("SELECT file_path FROM instance WHERE sop_instance_uid = $1", sop_instance_uid(held))
        assert (server.data_dir / path).read_bytes() == held
        assert not (server.data_dir / LOST_AND_FOUND).exists()

    def test_a_reused_pid_is_not_the_owner(self, tmp_path: Path) -> None:
        """A temp file named after this (live) process is kept whatever its age; one naming this pid with another
        start time (the pid of a process that is gone, reused) is stale; a name of the older form is stale only once
        STALE_TEMP_SECONDS old."""
        storage = FileStorage(tmp_path)
        storage.prepare()
        own = storage.tmp / temp_name()
        reused = storage.tmp / f"{os.getpid()}-{int(time.time()) - 3600}-{uuid.uuid4().hex}.part"
        older_form, older_form_young = storage.tmp / "crash.part", storage.tmp / "upload.part"
        for path in (own, reused, older_form, older_form_young):
            path.write_bytes(b"x")
        past = time.time() - STALE_TEMP_SECONDS - 60
        for path in (own, reused, older_form):
            os.utime(path, (past, past))
        assert stale_temp_files(storage) == sorted(f"tmp/{p.name}" for p in (reused, older_form))


def check_now(server: LiveServer, *, verify: bool = False, repair: bool = False) -> int:
    """``dicomweb check`` in this process, on a running server's data folder and database."""
    return asyncio.run(check(server.settings, verify, repair, progress=False))


def dicomweb_check(data_dir: Path, url: str, *options: str) -> subprocess.Popen[str]:
    """``dicomweb check`` as a user runs it, in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "dicomweb", "check", "--quiet", "--data-dir", str(data_dir), *options],
        env={**os.environ, "DICOMWEB_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class TestCheck:
    """``dicomweb check [--verify] [--repair]`` beside a running server: each finding, its exit code, what the
    repair does and what it never does."""

    def test_each_finding(self, server_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
        """A clean archive exits 0. Then a deleted file, a flipped byte, a truncated file, an orphan and a stale temp
        file made by hand: each is found (the flipped byte only with --verify), exit 1, nothing changed; --repair
        moves the orphan to lost+found/ and removes the stale temp file, keeps every row and indexed file, and leaves
        temp files of live processes, and files too young to judge (written in the last 10 minutes); the missing
        file is still reported, with its UIDs, in the check's output, /metrics and /readyz."""
        server = server_factory()
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        instances = [ct_instance(study, series) for _ in range(4)]
        assert stow(server.url, instances).status_code == 200
        assert check_now(server) == EXIT_CLEAN
        assert "checked 4 files against 4 indexed instances: 0 stale temp files, 0 orphan files" in (
            capsys.readouterr().out
        )
        rows = {r[0]: r for r in server.db.fetch("SELECT sop_instance_uid, file_path, file_size FROM instance")}
        deleted, flipped, truncated, _ = (rows[sop_instance_uid(i)] for i in instances)
        data_dir = server.data_dir
        (data_dir / deleted["file_path"]).unlink()
        content = bytearray((data_dir / flipped["file_path"]).read_bytes())
        content[-1] ^= 0xFF
        (data_dir / flipped["file_path"]).write_bytes(content)
        (data_dir / truncated["file_path"]).write_bytes((data_dir / truncated["file_path"]).read_bytes()[:-1])
        orphan, young_orphan = (
            f"files/{study}/{pydicom.uid.generate_uid()}/1.2.3.{uuid.uuid4().hex[:16]}.dcm" for _ in range(2)
        )
        for path in (orphan, young_orphan):
            (data_dir / path).parent.mkdir(parents=True)
            (data_dir / path).write_bytes(instances[0])
        gone = dead_pid()
        stale, young = (data_dir / "tmp" / f"{gone}-{int(time.time())}-{uuid.uuid4().hex}.part" for _ in range(2))
        live = data_dir / "tmp" / temp_name()
        for path in (stale, young, live):
            path.write_bytes(b"half an instance")
        hour_ago = time.time() - 3600
        for path in (stale, live, data_dir / orphan):
            os.utime(path, (hour_ago, hour_ago))
        uids = f"StudyInstanceUID={study} SeriesInstanceUID={series} SOPInstanceUID="

        assert check_now(server) == EXIT_FINDINGS
        out = capsys.readouterr().out
        assert f"missing file     {deleted['file_path']}  {uids}" in out
        assert f"size mismatch    {truncated['file_path']}  {truncated['file_size'] - 1} bytes, the index says" in out
        assert f"orphan file      {orphan}\n" in out
        assert f"stale temp file  tmp/{stale.name}\n" in out
        assert "hash mismatch" not in out and "hashes not checked (--verify)" in out
        assert young.name not in out and live.name not in out and young_orphan not in out
        assert "1 file(s) no row names were left unjudged (written in the last 10 minutes" in out
        assert (data_dir / orphan).exists() and stale.exists()

        assert check_now(server, verify=True) == EXIT_FINDINGS
        out = capsys.readouterr().out
        assert f"hash mismatch    {flipped['file_path']}  SHA-256 differs from the index's; {uids}" in out
        assert "1 missing file (send these instances again), 1 size mismatch, 1 hash mismatch" in out

        assert check_now(server, verify=True, repair=True) == EXIT_FINDINGS
        out = capsys.readouterr().out
        assert f"orphan file      {orphan}  moved to {LOST_AND_FOUND}/{orphan}" in out
        assert (data_dir / LOST_AND_FOUND / orphan).read_bytes() == instances[0]
        assert not (data_dir / orphan).exists() and not stale.exists()
        assert (data_dir / young_orphan).exists() and young.exists() and live.exists()
        assert server.db.value("SELECT count(*) FROM instance") == 4
        assert (data_dir / flipped["file_path"]).exists() and (data_dir / truncated["file_path"]).exists()

        assert check_now(server) == EXIT_FINDINGS
        out = capsys.readouterr().out
        assert "0 stale temp files, 0 orphan files, 1 missing file" in out
        assert "dicomweb_missing_files 1.0" in httpx.get(server.url + "/metrics").text
        assert httpx.get(server.url + "/readyz").json()["missing_files"] == 1

    def test_a_pending_commit_is_waited_for(self, server_factory: Any) -> None:
        """``dicomweb check --repair`` while a store's file is in place and its COMMIT held back: the check waits for
        the transaction; once the COMMIT comes the store is answered 200, the file is where its row says, and the
        check finds nothing (exit 0)."""
        server = server_factory()
        held = ct_instance()
        with commit_held_back(server, held) as (gate, pending):
            checking = dicomweb_check(server.data_dir, server.db.url, "--repair")
            try:
                wait_until(lambda: gate.waiting_check() or checking.poll() is not None, "the check waiting")
                gate.release()
                assert pending.join().status_code == 200
            finally:
                out, err = checking.communicate(timeout=60)
        assert checking.returncode == EXIT_CLEAN, out + err
        assert "checked 2 files against 2 indexed instances" in out
        path = server.db.value("SELECT file_path FROM instance WHERE sop_instance_uid = $1", sop_instance_uid(held))
        assert (server.data_dir / path).read_bytes() == held
        assert not (server.data_dir / LOST_AND_FOUND).exists()

    def test_exit_2_when_it_cannot_run(self, tmp_path: Path) -> None:
        """No archive in the folder, or a database that does not answer: exit 2, and why on stderr."""
        nothing = dicomweb_check(tmp_path / "nothing", "postgresql://127.0.0.1:1/none")
        out, err = nothing.communicate(timeout=60)
        assert nothing.returncode == EXIT_ERROR and "no archive in" in err
        (tmp_path / "archive" / "files").mkdir(parents=True)
        unreachable = dicomweb_check(tmp_path / "archive", f"postgresql://127.0.0.1:{free_port()}/none")
        out, err = unreachable.communicate(timeout=60)
        assert unreachable.returncode == EXIT_ERROR and "the check could not run" in err, out + err
