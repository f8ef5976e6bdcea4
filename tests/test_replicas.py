"""Replicas: three ``dicomweb serve`` processes on one PostgreSQL database and one bucket of a real radosgw, behind
Debian's nginx running deploy/proxy/nginx.conf (the load balancer of docker-compose.yml). Any replica answers any
request (DICOMweb, the reporting API, DIMSE) with what another stored, deleted or registered a moment before, under one
token; one replica killed (SIGKILL) in the middle of a STOW leaves the others serving and loses nothing acknowledged.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomweb.config import Settings

from .conftest import (
    Database,
    LiveServer,
    PartialUpload,
    ServerProcess,
    _admin,
    _with_database,
    create_bucket,
    free_ports,
    run,
    serve_subprocess,
    wait_until,
)
from .data import ct_instance, multipart, stow_headers
from .nginx import NGINX, render, run_nginx
from .test_dimse import DCMTK, StorageNode, c_get, c_move, dcmtk, study_identifier
from .test_reconcile import BIG

REPLICAS = 3
PROXY_CONF = Path(__file__).parent.parent / "deploy" / "proxy" / "nginx.conf"
CALLING = "MODALITY1"
NATIVE_CT = [("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")]  # CT Image Storage, Explicit VR Little Endian


@dataclass
class Cluster:
    """The replicas (their processes, HTTP and DIMSE ports, data folders), the proxy in front of them, the database
    and bucket they share, and a token made once (``dicomweb token``) for all of them."""

    env: dict[str, str]
    db: Database
    work: Path
    ports: list[int]
    dimse_ports: list[int]
    proxy: str = ""
    token: str = ""
    processes: list[ServerProcess] = field(default_factory=list)
    stack: ExitStack = field(default_factory=ExitStack)

    def data_dir(self, n: int) -> Path:
        return self.work / f"replica-{n}"

    def start(self, n: int) -> ServerProcess:
        """Replica ``n`` on its ports and data folder, once it is ready."""
        env = {**self.env, "DICOMWEB_DIMSE_PORT": str(self.dimse_ports[n])}
        process = self.stack.enter_context(serve_subprocess(env, self.data_dir(n), self.ports[n]))
        if n < len(self.processes):
            self.processes[n] = process
        else:
            self.processes.append(process)
        return process

    def url(self, n: int) -> str:
        return self.processes[n].url

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def client(self, base: str) -> httpx.Client:
        return httpx.Client(base_url=base, headers=self.headers, timeout=60)

    def dimse(self, n: int) -> LiveServer:
        """Replica ``n`` as test_dimse's DIMSE helpers address a server (its DIMSE port)."""
        settings = Settings(data_dir=self.data_dir(n), dimse_port=self.dimse_ports[n])
        return LiveServer(self.url(n), settings, self.db)


