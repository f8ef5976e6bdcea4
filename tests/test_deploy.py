"""The container files (Dockerfile, docker-compose.yml, deploy/): no Docker engine runs on our machines, so these
checks keep them in step with the code and with each other. What runs without containers runs here or elsewhere:
deploy/s3's entrypoint with Debian's Ceph (TestS3Service), deploy/proxy's nginx.conf in `nginx -t` (and for real in
tests/test_replicas.py), deploy/viewer in tests/test_ohif.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import obstore
import pytest
import yaml
from obstore.store import S3Store

from dicomweb.config import SETTINGS, Settings

from .conftest import free_port, require_ceph
from .nginx import NGINX, main_config, render
from .test_ohif import app_config

ROOT = Path(__file__).parent.parent
PROXY_CONF = ROOT / "deploy" / "proxy" / "nginx.conf"
S3_DOCKERFILE = ROOT / "deploy" / "s3" / "Dockerfile"
START_RGW = ROOT / "tests" / "s3" / "start_rgw.sh"
ENTRYPOINT = ROOT / "deploy" / "s3" / "entrypoint.sh"

# The Debian package of each command start_rgw.sh and deploy/s3/entrypoint.sh run (test_package_of_each_command asks
# dpkg where the command is installed).
PACKAGE_OF = {
    "ceph": "ceph-common",
    "ceph-authtool": "ceph-common",
    "radosgw-admin": "ceph-common",
    "ceph-mon": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "monmaptool": "ceph-base",
    "radosgw": "radosgw",
    "uuidgen": "uuid-runtime",
    "python3": "python3",
    "curl": "curl",
}
# The package of the file itself, where it is another: python3's urllib (the readiness check) is in python3, which
# depends on python3-minimal, which ships /usr/bin/python3.
SHIPPED_BY = {**PACKAGE_OF, "python3": "python3-minimal"}


class TestDistribution:
    def test_every_package_is_listed(self) -> None:
        """`pip install .` (the image, a plain install) ships only the packages pyproject.toml lists: every folder of
        dicomweb/ and reporting/ with an __init__.py must be among them (an editable install would not notice)."""
        packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
        found = {
            ".".join(init.parent.relative_to(ROOT).parts)
            for top in ("dicomweb", "reporting")
            for init in (ROOT / top).rglob("__init__.py")
        }
        assert found == packages


class TestDockerfile:
    def test_copies_every_package(self) -> None:
        """`pip install .` in the image needs every top-level package pyproject.toml lists (and schema.sql)."""
        packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
        copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
        assert {name for name in packages if "." not in name} <= copied
        assert "schema.sql" in (ROOT / "Dockerfile").read_text()

    def test_runs_as_non_root_with_a_readiness_check(self) -> None:
        dockerfile = (ROOT / "Dockerfile").read_text()
        assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
        assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile

    def test_an_init_reaps_orphans(self) -> None:
        """The server is not PID 1: tini is, and reaps the embedded PostgreSQL's orphaned backends after a restart."""
        dockerfile = (ROOT / "Dockerfile").read_text()
        assert re.search(r"^RUN apt-get .*install .*\btini\b", dockerfile, re.MULTILINE)
        assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--"\]$', dockerfile, re.MULTILINE)


def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it: YAML, its anchors and merge keys resolved."""
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return parsed


def replicas() -> dict[str, dict[str, Any]]:
    """The services that run the archive: those built from the repository's Dockerfile."""
    return {name: service for name, service in compose()["services"].items() if service.get("build") == "."}


def settings_of(service: dict[str, Any]) -> Settings:
    """The archive's settings in a service, as the server reads them from its environment (a bad value raises)."""
    return Settings.from_env({name: str(value) for name, value in service["environment"].items()})


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes: mount point -> volume (or host path)."""
    return {target: source for source, target, *_ in (volume.split(":") for volume in service["volumes"])}


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    """The variables a Dockerfile's ENV lines set (NAME=value pairs)."""
    lines = re.findall(r"^ENV (.+)$", dockerfile.read_text(), re.MULTILINE)
    return dict(pair.split("=", 1) for line in lines for pair in line.split())


def proxy_upstream() -> set[tuple[str, int]]:
    """The servers of deploy/proxy/nginx.conf's one upstream block, as (host, port)."""
    config = PROXY_CONF.read_text()
    (upstream,) = re.findall(r"^upstream dicomweb \{(.*?)^\}", config, re.MULTILINE | re.DOTALL)
    return {(host, int(port)) for host, port in re.findall(r"^\s*server (\S+):(\d+)\b[^;]*;", upstream, re.MULTILINE)}


