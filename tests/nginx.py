"""Debian's nginx running one of deploy/'s server configurations for a test, without containers: the main context
around it (its pid, logs and temp folders in the test's folder, in the foreground), and stopped afterwards. Used by
tests/test_replicas.py (deploy/proxy), tests/test_ohif.py (deploy/viewer) and tests/test_deploy.py (`nginx -t`)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

NGINX = Path("/usr/sbin/nginx")


def render(template: str, replacements: list[tuple[str, str]]) -> str:
    """``template`` with each ``old`` replaced by ``new``; every ``old`` must be there (a changed deploy/ file fails
    the test that renders it, rather than running something else)."""
    for old, new in replacements:
        assert old in template, old
        template = template.replace(old, new)
    return template


def main_config(http_block: str, work: Path) -> Path:
    """``work/nginx.conf``: ``http_block`` (server and upstream blocks) inside the http context of a main context that
    keeps nginx's pid, logs and temp folders in ``work`` and nginx in the foreground."""
    temp = work / "nginx-temp"
    temp.mkdir(parents=True)
    config = work / "nginx.conf"
    config.write_text(
        # Its workers read the test's folders: as the user the test runs as (nginx would switch root to nobody).
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log;\nevents {{}}\n"
        f"http {{\n include /etc/nginx/mime.types;\n access_log off;\n client_body_temp_path {temp}/body;\n"
        f" proxy_temp_path {temp}/proxy;\n fastcgi_temp_path {temp}/fastcgi;\n uwsgi_temp_path {temp}/uwsgi;\n"
        f" scgi_temp_path {temp}/scgi;\n{http_block}\n}}\n"
    )
    return config


@contextmanager
def run_nginx(http_block: str, work: Path, probe: str) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with ``http_block`` (server and upstream blocks) inside its http context, once ``probe`` (a URL it
    serves) answers; terminated afterwards."""
    config = main_config(http_block, work)
    log = work / "nginx.log"
    with log.open("wb") as stderr:
        nginx = subprocess.Popen([str(NGINX), "-c", str(config), "-p", str(work)], stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert nginx.poll() is None, f"nginx exited: {log.read_text(errors='replace')}"
            try:
                if httpx.get(probe, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        yield nginx
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
