"""The container files (Dockerfile, docker-compose.yml, deploy/viewer): no Docker engine runs on our machines, so
these checks keep them in step with the code; deploy/viewer itself runs in tests/test_ohif.py without containers."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from .test_ohif import app_config

ROOT = Path(__file__).parent.parent


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


class TestCompose:
    def test_services_and_build_contexts(self) -> None:
        """PostgreSQL, the archive and the viewer; every build context exists with a Dockerfile."""
        compose = (ROOT / "docker-compose.yml").read_text()
        services = re.findall(r"^  (\w+):$", compose, re.MULTILINE)
        assert {"db", "dicomweb", "viewer"} <= set(services)
        for context in re.findall(r"^    build: (\S+)$", compose, re.MULTILINE):
            assert (ROOT / context / "Dockerfile").is_file(), context

    def test_viewer_proxies_the_archive_service(self) -> None:
        """deploy/viewer/nginx.conf reaches the archive by its compose service name and port."""
        compose = (ROOT / "docker-compose.yml").read_text()
        nginx = (ROOT / "deploy" / "viewer" / "nginx.conf").read_text()
        assert "proxy_pass http://dicomweb:8080;" in nginx
        assert 'DICOMWEB_PORT: "8080"' in compose


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
