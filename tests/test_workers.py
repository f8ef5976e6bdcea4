"""Several server processes over one database and one storage folder: what one stores, every other serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psutil
import pydicom
import pytest

from .conftest import Database, serve_subprocess
from .data import ct_instance, multipart, stow_headers
from .test_cli import EMBEDDED, postgres_running


def stow(url: str, *instances: bytes) -> None:
    response = httpx.post(url + "/dicomweb/studies", content=multipart(instances), headers=stow_headers(), timeout=60)
    assert response.status_code == 200, response.text


class TestWorkers:
    def test_store_in_one_process_read_in_another(self, new_database: Any, tmp_path: Path) -> None:
        """Two servers on one PostgreSQL and one data folder: stored through the first, served by the second;
        deleted through the second, gone from the first."""
        db: Database = new_database()
        env = {"DICOMWEB_DATABASE_URL": db.url}
        data_dir = tmp_path / "archive"
        with serve_subprocess(env, data_dir) as first, serve_subprocess(env, data_dir) as second:
            study = pydicom.uid.generate_uid()
            instance = ct_instance(study_instance_uid=study)
            stow(first.url, instance)
            found = httpx.get(second.url + "/dicomweb/studies", params={"StudyInstanceUID": study}).json()
            assert found[0]["00201208"]["Value"] == [1]
            retrieved = httpx.get(second.url + f"/dicomweb/studies/{study}", headers={"accept": _DICOM})
            assert retrieved.status_code == 200 and instance in retrieved.content
            assert httpx.delete(second.url + f"/dicomweb/studies/{study}").status_code == 204
            assert httpx.get(first.url + f"/dicomweb/studies/{study}/metadata").status_code == 404

    @pytest.mark.parametrize("workers", [2])
    def test_serve_with_workers(self, tmp_path: Path, workers: int) -> None:
        """``--workers N`` (DICOMWEB_WORKERS): N processes behind one port on the embedded PostgreSQL, which the
        supervisor starts once and stops when it stops."""
        data_dir = tmp_path / "archive"
        with serve_subprocess({**EMBEDDED, "DICOMWEB_WORKERS": str(workers)}, data_dir) as server:
            studies = [pydicom.uid.generate_uid() for _ in range(8)]
            for study in studies:  # separate connections: the kernel spreads them over the workers
                stow(server.url, ct_instance(study_instance_uid=study))
            for study in studies:
                assert httpx.get(server.url + f"/dicomweb/studies/{study}/metadata").status_code == 200
            assert server.log.count("Application startup complete") == workers
            # One scrape adds up the workers' metrics: every store above is counted, whichever worker took it.
            metrics = httpx.get(server.url + "/metrics").text
            stored = 'dicomweb_http_requests_total{method="POST",route="/dicomweb/studies",status="200"} 8.0'
            assert stored in metrics
        assert server.log.count("Application shutdown complete") == workers
        assert not postgres_running(data_dir)

    def test_workers_end_with_a_killed_supervisor(self, new_database: Any, tmp_path: Path) -> None:
        """The supervisor of ``--workers 2`` killed (SIGKILL, no chance to stop its workers): the workers end too,
        within seconds, and the port is free; no orphan keeps serving."""
        db: Database = new_database()
        with serve_subprocess({"DICOMWEB_DATABASE_URL": db.url, "DICOMWEB_WORKERS": "2"}, tmp_path / "a") as server:
            supervisor = psutil.Process(server.process.pid)
            workers = [p for p in supervisor.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
            assert len(workers) == 2
            server.process.kill()
            server.process.wait()
            gone, alive = psutil.wait_procs(workers, timeout=20)
            assert alive == []
            with pytest.raises(httpx.TransportError):
                httpx.get(server.url + "/readyz", timeout=2)


_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
