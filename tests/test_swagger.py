"""dicomweb/swagger.py: /api-docs is Swagger UI, served whole by the archive (no other host named or asked), under a
Content-Security-Policy; in Chromium a user tries a call of the reporting API without a token (401) and, after
pasting one with Authorize, with it (200, the call carrying ``Authorization: Bearer``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicomweb.permissions import Role
from dicomweb.swagger import CONTENT_SECURITY_POLICY, FILES
from dicomweb.tokens import create_token, load_or_create_secret

from . import browser
from .conftest import LiveServer, shared_server

DRIVER = browser.E2E / "swagger.mjs"
LISTED = "/api/radiology/report-templates"  # the operation the browser tries: GET, list the report templates


@pytest.fixture(scope="module")
def server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with authentication on (the page itself needs no token)."""
    with shared_server(postgres_url, tmp_path_factory.mktemp("swagger"), auth="enabled") as live:
        yield live


def token(server: LiveServer, role: Role) -> str:
    return create_token(load_or_create_secret(server.data_dir), "swagger", [role], 600, server.settings.jwt_issuer)


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


@pytest.fixture(scope="module")
def e2e_tools() -> None:
    """Checked before the browser test starts anything of its own."""
    browser.require_tools()


@pytest.mark.e2e
class TestInChromium:
    """Swagger UI in headless Chromium, as a user tries the API in it."""

    def test_try_it_out_with_and_without_a_token(
        self, e2e_tools: None, server: LiveServer, request: pytest.FixtureRequest
    ) -> None:
        """Execute "list report templates": 401 without a token; Authorize with a token, Execute again: 200 and the
        template listed, the call carrying the pasted token; every request of the page to this server, none blocked
        by the page's policy, no script error."""
        name = "Swagger-" + uuid.uuid4().hex[:8]
        created = httpx.post(
            server.url + LISTED,
            json={"name": name, "modality": "CT", "content": "Findings: "},
            headers={"Authorization": f"Bearer {token(server, Role.ADMIN)}"},
        )
        assert created.status_code == 201, created.text
        operation = httpx.get(server.url + "/api/openapi.json").json()["paths"][LISTED]["get"]
        pasted = token(server, Role.DOCTOR)
        artifacts = browser.artifacts_of(request)
        job = {
            "server": server.url,
            "path": LISTED,
            "tag": operation["tags"][0],
            "operationId": operation["operationId"],
            "token": pasted,
            "artifacts": str(artifacts),
        }
        report = browser.drive(DRIVER, job, artifacts, timeout=120)
        assert report["error"] is None, f"{report['error']}\npage errors: {report['pageErrors']}"
        steps = report["steps"]

        assert steps["anonymous"]["status"] == "401", steps["anonymous"]
        assert steps["authorized"]["status"] == "200", steps["authorized"]
        assert name in steps["authorized"]["body"]
        assert f"Authorization: Bearer {pasted}" in steps["authorized"]["curl"]
        calls = [r for r in report["requests"] if r["url"].startswith(server.url + LISTED)]
        assert [(c["status"], c["authorization"]) for c in calls] == [(401, None), (200, f"Bearer {pasted}")]

        outside = [r["url"] for r in report["requests"] if not r["url"].startswith((server.url + "/", "data:"))]
        assert not outside, outside
        failed = [r for r in report["requests"] if r.get("failure") or (r["status"] >= 400 and r not in calls)]
        assert not failed, failed
        assert report["violations"] == [] and report["pageErrors"] == [], report
