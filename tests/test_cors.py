"""CORS for a browser viewer on another origin (OHIF): preflights, and headers on answers and errors alike."""

from __future__ import annotations

from typing import Any

import httpx

from dicomweb.permissions import Role
from dicomweb.tokens import create_token, load_or_create_secret

VIEWER = "https://viewer.example.org"


class TestCors:
    """DICOMWEB_CORS_ORIGINS."""

    def test_preflight(self, server_factory: Any) -> None:
        """OPTIONS from an allowed origin: the headers OHIF sends are allowed, without a token."""
        server = server_factory(cors_origins=VIEWER, auth="enabled")
        response = httpx.options(
            server.dicomweb + "/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1",
            headers={
                "Origin": VIEWER,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization,range,accept",
            },
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == VIEWER
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "range" in allowed

    def test_errors_and_answers_carry_cors_headers(self, server_factory: Any) -> None:
        """A 401 and a 200 both carry Access-Control-Allow-Origin; the range and cache headers are exposed."""
        server = server_factory(cors_origins=VIEWER, auth="enabled")
        refused = httpx.get(server.dicomweb + "/studies", headers={"Origin": VIEWER})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == VIEWER
        token = create_token(load_or_create_secret(server.data_dir), "viewer", [Role.DOCTOR], 600, "dicomweb")
        answered = httpx.get(
            server.dicomweb + "/studies", headers={"Origin": VIEWER, "Authorization": f"Bearer {token}"}
        )
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == VIEWER
        exposed = answered.headers["access-control-expose-headers"].lower()
        for header in ("content-range", "etag", "warning", "content-type"):
            assert header in exposed

    def test_other_origin(self, server_factory: Any) -> None:
        """An origin not on the list gets no CORS headers (the browser then blocks it)."""
        server = server_factory(cors_origins=VIEWER)
        response = httpx.get(server.dicomweb + "/studies", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in response.headers
