"""Graceful shutdown (SIGTERM): uploads in flight finish, or are rolled back when they outlast the grace period;
nothing half-written remains either way."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from .conftest import Database, serve_subprocess
from .data import ct_instance, multipart, stow_headers

GRACE_SECONDS = 10  # uvicorn's timeout_graceful_shutdown in dicomweb/cli.py


def slow_body(body: bytes, pieces: int, pause: float, started: threading.Event) -> Iterator[bytes]:
    """The body in pieces with a pause between them, as a slow network would deliver it."""
    size = -(-len(body) // pieces)
    for offset in range(0, len(body), size):
        yield body[offset : offset + size]
        started.set()
        time.sleep(pause)


def terminate_when(started: threading.Event, process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server once the upload has begun (from a thread, while the upload goes on)."""

    def wait_then_stop() -> None:
        started.wait(30)
        process.send_signal(signal.SIGTERM)

    threading.Thread(target=wait_then_stop).start()


def leftovers(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "tmp").rglob("*") if p.is_file()] + list((data_dir / "files").rglob("*.dcm"))


class TestShutdown:
    def test_upload_in_flight_finishes(self, new_database: Any, tmp_path: Path) -> None:
        """SIGTERM while a STOW body is arriving: the server waits for it, stores it, answers, then stops."""
        db: Database = new_database()
        data_dir = tmp_path / "archive"
        instances = [ct_instance(size=128) for _ in range(4)]
        started = threading.Event()
        with serve_subprocess({"DICOMWEB_DATABASE_URL": db.url}, data_dir) as server:
            terminate_when(started, server.process)
            response = httpx.post(
                server.url + "/dicomweb/studies",
                content=slow_body(multipart(instances), 6, 0.4, started),
                headers=stow_headers(),
                timeout=60,
            )
            assert response.status_code == 200, response.text
            assert server.process.wait(timeout=30) == 0
        assert db.value("SELECT count(*) FROM instance") == 4
        assert len(list((data_dir / "files").rglob("*.dcm"))) == 4
        assert not [p for p in (data_dir / "tmp").rglob("*") if p.is_file()]

    def test_upload_outlasting_the_grace_period_is_rolled_back(self, new_database: Any, tmp_path: Path) -> None:
        """An upload still arriving when the grace period ends is cancelled: no row, no file, no temp file."""
        db: Database = new_database()
        data_dir = tmp_path / "archive"
        started = threading.Event()
        with serve_subprocess({"DICOMWEB_DATABASE_URL": db.url}, data_dir) as server:
            body = multipart([ct_instance(size=128) for _ in range(4)])
            pause = (GRACE_SECONDS + 5) / 4
            terminate_when(started, server.process)
            try:
                response = httpx.post(
                    server.url + "/dicomweb/studies",
                    content=slow_body(body, 5, pause, started),
                    headers=stow_headers(),
                    timeout=60,
                )
                assert response.status_code >= 500, response.text
            except httpx.TransportError:
                pass  # the server closed the connection: as good as an error status
            assert server.process.wait(timeout=60) == 0
        assert db.value("SELECT count(*) FROM instance") == 0
        assert leftovers(data_dir) == []
