"""Hostile ids in every reporting route's path: traversal, SQL metacharacters, NUL, overlong; each answered 404 (or
400 for a NUL) in the one error shape, nothing created, nothing read from disk outside the archive."""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from reporting.routes import API_ROOT, ENDPOINTS

from .conftest import Api

HOSTILE = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fschema.sql",
    "1'%20OR%20'1'%3D'1",
    "1%3B%20DROP%20TABLE%20radiology_study%3B--",
    "%5C..%5C..%5Cwindows",
    "a" * 300,
    "00000000-0000-0000-0000-00000000000G",
]


def raw_request(api: Api, method: str, path: str) -> tuple[int, bytes]:
    """Over a raw socket, so that nothing normalises the path on the way (as a hostile client would send it)."""
    url = urlsplit(api.server.url)
    token = api.token()
    body = b"{}" if method in ("POST", "PUT") else b""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), content


ID_ROUTES = sorted({(e.method, e.path) for e in ENDPOINTS if "{" in e.path})


@pytest.mark.parametrize(("method", "template"), ID_ROUTES, ids=[f"{m} {p}" for m, p in ID_ROUTES])
def test_hostile_ids(api: Api, method: str, template: str) -> None:
    before = api.server.db.value("SELECT count(*) FROM radiology_study")
    for hostile in HOSTILE:
        path = API_ROOT + template.split("{")[0] + hostile + template.split("}", 1)[1]
        status, content = raw_request(api, method, path)
        assert status in (400, 404, 415), (path, status, content[:200])
        error = orjson.loads(content)
        assert error["status"] == status and error["error"] and error["detail"], path
    status, content = raw_request(api, method, API_ROOT + template.split("{")[0] + "x%00y" + template.split("}", 1)[1])
    assert status == 400 and orjson.loads(content)["status"] == 400
    assert api.server.db.value("SELECT count(*) FROM radiology_study") == before
    assert api.server.db.value("SELECT to_regclass('radiology_study')") is not None


def test_unknown_uuid_everywhere(api: Api) -> None:
    """A well-formed id of nothing: 404 naming it, on every route with an id."""
    with httpx.Client(base_url=api.server.url, headers={"authorization": f"Bearer {api.token()}"}) as client:
        for method, template in ID_ROUTES:
            path = API_ROOT + template.split("{")[0] + str(uuid.uuid4()) + template.split("}", 1)[1]
            response = client.request(method, path, json={} if method in ("POST", "PUT") else None)
            assert response.status_code in (404, 400, 415), (method, path, response.status_code)
            if response.status_code == 404:
                assert "no " in response.json()["detail"], response.text
