"""A server with authentication on, shared by a test module, and clients that act as a given role and user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from dicomweb.permissions import Role
from dicomweb.tokens import create_token, load_or_create_secret

from ..conftest import LiveServer, shared_server


@dataclass
class Api:
    """The reporting API of a live server."""

    server: LiveServer
    secret: str

    def token(self, role: Role = Role.ADMIN, subject: str = "admin") -> str:
        return create_token(self.secret, subject, [role], 3600, self.server.settings.jwt_issuer)

    def client(self, role: Role = Role.ADMIN, subject: str = "admin") -> httpx.Client:
        """A client under /api/radiology with a token for ``subject`` holding ``role``."""
        headers = {"authorization": f"Bearer {self.token(role, subject)}"}
        return httpx.Client(base_url=self.server.url + "/api/radiology", headers=headers, timeout=60)

    def dicomweb(self, role: Role = Role.ADMIN) -> httpx.Client:
        """A client of the same server's DICOMweb root."""
        headers = {"authorization": f"Bearer {self.token(role)}"}
        return httpx.Client(base_url=self.server.dicomweb, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def api(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("reporting")
    with shared_server(postgres_url, data_dir, auth="enabled") as live:
        yield Api(live, load_or_create_secret(data_dir))


@pytest.fixture(scope="module")
def admin(api: Api) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


def new_study(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    """Schedule a study (a CT for patient P-1 unless fields say otherwise) and return it."""
    body = {"patientId": "P-1", "modality": "CT", **fields}
    response = client.post("/studies", json=body)
    assert response.status_code == 201, response.text
    study: dict[str, Any] = response.json()
    return study