@pytest.fixture(scope="module")
def cluster(radosgw: dict[str, str], postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not NGINX.exists():
        message = "missing nginx: tests/e2e/setup.sh installs it (as .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("replicas")
    name = f"test_{uuid.uuid4().hex[:12]}"
    run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    bucket = f"replicas-{uuid.uuid4().hex[:12]}"
    create_bucket(radosgw, bucket)
    db = Database(_with_database(postgres_url, name))
    env = {
        "DICOMWEB_AUTH": "enabled",
        "DICOMWEB_JWT_SECRET_FILE": str(work / "secrets" / "jwt-secret"),  # one file, as compose's shared volume
        "DICOMWEB_DATABASE_URL": db.url,
        "DICOMWEB_WORKERS": "1",  # the process killed is the one that stores
        "DICOMWEB_STORAGE": "s3",
        "DICOMWEB_S3_ENDPOINT": radosgw["S3_ENDPOINT_URL"],
        "DICOMWEB_S3_BUCKET": bucket,
        "DICOMWEB_S3_PREFIX": "pacs/",
        "DICOMWEB_S3_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": radosgw["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": radosgw["AWS_SECRET_ACCESS_KEY"],
    }
    ports = free_ports(2 * REPLICAS + 1)  # HTTP and DIMSE of each replica, and the proxy's
    cluster = Cluster(env, db, work, ports[:REPLICAS], ports[REPLICAS : 2 * REPLICAS])
    try:
        with cluster.stack:
            for n in range(REPLICAS):
                cluster.start(n)
            cluster.token = make_token(cluster)
            proxy_port = ports[-1]
            cluster.proxy = f"http://127.0.0.1:{proxy_port}"
            conf = proxy_conf(PROXY_CONF.read_text(), cluster.ports, proxy_port)
            cluster.stack.enter_context(run_nginx(conf, work / "nginx", cluster.proxy + "/readyz"))
            yield cluster
    finally:
        run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def proxy_conf(template: str, ports: list[int], listen: int) -> str:
    """deploy/proxy/nginx.conf with its upstream's servers replaced by the replicas (their parameters kept) and
    its listening port by ``listen``."""
    servers = re.findall(r"^ *server dicomweb-\d+:8080( [^;]*)?;\n", template, re.MULTILINE)
    assert servers, "deploy/proxy/nginx.conf names no replica"
    parameters = servers[0]
    lines = "".join(f"    server 127.0.0.1:{port}{parameters};\n" for port in ports)
    upstream = re.sub(r"(?:^ *server dicomweb-\d+:8080[^;]*;\n)+", lambda _: lines, template, flags=re.MULTILINE)
    return render(upstream, [("listen 8080;", f"listen 127.0.0.1:{listen};")])


def make_token(cluster: Cluster) -> str:
    """``dicomweb token`` as a user runs it beside replica 0, with the shared secret file."""
    made = subprocess.run(
        [sys.executable, "-m", "dicomweb", "token", "--role", "ADMIN", "--role", "RADIOLOGIST", "--subject",
         "replica-admin", "--data-dir", str(cluster.data_dir(0))],
        env={**cluster.env}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return made.stdout.strip()


def uids(instance: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(instance), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def instance_path(instance: bytes) -> str:
    study, series, sop = uids(instance)
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def stow(client: httpx.Client, instances: list[bytes]) -> httpx.Response:
    return client.post("/dicomweb/studies", content=multipart(instances), headers=stow_headers())


ANY_SYNTAX = {"accept": "application/dicom; transfer-syntax=*"}


class TestAnyReplica:
    """What one replica did, every other one sees at once: nothing lives only in one process."""

    def test_the_token_is_accepted_by_every_replica(self, cluster: Cluster) -> None:
        for n in range(REPLICAS):
            with cluster.client(cluster.url(n)) as client:
                assert client.get("/dicomweb/studies", params={"limit": "1"}).status_code == 200
            assert httpx.get(cluster.url(n) + "/dicomweb/studies").status_code == 401

    def test_store_read_search_delete_across_replicas(self, cluster: Cluster) -> None:
        """Stored through replica 0; searched, read whole, by frame and as metadata through 1 and 2 and through the
        proxy; deleted through 2, and gone from 0 and 1 at once."""
        study, series = generate_uid(), generate_uid()
        parts = [ct_instance(study, series, InstanceNumber=n) for n in range(3)]
        with (
            cluster.client(cluster.url(0)) as first,
            cluster.client(cluster.url(1)) as second,
            cluster.client(cluster.url(2)) as third,
            cluster.client(cluster.proxy) as proxy,
        ):
            assert stow(first, parts).status_code == 200
            found = second.get(f"/dicomweb/studies/{study}/instances")
            assert found.status_code == 200 and len(found.json()) == 3
            for part in parts:
                whole = third.get(instance_path(part), headers=ANY_SYNTAX)
                assert whole.status_code == 200 and part in whole.content
                frame = second.get(instance_path(part) + "/frames/1", headers={"accept": "*/*"})
                assert frame.status_code == 200
                assert pydicom.dcmread(io.BytesIO(part)).PixelData in frame.content
            metadata = third.get(f"/dicomweb/studies/{study}/metadata")
            assert metadata.status_code == 200 and len(metadata.json()) == 3
            for _ in range(2 * REPLICAS):  # whichever replica the proxy picks
                assert proxy.get(f"/dicomweb/studies/{study}/series").json()[0]["0020000E"]["Value"] == [series]
                assert proxy.get(instance_path(parts[0]), headers=ANY_SYNTAX).status_code == 200
            assert third.delete(f"/dicomweb/studies/{study}").status_code in (200, 204)
            for client in (first, second, proxy):
                assert client.get(instance_path(parts[0]), headers=ANY_SYNTAX).status_code == 404
                assert client.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json() == []
        assert not cluster.db.value("SELECT count(*) FROM study WHERE study_instance_uid = $1", study)

    def test_reporting_across_replicas(self, cluster: Cluster) -> None:
        """A study registered through replica 1 for images stored through replica 0, completed through 2, reported
        through 0 and verified through 1: the verified report's SR, which replica 1 wrote to the bucket, is read
        through replica 2; the audit trail holds every replica's accesses."""
        study_uid = generate_uid()
        with (
            cluster.client(cluster.url(0)) as first,
            cluster.client(cluster.url(1)) as second,
            cluster.client(cluster.url(2)) as third,
        ):
            assert stow(first, [ct_instance(study_uid, patient_id="P-REPLICA")]).status_code == 200
            created = second.post(
                "/api/radiology/studies",
                json={"patientId": "P-REPLICA", "modality": "CT", "studyInstanceUID": study_uid},
            )
            assert created.status_code == 201, created.text
            study = created.json()
            assert study["status"] == "in_progress"  # its images are there already
            moved = third.put(f"/api/radiology/studies/{study['id']}/status", json={"status": "completed"})
            assert moved.status_code == 200, moved.text
            report = first.post(f"/api/radiology/studies/{study['id']}/report", json={"findings": "No acute findings."})
            assert report.status_code == 201, report.text
            verified = second.post(f"/api/radiology/reports/{report.json()['id']}/verify")
            assert verified.status_code == 200, verified.text
            sr = verified.json()["srSOPInstanceUID"]
            assert third.get(f"/api/radiology/reports/{report.json()['id']}").json()["status"] == "final"
            found = third.get(f"/dicomweb/studies/{study_uid}/instances", params={"SOPInstanceUID": sr})
            assert found.status_code == 200, found.text
            (entry,) = found.json()
            series = entry["0020000E"]["Value"][0]
            retrieved = third.get(f"/dicomweb/studies/{study_uid}/series/{series}/instances/{sr}", headers=ANY_SYNTAX)
            assert retrieved.status_code == 200 and b"No acute findings." in retrieved.content
        audited = cluster.db.value(
            "SELECT count(*) FROM audit_event WHERE study_instance_uid = $1 AND subject = 'replica-admin'", study_uid
        )
        assert audited >= 4

    @pytest.mark.skipif(not (DCMTK / "storescu").exists(), reason="DCMTK is installed by .ci/run")
    def test_dimse_across_replicas(self, cluster: Cluster, tmp_path: Path) -> None:
        """A node registered through replica 0's API is known to every replica at once: it stores by C-STORE
        (DCMTK's storescu) into replica 1, finds the study by C-FIND (findscu) at replica 2, retrieves it by C-GET
        from replica 0 and has replica 2 send it by C-MOVE to a storage node registered through replica 1."""
        destination = StorageNode("REPLICA-DEST")
        try:
            with cluster.client(cluster.url(0)) as first, cluster.client(cluster.url(1)) as second:
                node = {"host": "127.0.0.1", "port": 104, "permissions": ["store", "find", "get", "move"]}
                assert first.put(f"/api/dicom-nodes/{CALLING}", json=node).status_code in (200, 201)
                target = {"host": "127.0.0.1", "port": destination.port, "permissions": []}
                assert second.put("/api/dicom-nodes/REPLICA-DEST", json=target).status_code in (200, 201)
            study = generate_uid()
            instance = ct_instance(study)
            sent = tmp_path / "sent.dcm"
            sent.write_bytes(instance)
            stored = subprocess.run(
                [dcmtk("storescu"), "-aet", CALLING, "-aec", "DICOMWEB", "127.0.0.1", str(cluster.dimse_ports[1]),
                 str(sent)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert stored.returncode == 0, stored.stderr
            found = subprocess.run(
                [dcmtk("findscu"), "-S", "-aet", CALLING, "-aec", "DICOMWEB", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study}", "-k", "PatientID", "127.0.0.1", str(cluster.dimse_ports[2])],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert found.returncode == 0, found.stderr
            assert study in found.stderr + found.stdout and "PAT-1" in found.stderr + found.stdout
            final, received = c_get(cluster.dimse(0), study_identifier(study), NATIVE_CT)
            assert final.Status == 0x0000
            assert [ds.SOPInstanceUID for ds in received] == [uids(instance)[2]]
            statuses = c_move(cluster.dimse(2), study_identifier(study), "REPLICA-DEST")
            assert statuses[-1].Status == 0x0000
            assert [ds.SOPInstanceUID for ds in destination.received] == [uids(instance)[2]]
        finally:
            destination.stop()


@dataclass
class Load:
    """Clients of the proxy storing and reading until stopped: what was acknowledged, and every failure with the
    time it came."""

    proxy: str
    headers: dict[str, str]
    acknowledged: dict[str, bytes] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)
    latest: bytes | None = None  # the instance acknowledged last, which the reader reads
    reads: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def storing(self) -> None:
        study = generate_uid()
        with httpx.Client(base_url=self.proxy, headers=self.headers, timeout=60) as client:
            while not self.stop.is_set():
                instance = ct_instance(study)
                try:
                    response = stow(client, [instance])
                except httpx.HTTPError as exc:
                    self.failures.append((time.monotonic(), f"STOW {type(exc).__name__}"))
                    continue
                if response.status_code == 200:
                    self.acknowledged[uids(instance)[2]] = instance
                    self.latest = instance
                else:
                    self.failures.append((time.monotonic(), f"STOW {response.status_code}"))

    def reading(self) -> None:
        with httpx.Client(base_url=self.proxy, headers=self.headers, timeout=60) as client:
            while not self.stop.is_set():
                instance = self.latest
                if instance is None:
                    time.sleep(0.01)
                    continue
                try:
                    response = client.get(instance_path(instance), headers=ANY_SYNTAX)
                    ok = response.status_code == 200 and instance in response.content
                    failure = "" if ok else f"GET {response.status_code}"
                except httpx.HTTPError as exc:
                    failure = f"GET {type(exc).__name__}"
                if failure:
                    self.failures.append((time.monotonic(), failure))
                self.reads += 1


class TestKilledReplica:
    def test_sigkill_in_the_middle_of_a_stow(self, cluster: Cluster) -> None:
        """Clients store and read through the proxy while replica 2, with a STOW half received, is killed with
        SIGKILL: the half-sent STOW is never acknowledged; requests in flight on replica 2 may fail (502), those
        after it never do; every instance acknowledged before, during and after is stored once, in the bucket, and
        read back byte for byte; replica 2 started again on its data folder serves at once beside the others."""
        victim = 2
        load = Load(cluster.proxy, cluster.headers)
        workers = [threading.Thread(target=load.storing) for _ in range(2)] + [threading.Thread(target=load.reading)]
        for worker in workers:
            worker.start()
        half = ct_instance(size=BIG)
        upload = PartialUpload(cluster.url(victim), multipart([half]), cluster.token)
        try:
            wait_until(lambda: len(load.acknowledged) >= 10, "stores through the proxy")
            wait_until(lambda: any((cluster.data_dir(victim) / "tmp").iterdir()), "the half-received upload spooled")
            cluster.processes[victim].process.kill()
            cluster.processes[victim].process.wait()
            killed = time.monotonic()
            time.sleep(1.0)
            acknowledged_then = len(load.acknowledged)
            time.sleep(3.0)
        finally:
            load.stop.set()
            for worker in workers:
                worker.join(timeout=60)
            upload.close()
        settled = killed + 1.0  # nginx has marked the replica failed: every later request goes to the others
        assert [f for at, f in load.failures if at > settled] == []
        assert len(load.failures) <= 3, load.failures  # at most one request per client in flight on the victim
        assert len(load.acknowledged) > acknowledged_then + 10  # the other two kept storing
        assert load.reads > 20
        rows = {
            r["sop_instance_uid"]: r["file_path"]
            for r in cluster.db.fetch("SELECT sop_instance_uid, file_path FROM instance")
        }
        assert uids(half)[2] not in rows
        assert set(load.acknowledged) <= set(rows)
        restarted = cluster.start(victim)
        assert "connection(s) of other archive processes" in restarted.log
        with cluster.client(restarted.url) as client, cluster.client(cluster.proxy) as proxy:
            for instance in load.acknowledged.values():
                response = (client if len(instance) % 2 else proxy).get(instance_path(instance), headers=ANY_SYNTAX)
                assert response.status_code == 200 and instance in response.content
            assert stow(client, [ct_instance()]).status_code == 200