def proxy_listen_port() -> int:
    (port,) = re.findall(r"^\s*listen (\d+);", PROXY_CONF.read_text(), re.MULTILINE)
    return int(port)


class TestCompose:
    def test_services_and_build_contexts(self) -> None:
        """PostgreSQL, the S3 server, two archive replicas, their proxy and the viewer; every build context exists
        with its Dockerfile, and every image is named without a registry host."""
        services = compose()["services"]
        assert set(services) == {"db", "s3", "dicomweb-1", "dicomweb-2", "proxy", "viewer"}
        for name, service in services.items():
            build = service.get("build")
            if isinstance(build, str):
                build = {"context": build}
            if build is not None:  # compose finds the Dockerfile in the context
                assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file(), name
            assert "/" not in service.get("image", "").split(":")[0], name

    def test_one_archive_image_for_both_replicas(self) -> None:
        """The replicas run one image, built once from the repository's Dockerfile."""
        found = replicas()
        assert set(found) == {"dicomweb-1", "dicomweb-2"}
        assert len({service["image"] for service in found.values()}) == 1

    def test_every_archive_variable_is_a_setting(self) -> None:
        """Every DICOMWEB_* variable any service sets is a setting of dicomweb/config.py, with a value it accepts."""
        known = {setting.env for setting in SETTINGS}
        for name, service in compose()["services"].items():
            environment = service.get("environment", {})
            assert isinstance(environment, dict), name
            assert {variable for variable in environment if variable.startswith("DICOMWEB_")} <= known, name
        for service in replicas().values():
            settings_of(service)

    def test_replicas_differ_only_in_the_dimse_host_port(self) -> None:
        """Same image, settings, dependencies and shared volumes; each its own data volume and DICOM host port."""
        first, second = replicas().values()
        same = {"image", "build", "environment", "depends_on", "restart"}
        assert set(first) == set(second) == same | {"volumes", "ports"}
        for key in same:
            assert first[key] == second[key], key
        data_dir = str(settings_of(first).data_dir)
        assert mounts(first)[data_dir] != mounts(second)[data_dir]
        assert {k: v for k, v in mounts(first).items() if k != data_dir} == {
            k: v for k, v in mounts(second).items() if k != data_dir
        }
        dimse_port = settings_of(first).dimse_port
        published = [port.split(":") for service in (first, second) for port in service["ports"]]
        assert [int(inside) for _, inside in published] == [dimse_port, dimse_port]
        assert len({host for host, _ in published}) == 2

    def test_replicas_share_database_bucket_and_secret(self) -> None:
        """One PostgreSQL (the db service), one bucket on the s3 service, one token secret on a volume both mount
        (whose mount point the image makes for its user, so the first replica can create the secret there)."""
        services = compose()["services"]
        settings = [settings_of(service) for service in replicas().values()]
        assert all(s.storage == "s3" and s.s3_path_style and not s.s3_credentials_file for s in settings)
        for field in ("database_url", "s3_endpoint", "s3_bucket", "s3_prefix", "jwt_secret_file", "data_dir"):
            assert len({getattr(s, field) for s in settings}) == 1, field
        database = settings[0].database_url
        assert f"@db:5432/{services['db']['environment']['POSTGRES_DB']}" in database
        assert database.startswith(
            f"postgresql://{services['db']['environment']['POSTGRES_USER']}:{services['db']['environment']['POSTGRES_PASSWORD']}@"
        )
        rgw_port = dockerfile_env(S3_DOCKERFILE)["RGW_PORT"]
        assert settings[0].s3_endpoint == f"http://s3:{rgw_port}"
        secret = Path(settings[0].jwt_secret_file)
        volumes = [mounts(service)[str(secret.parent)] for service in replicas().values()]
        assert volumes[0] == volumes[1] and volumes[0] in compose()["volumes"]
        assert re.search(
            rf"^RUN .*mkdir [^&]*{secret.parent}\b.*chown dicomweb [^&]*{secret.parent}\b",
            (ROOT / "Dockerfile").read_text(),
            re.MULTILINE,
        )

    def test_replicas_wait_for_the_database_and_the_bucket(self) -> None:
        for service in replicas().values():
            assert service["depends_on"] == {
                "db": {"condition": "service_healthy"},
                "s3": {"condition": "service_healthy"},
            }

    def test_s3_user_is_the_replicas(self) -> None:
        """The s3 service makes the user and the bucket the replicas use."""
        s3 = compose()["services"]["s3"]["environment"]
        for service in replicas().values():
            environment = service["environment"]
            assert s3["S3_ACCESS_KEY"] == environment["AWS_ACCESS_KEY_ID"]
            assert s3["S3_SECRET_KEY"] == environment["AWS_SECRET_ACCESS_KEY"]
            assert s3["S3_BUCKET"] == environment["DICOMWEB_S3_BUCKET"]

    def test_s3_keeps_its_cluster_on_its_volume(self) -> None:
        """start_rgw.sh's folder is on the s3 service's volume, with the OSD's data in a file there (not memory)."""
        env = dockerfile_env(S3_DOCKERFILE)
        assert env["OSD_STORE"] == "bluestore"
        (mount_point,) = mounts(compose()["services"]["s3"])
        assert Path(mount_point) in Path(env["RGW_DIR"]).parents
        assert re.search(rf"^RUN .*mkdir {mount_point} && chown ceph", S3_DOCKERFILE.read_text(), re.MULTILINE)

    def test_proxy_upstream_is_the_replicas(self) -> None:
        """deploy/proxy/nginx.conf's upstream names exactly the replica services, at the port they listen on; the
        proxy service runs that file and publishes its port."""
        assert proxy_upstream() == {(name, settings_of(service).port) for name, service in replicas().items()}
        proxy = compose()["services"]["proxy"]
        assert mounts(proxy)["/etc/nginx/conf.d/default.conf"] == "./deploy/proxy/nginx.conf"
        assert proxy["ports"] == [f"{proxy_listen_port()}:{proxy_listen_port()}"]
        assert set(proxy["depends_on"]) == set(replicas())

    def test_viewer_proxies_the_proxy(self) -> None:
        """deploy/viewer/nginx.conf reaches the archive through the proxy service, by its name and port."""
        nginx = (ROOT / "deploy" / "viewer" / "nginx.conf").read_text()
        assert re.findall(r"proxy_pass (\S+);", nginx) == [f"http://proxy:{proxy_listen_port()}"]
        assert set(compose()["services"]["viewer"]["depends_on"]) == {"proxy"}


