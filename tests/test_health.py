"""Probes, access log and the error body shape."""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from .conftest import LiveServer, free_port


class TestProbes:
    """/healthz and /readyz."""

    def test_healthz(self, session_server: LiveServer) -> None:
        """The process answers."""
        response = httpx.get(session_server.url + "/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}

    def test_readyz(self, session_server: LiveServer) -> None:
        """Database reachable and storage writable."""
        assert httpx.get(session_server.url + "/readyz").json() == {"status": "ready"}

    def test_readyz_storage_not_writable(self, server_factory: Any) -> None:
        """With the temp folder gone (replaced by a file), readiness is 503 and says why."""
        server = server_factory()
        tmp = server.data_dir / "tmp"
        shutil.rmtree(tmp)
        tmp.write_text("not a folder")
        response = httpx.get(server.url + "/readyz")
        assert response.status_code == 503
        assert "storage not writable" in response.json()["detail"]
        tmp.unlink()
        tmp.mkdir()


class TestErrorShape:
    """Every error body has the shape {"status", "error", "detail"}."""

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/nowhere", 404),
            ("DELETE", "/healthz", 405),
            ("PUT", "/dicomweb/studies", 405),
            ("POST", "/dicomweb/studies", 415),
            ("POST", "/dicomweb/studies/not-a-uid", 400),
            ("GET", "/dicomweb/studies?PatientNam=x", 400),
            ("GET", "/dicomweb/series?limit=-1", 400),
            ("GET", "/dicomweb/instances?StudyDate=2024", 400),
            ("GET", "/dicomweb/studies/1.2.3", 404),
            ("GET", "/dicomweb/studies/1.2.3/metadata", 404),
            ("GET", "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1", 404),
            ("GET", "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/0", 400),
            ("GET", "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/bulk/7FE00010", 404),
            ("GET", "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered", 404),
            ("GET", "/dicomweb/studies/1.2.3/thumbnail", 404),
            ("DELETE", "/dicomweb/studies/1.2.3", 404),
            ("GET", "/wado?requestType=WADO", 400),
        ],
    )
    def test_shape(self, session_server: LiveServer, method: str, path: str, status: int) -> None:
        """Status in the body equals the HTTP status; error is its phrase; detail is a sentence."""
        response = httpx.request(method, session_server.url + path)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"status", "error", "detail"}
        assert body["status"] == status
        assert isinstance(body["detail"], str) and body["detail"]


class TestHomePage:
    """GET /: what a browser opening the server's address shows."""

    def test_counts_roots_and_links_without_a_token(self, server_factory: Any) -> None:
        from .data import ct_instance, multipart, stow_headers

        port = free_port()
        server = server_factory(auth="enabled", dimse_port=port)
        empty = httpx.get(server.url + "/")
        assert empty.status_code == 200 and empty.headers["content-type"].startswith("text/html")
        assert '<td id="instances">0</td>' in empty.text
        token = server_token(server)
        study, series = generate_uid(), generate_uid()
        parts = [ct_instance(study, series, InstanceNumber=n) for n in range(3)]
        stored = httpx.post(server.dicomweb + "/studies", content=multipart(parts),
                            headers={**stow_headers(), "authorization": f"Bearer {token}"})  # fmt: skip
        assert stored.status_code == 200, stored.text
        page = httpx.get(server.url + "/").text
        assert '<td id="studies">1</td>' in page and '<td id="series">1</td>' in page
        assert '<td id="instances">3</td>' in page
        assert f"<code>{server.url}/dicomweb</code>" in page and f"port {port}" in page
        assert '"qidoRoot": "' + server.url + '/dicomweb"' in page.replace("&quot;", '"')
        for link in ("/api-docs", "/metrics", "/api/openapi.json"):
            assert f'href="{link}"' in page


def server_token(server: LiveServer) -> str:
    from dicomweb.permissions import Role
    from dicomweb.tokens import create_token, load_or_create_secret

    secret = load_or_create_secret(server.data_dir)
    return create_token(secret, "admin", [Role.ADMIN], 600, server.settings.jwt_issuer)
