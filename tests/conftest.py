"""Fixtures: one real PostgreSQL for the session (embedded, or DICOMWEB_DATABASE_URL), a fresh database per server,
and real uvicorn servers on free ports (in a thread, or as a subprocess where memory or process exit matters)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import obstore
import pytest
import uvicorn
from obstore.store import S3Store

from dicomweb.app import create_app
from dicomweb.config import Settings
from dicomweb.zerocopy import HTTP_PROTOCOL

# Most tests exercise DICOMweb itself; tests/test_auth.py turns authentication on where it is the subject.
NO_AUTH: dict[str, str] = {"DICOMWEB_AUTH": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free ports below the kernel's ephemeral range, for servers started one after another: a
    port of that range, free now, may become the local port of any outgoing connection (to PostgreSQL, to radosgw)
    before its server binds it."""
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    held: list[socket.socket] = []
    try:
        for candidate in random.sample(range(20000, ephemeral_start), len(range(20000, ephemeral_start))):
            if len(held) == count:
                break
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                probe.close()
                continue
            held.append(probe)
        assert len(held) == count, f"no {count} free ports below {ephemeral_start}"
        return [int(probe.getsockname()[1]) for probe in held]
    finally:
        for probe in held:
            probe.close()


def eventually(condition: Callable[[], object], seconds: float) -> bool:
    """Whether ``condition`` holds (is truthy) within ``seconds``, looked at every 50 ms."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_until(condition: Callable[[], object], what: str, seconds: float = 30) -> None:
    """``eventually``, failing the test with ``what`` did not happen."""
    assert eventually(condition, seconds), f"still not: {what}"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The PostgreSQL server tests create their databases on."""
    url = os.environ.get("DICOMWEB_DATABASE_URL")
    if url:
        yield url
        return
    from dicomweb.db.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"))
    yield embedded.start()
    embedded.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _with_database(url: str, database: str) -> str:
    parts = httpx.URL(url)
    return str(parts.copy_with(path="/" + database))


@dataclass
class Database:
    url: str

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return run(go())  # type: ignore[no-any-return]

    def value(self, sql: str, *args: Any) -> Any:
        rows = self.fetch(sql, *args)
        return rows[0][0] if rows else None


@pytest.fixture
def new_database(postgres_url: str) -> Iterator[Any]:
    """A factory of empty databases on the session server, dropped at the end of the test."""
    created: list[str] = []

    def make() -> Database:
        name = f"test_{uuid.uuid4().hex[:12]}"
        run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
        created.append(name)
        return Database(_with_database(postgres_url, name))

    yield make
    for name in created:
        run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class LiveServer:
    """A running server: its DICOMweb base URL, settings, database and data folder."""

    url: str
    settings: Settings
    db: Database
    http: str = HTTP_PROTOCOL  # uvicorn's HTTP protocol

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicomweb"

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


@contextmanager
def serve_in_thread(settings: Settings, db: Database, http: str = HTTP_PROTOCOL) -> Iterator[LiveServer]:
    """Run uvicorn with create_app(settings) on a free port in a background thread (with the server's own HTTP
    protocol unless another is named: uvicorn's "httptools" or "h11")."""
    port = free_port()
    settings = settings.replace(port=port, database_url=db.url)
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False, http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings, db, http)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def shared_server(postgres_url: str, data_dir: Path, **changes: Any) -> Iterator[LiveServer]:
    """A server with a database of its own, for a module or the session (dropped afterwards)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    settings = Settings(data_dir=data_dir, auth="disabled", dimse_port=0).replace(**changes)
    try:
        with serve_in_thread(settings, Database(_with_database(postgres_url, name))) as live:
            yield live
    finally:
        run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def session_server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server shared by the tests that only add data under fresh UIDs."""
    with shared_server(postgres_url, tmp_path_factory.mktemp("archive")) as live:
        yield live


@pytest.fixture
def server_factory(new_database: Any, tmp_path: Path) -> Iterator[Any]:
    """Start a server of its own for a test that needs particular settings or an empty archive."""
    with_stack: list[Any] = []

    def start(http: str = HTTP_PROTOCOL, **changes: Any) -> LiveServer:
        settings = Settings(data_dir=tmp_path / f"archive{len(with_stack)}", auth="disabled", dimse_port=0).replace(
            **changes
        )
        manager = serve_in_thread(settings, new_database(), http)
        with_stack.append(manager)
        return manager.__enter__()

    yield start
    for manager in reversed(with_stack):
        manager.__exit__(None, None, None)