class TestS3Image:
    def test_installs_what_start_rgw_runs(self) -> None:
        """deploy/s3/Dockerfile installs the package of every command start_rgw.sh needs (its own list of them, and
        the readiness check's python3) and of curl, which the entrypoint makes the bucket with."""
        script = START_RGW.read_text()
        (needed,) = re.findall(r"for b in ([^;]+); do\n\s*command -v", script)
        commands = [*needed.split(), "python3", "curl"]
        assert "/usr/bin/python3" in script and "curl " in (ROOT / "deploy" / "s3" / "entrypoint.sh").read_text()
        assert set(commands) <= set(PACKAGE_OF), "a new command of start_rgw.sh: name its package in PACKAGE_OF"
        (install,) = re.findall(r"apt-get install -y --no-install-recommends ([^&]+)&&", S3_DOCKERFILE.read_text())
        installed = set(install.replace("\\", " ").split())
        assert {PACKAGE_OF[command] for command in commands} <= installed

    def test_package_of_each_command(self) -> None:
        """PACKAGE_OF agrees with dpkg where the command is installed (CI installs Ceph for the S3 tests)."""
        if shutil.which("dpkg") is None:
            pytest.skip("no dpkg")
        for command, package in SHIPPED_BY.items():
            owner = subprocess.run(["dpkg", "-S", f"/usr/bin/{command}"], capture_output=True, text=True)
            if owner.returncode == 0:  # else not installed here
                assert owner.stdout.split(":")[0] == package, command

    def test_runs_the_scripts_as_ceph_with_a_health_check(self) -> None:
        dockerfile = S3_DOCKERFILE.read_text()
        assert re.search(r"^FROM debian:bookworm-slim$", dockerfile, re.MULTILINE)
        assert "COPY tests/s3/start_rgw.sh deploy/s3/entrypoint.sh /usr/local/bin/" in dockerfile
        assert re.search(r"^USER ceph$", dockerfile, re.MULTILINE)
        assert re.search(
            r'^HEALTHCHECK .*CMD \["bash", "/usr/local/bin/entrypoint.sh", "check"\]$', dockerfile, re.MULTILINE
        )
        assert re.search(
            r'^ENTRYPOINT \["/usr/bin/tini", "--", "bash", "/usr/local/bin/entrypoint.sh"\]$', dockerfile, re.MULTILINE
        )
        assert f"EXPOSE {dockerfile_env(S3_DOCKERFILE)['RGW_PORT']}" in dockerfile


