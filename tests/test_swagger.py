"""dicomweb/swagger.py: /api-docs is Swagger UI, served whole by the archive (no other host named), under a
Content-Security-Policy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicomweb.swagger import CONTENT_SECURITY_POLICY, FILES

from .conftest import LiveServer, shared_server


@pytest.fixture(scope="module")
def server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with authentication on (the page itself needs no token)."""
    with shared_server(postgres_url, tmp_path_factory.mktemp("swagger"), auth="enabled") as live:
        yield live


class TestPage:
    """GET /api-docs and its assets, without a token."""

    def test_page_loads_only_its_own_assets(self, server: LiveServer) -> None:
        """The page names its script, style sheet and start-up script below /api-docs/assets/, no other host, and no
        inline script; each asset it names is served with its media type."""
        response = httpx.get(server.url + "/api-docs")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        page = response.text
        assert not re.findall(r"https?://", page), "the page names another host"
        scripts = re.findall(r"<script([^>]*)>", page)
        assert scripts and all('src="/api-docs/assets/' in attributes for attributes in scripts), scripts
        referenced = re.findall(r'(?:src|href)="(/api-docs/assets/[^"]+)"', page)
        names = {path.split("?")[0].rsplit("/", 1)[1] for path in referenced}
        assert {"swagger-ui-bundle.js", "swagger-ui.css", "init.js"} <= names
        expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
        for path in referenced:
            asset = httpx.get(server.url + path)
            assert asset.status_code == 200, path
            assert asset.headers["content-type"].startswith(expected[Path(path.split("?")[0]).suffix]), path
            assert asset.headers["x-content-type-options"] == "nosniff"
            assert int(asset.headers["content-length"]) == len(asset.content) > 0

    def test_start_up_script(self, server: LiveServer) -> None:
        """init.js starts Swagger UI on the 3.0 document of this server, without the outside validator."""
        script = httpx.get(server.url + "/api-docs/assets/init.js").text
        assert "url: '/api/openapi-3.0.json'" in script and "validatorUrl: null" in script
        assert httpx.get(server.url + "/api/openapi-3.0.json").json()["openapi"] == "3.0.3"

    def test_content_security_policy(self, server: LiveServer) -> None:
        """Scripts from this server only, no inline script, no eval, calls to this server only."""
        policy = httpx.get(server.url + "/api-docs").headers["content-security-policy"]
        assert policy == CONTENT_SECURITY_POLICY
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
        assert directives["default-src"] == "'none'" and "unsafe" not in policy

    def test_only_the_listed_files(self, server: LiveServer) -> None:
        """Nothing else of the package, nor of the server's folders, is served below /api-docs/assets/."""
        for name in ("index.html", "oauth2-redirect.html", "swagger-initializer.js", "..%2F..%2Fswagger.py", "x"):
            assert httpx.get(server.url + "/api-docs/assets/" + name).status_code == 404, name
        assert set(FILES) >= {"swagger-ui-bundle.js", "swagger-ui.css", "init.js"}
        assert all(path.is_file() for path, _ in FILES.values())