@dataclass
class ServerProcess:
    """A ``dicomweb serve`` process: its base URL, the process, and its stderr log file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve_subprocess(env: dict[str, str], data_dir: Path, port: int | None = None) -> Iterator[ServerProcess]:
    """Run ``python -m dicomweb serve`` as its own process (for memory and start/stop tests), on ``port`` or a free
    one."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomweb", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            env={**os.environ, **NO_AUTH, "DICOMWEB_DIMSE_PORT": "0", **env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {server.log}")
            try:
                if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready: {server.log}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class PartialUpload:
    """A STOW-RS request over a raw socket of which only the first ``sent`` bytes of the body (half, unless given)
    have been sent, as by a client on a slow link: what the server does with them is seen before the rest comes
    (``finish``), or instead of it (``close``: the client goes away)."""

    def __init__(
        self, url: str, body: bytes, token: str | None = None, sent: int | None = None, path: str = "/dicomweb/studies"
    ) -> None:
        from .data import stow_headers

        host, port = url.removeprefix("http://").split(":")
        sent = len(body) // 2 if sent is None else sent
        self.rest = body[sent:]
        authorization = f"Authorization: Bearer {token}\r\n" if token else ""
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{authorization}Connection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in stow_headers().items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.sendall(head.encode() + body[:sent])

    def finish(self) -> tuple[int, bytes]:
        """Send the rest of the body; the response's status and body."""
        self.sock.sendall(self.rest)
        response = b""
        while chunk := self.sock.recv(1 << 16):
            response += chunk
        self.sock.close()
        head, _, content = response.partition(b"\r\n\r\n")
        return int(head.split()[1]), content

    def close(self) -> None:
        self.sock.close()


def store(server: LiveServer, parts: Iterable[bytes]) -> None:
    """STOW the parts to a shared server; an earlier test may have stored some of them already (202/409 ok)."""
    from .data import multipart, stow_headers

    response = httpx.post(server.dicomweb + "/studies", content=multipart(parts), headers=stow_headers(), timeout=60)
    assert response.status_code in (200, 202), response.text


# A real S3 server (Ceph's radosgw), shared by the tests of the S3 backend ------------------------------------

START_RGW = Path(__file__).parent / "s3" / "start_rgw.sh"
CEPH = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph-authtool", "monmaptool")


def require_ceph() -> None:
    """Skip (locally) or fail (CI) unless Debian's Ceph, which start_rgw.sh runs, is installed."""
    missing = [tool for tool in CEPH if shutil.which(tool) is None]
    if missing:
        message = f"missing {', '.join(missing)}: apt-get install ceph-mon ceph-osd radosgw ceph-common"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def radosgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A throw-away radosgw on free ports; its S3 endpoint and test credentials, as start_rgw.sh prints them."""
    require_ceph()
    folder = tmp_path_factory.mktemp("rgw") / "ceph"
    env = {**os.environ, "RGW_DIR": str(folder), "RGW_PORT": str(free_port()), "MON_PORT": str(free_port())}
    started = subprocess.run(["bash", str(START_RGW), "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stderr
        exported = dict(
            line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines() if "=" in line
        )
        yield {**exported, "RGW_CONF": str(folder / "ceph.conf")}  # for radosgw-admin
    finally:
        subprocess.run(["bash", str(START_RGW), "stop"], env=env, capture_output=True, timeout=60)


def create_bucket(radosgw: dict[str, str], name: str) -> None:
    """CreateBucket, as a presigned PUT of the bucket's root (the archive creates no buckets: it is given one)."""
    store = S3Store(
        name,
        endpoint=radosgw["S3_ENDPOINT_URL"],
        region="us-east-1",
        access_key_id=radosgw["AWS_ACCESS_KEY_ID"],
        secret_access_key=radosgw["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    response = httpx.put(obstore.sign(store, "PUT", "", datetime.timedelta(minutes=1)), content=b"")
    assert response.status_code == 200, response.text


def bucket_settings(radosgw: dict[str, str], folder: Path) -> dict[str, Any]:
    """The settings of an archive on a new bucket of its own (keys under a prefix), its key pair in a credentials
    file in ``folder``."""
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    create_bucket(radosgw, bucket)
    credentials = folder / f"credentials-{bucket}"
    credentials.write_text(
        "[default]\n"
        f"aws_access_key_id = {radosgw['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {radosgw['AWS_SECRET_ACCESS_KEY']}\n"
    )
    return {
        "storage": "s3",
        "s3_endpoint": radosgw["S3_ENDPOINT_URL"],
        "s3_bucket": bucket,
        "s3_prefix": "pacs/",
        "s3_path_style": True,
        "s3_credentials_file": str(credentials),
    }


def multipart_uploads(radosgw: dict[str, str], bucket: str) -> list[str]:
    """The keys of the bucket's multipart uploads in progress, which obstore cannot list: the bucket's index as
    ``radosgw-admin bucket list`` gives it, where each upload in progress has a ``_multipart_<key>.<id>.meta``
    entry."""
    listed = subprocess.run(
        ["radosgw-admin", "-c", radosgw["RGW_CONF"], "bucket", "list", f"--bucket={bucket}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    names = [entry["name"] for entry in json.loads(listed.stdout)]
    return [name.removeprefix("_multipart_").rsplit(".", 2)[0] for name in names if name.startswith("_multipart_")
            and name.endswith(".meta")]  # fmt: skip