class TestS3Service:
    def test_objects_outlive_a_restart(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """deploy/s3/entrypoint.sh as the s3 container runs it, without the container: it makes the cluster and the
        bucket and turns healthy; on SIGTERM it stops the daemons and ends; started again, it resumes the cluster,
        and an object stored before is there."""
        require_ceph()
        work = tmp_path_factory.mktemp("s3")  # a short path: Ceph's admin sockets are Unix sockets (108 bytes)
        for script in (START_RGW, ENTRYPOINT):
            shutil.copy(script, work)  # side by side, as the image has them
        service = {name: str(value) for name, value in compose()["services"]["s3"]["environment"].items()}
        env = {
            **os.environ,
            **dockerfile_env(S3_DOCKERFILE),
            **service,
            "RGW_DIR": str(work / "volume" / "cluster"),
            "RGW_HOST": "127.0.0.1",
            "RGW_PORT": str(free_port()),
            "MON_PORT": str(free_port()),
        }
        entrypoint = ["bash", str(work / ENTRYPOINT.name)]
        store = S3Store(
            service["S3_BUCKET"],
            endpoint=f"http://127.0.0.1:{env['RGW_PORT']}",
            region="us-east-1",
            access_key_id=service["S3_ACCESS_KEY"],
            secret_access_key=service["S3_SECRET_KEY"],
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )
        data = os.urandom(100_000)
        log = work / "entrypoint.log"

        started: list[subprocess.Popen[bytes]] = []

        def healthy() -> subprocess.Popen[bytes]:
            with log.open("ab") as stderr:
                # its own process group, the daemons' too: on a failure, ended all at once
                process = subprocess.Popen(entrypoint, env=env, stderr=stderr, start_new_session=True)
            started.append(process)
            deadline = time.monotonic() + 180
            while subprocess.run([*entrypoint, "check"], env=env, capture_output=True).returncode != 0:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(1)
            return process

        def stopped(process: subprocess.Popen[bytes]) -> None:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log.read_text()

        try:
            process = healthy()
            obstore.put(store, "files/kept.dcm", data)
            stopped(process)
            assert log.read_text().endswith("stopped\n")
            process = healthy()
            assert bytes(obstore.get(store, "files/kept.dcm").bytes()) == data
            stopped(process)
        finally:
            for process in started:
                if process.poll() != 0:  # not stopped as it should be: its daemons may be left
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            subprocess.run(["bash", str(START_RGW), "stop"], env=env, capture_output=True, timeout=60)


class TestProxyConfig:
    def test_debian_nginx_accepts_it(self, tmp_path: Path) -> None:
        """`nginx -t` on deploy/proxy/nginx.conf, the replicas' names replaced by loopback addresses (nginx looks
        names up as it reads the file) and the listening port by a free one."""
        if not NGINX.exists():
            message = "missing nginx: run tests/e2e/setup.sh"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        config = render(
            PROXY_CONF.read_text(),
            [(f"server {host}:{port} ", f"server 127.0.0.1:{free_port()} ") for host, port in proxy_upstream()]
            + [(f"listen {proxy_listen_port()};", f"listen 127.0.0.1:{free_port()};")],
        )
        checked = subprocess.run(
            [str(NGINX), "-t", "-c", str(main_config(config, tmp_path)), "-p", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stderr


class TestViewerConfig:
    def test_same_data_source_as_the_end_to_end_test(self) -> None:
        """deploy/viewer/app-config.js configures OHIF's data source as tests/test_ohif.py does (roots aside: same
        origin there, the archive's own URL in the test), so the end-to-end test covers what is deployed."""
        deployed = (ROOT / "deploy" / "viewer" / "app-config.js").read_text()
        tested = app_config("http://archive/dicomweb", "token")
        tested_source = json.loads(re.search(r"configuration: (\{.*?\n\s*\}),\n", tested, re.DOTALL)[1])  # type: ignore[index]
        for key, value in tested_source.items():
            if key.endswith("Root"):
                continue
            shown = json.dumps(value).replace('"', "'") if not isinstance(value, str) else f"'{value}'"
            if isinstance(value, dict):
                shown = "{ " + ", ".join(f"{k}: {json.dumps(v)}" for k, v in value.items()) + " }"
            assert f"{key}: {shown}" in deployed, key
        for root in ("qidoRoot: '/dicomweb'", "wadoRoot: '/dicomweb'", "wadoUriRoot: '/dicomweb/wado'"):
            assert root in deployed
