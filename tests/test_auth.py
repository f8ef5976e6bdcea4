"""Authentication and permissions on every route (the security issue), against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicomweb.permissions import ROLE_PERMISSIONS, ROUTE_PERMISSIONS, Permission, Role
from dicomweb.tokens import create_token, load_or_create_secret

from .conftest import LiveServer, shared_server
from .data import ct_instance, multipart, stow_headers

# One concrete request per route template: placeholders filled with UIDs that need not exist (a 404 proves the
# request got past authentication and authorisation).
UID = "1.2.3"
FILL = {
    "{StudyInstanceUID}": UID,
    "{SeriesInstanceUID}": UID,
    "{SOPInstanceUID}": UID,
    "{frames}": "1",
    "{path:path}": "7FE00010",
}


def concrete(template: str) -> str:
    for placeholder, value in FILL.items():
        template = template.replace(placeholder, value)
    return template


def token(server: LiveServer, *roles: Role, subject: str = "alice", ttl: int = 600, issuer: str = "dicomweb") -> str:
    secret = load_or_create_secret(server.data_dir)
    return create_token(secret, subject, roles, ttl, issuer)


@pytest.fixture(scope="module")
def secured(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with authentication on (the default)."""
    with shared_server(postgres_url, tmp_path_factory.mktemp("secured"), auth="enabled") as server:
        yield server


class TestAuthentication:
    """No token or a bad one: 401 with WWW-Authenticate: Bearer."""

    def test_no_token(self, secured: LiveServer) -> None:
        """A search without a token is refused."""
        response = httpx.get(secured.dicomweb + "/studies")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "dicomweb token" in response.json()["detail"]

    @pytest.mark.parametrize(
        "bad",
        ["garbage", "a.b.c", "x" * 9000, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."],
        ids=["garbage", "three-parts", "oversized", "alg-none"],
    )
    def test_invalid_tokens(self, secured: LiveServer, bad: str) -> None:
        """Malformed, oversized and alg=none tokens: 401 invalid_token."""
        response = httpx.get(secured.dicomweb + "/studies", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    def test_foreign_tokens(self, secured: LiveServer) -> None:
        """Another issuer, another key: 401 (expiry and the other claims: tests/test_tokens.py)."""
        other_issuer = token(secured, Role.ADMIN, issuer="someone-else")
        other_key = create_token("k" * 48, "a", [Role.ADMIN], 600, "dicomweb")
        for bad in (other_issuer, other_key):
            response = httpx.get(secured.dicomweb + "/studies", headers={"Authorization": f"Bearer {bad}"})
            assert response.status_code == 401, bad

    def test_public_probes(self, secured: LiveServer) -> None:
        """/healthz and /readyz need no token."""
        assert httpx.get(secured.url + "/healthz").status_code == 200
        assert httpx.get(secured.url + "/readyz").status_code == 200


class TestPermissions:
    """Every role against every route: allowed requests pass, others get 403."""

    @pytest.mark.parametrize("role", list(Role))
    @pytest.mark.parametrize(("method", "template"), sorted(k for k, v in ROUTE_PERMISSIONS.items() if v is not None))
    def test_role_on_route(self, secured: LiveServer, role: Role, method: str, template: str) -> None:
        """403 exactly when the role lacks the route's permission."""
        permission = ROUTE_PERMISSIONS[(method, template)]
        assert permission is not None
        headers = {"Authorization": f"Bearer {token(secured, role)}"}
        response = httpx.request(method, secured.url + concrete(template), headers=headers)
        if permission in ROLE_PERMISSIONS[role]:
            assert response.status_code not in (401, 403), (role, method, template, response.text)
        else:
            assert response.status_code == 403, (role, method, template)
            assert str(permission) in response.json()["detail"]

    def test_store_and_search_with_tokens(self, secured: LiveServer) -> None:
        """A technician stores, a doctor searches and finds it, a doctor may not store."""
        study = "1.2.826.0.1.3680043.8.498.1"
        body = multipart([ct_instance(study)])
        tech = {**stow_headers(), "Authorization": f"Bearer {token(secured, Role.RADIOLOGY_TECH)}"}
        assert httpx.post(secured.dicomweb + "/studies", content=body, headers=tech).status_code == 200
        doctor = {"Authorization": f"Bearer {token(secured, Role.DOCTOR)}"}
        found = httpx.get(secured.dicomweb + "/studies", params={"StudyInstanceUID": study}, headers=doctor)
        assert found.status_code == 200 and len(found.json()) == 1
        refused = httpx.post(secured.dicomweb + "/studies", content=body, headers={**stow_headers(), **doctor})
        assert refused.status_code == 403
        assert Permission.UPLOAD.value in refused.json()["detail"]


class TestCommandLine:
    """dicomweb token and the loopback rule for DICOMWEB_AUTH=disabled."""

    def test_token_command(self, secured: LiveServer) -> None:
        """The printed token is accepted by a server using the same data folder."""
        result = subprocess.run(
            [sys.executable, "-m", "dicomweb", "token", "--role", "DOCTOR", "--subject", "bob", "--ttl", "5m",
             "--data-dir", str(secured.data_dir)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        printed = result.stdout.strip()
        response = httpx.get(secured.dicomweb + "/studies", headers={"Authorization": f"Bearer {printed}"})
        assert response.status_code == 200
        assert (secured.data_dir / "jwt-secret").stat().st_mode & 0o777 == 0o600

    def test_disabled_refuses_public_bind(self, tmp_path: Path) -> None:
        """DICOMWEB_AUTH=disabled with a non-loopback host: the server refuses to start."""
        result = subprocess.run(
            [sys.executable, "-m", "dicomweb", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
            env={**os.environ, "DICOMWEB_AUTH": "disabled"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2
        assert "loopback" in result.stderr or "127.0.0.1" in result.stderr
