"""A 1 GB STOW-RS request is streamed: the server's memory stays bounded (PS3.18 §10.5, issue target < 150 MB)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from .conftest import Database, serve_subprocess
from .data import ct_series_stream

INSTANCES = 2000  # 512x512 16-bit CT, ~525 KB each: ~1 GB in one request
MAX_RSS_INCREASE = 150 * 1024 * 1024


def tree_rss(process: psutil.Process) -> int:
    """The resident memory of the server: the process and its children (the workers of ``dicomweb serve``, which
    by default runs several: the one that takes the request is one of them, not the supervisor)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class TestLargeRequest:
    """One request of 2,000 CT instances against a real server process."""

    def test_one_gigabyte_request(self, new_database: Any, tmp_path: Path) -> None:
        """All 2,000 stored with 200; the server's peak RSS (all its processes) rises by less than 150 MB."""
        db: Database = new_database()
        boundary = "big-request-boundary"
        length, chunks = ct_series_stream(INSTANCES, boundary)
        assert length > 1_000_000_000
        env = {"DICOMWEB_DATABASE_URL": db.url, "DICOMWEB_MAX_UPLOAD_MB": "2048"}  # above the 100 MiB default
        with serve_subprocess(env, tmp_path / "archive") as server:
            process = psutil.Process(server.process.pid)
            httpx.get(server.url + "/readyz")
            baseline = tree_rss(process)
            peak = baseline
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, tree_rss(process))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                response = httpx.post(
                    server.url + "/dicomweb/studies",
                    content=chunks,
                    headers={
                        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                        "Content-Length": str(length),
                    },
                    timeout=600,
                )
            finally:
                done.set()
                sampler.join()
            assert response.status_code == 200, response.text[:500]
            assert len(response.json()["00081199"]["Value"]) == INSTANCES
        assert db.value("SELECT number_of_series_related_instances FROM series") == INSTANCES
        assert db.value("SELECT sum(file_size) FROM instance") > 1_000_000_000
        increase = peak - baseline
        print(f"server RSS {baseline / 1e6:.0f} MB -> peak {peak / 1e6:.0f} MB (+{increase / 1e6:.0f} MB)")
        assert increase < MAX_RSS_INCREASE
