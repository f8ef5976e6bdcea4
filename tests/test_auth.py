"""Authentication and permissions on every route (the security issue), against a real server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydicom.uid import generate_uid

from dicomweb.app import all_routes
from dicomweb.auth import redact_access_tokens, split_access_tokens
from dicomweb.permissions import ROLE_PERMISSIONS, Permission, Role
from dicomweb.routing import Route, leaves
from dicomweb.tokens import MAX_QUERY_TOKEN_TTL_SECONDS, create_token, load_or_create_secret

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


# (method, path template) → permission of every route that needs a token.
SECURED = {
    (route.method, template): route.permission
    for template, route in leaves(all_routes())
    if isinstance(route, Route) and route.permission is not None
}


def concrete(template: str) -> str:
    for placeholder, value in FILL.items():
        template = template.replace(placeholder, value)
    return template


def token(
    server: LiveServer,
    *roles: Role,
    subject: str = "alice",
    ttl: int = 600,
    issuer: str = "dicomweb",
    study: str | None = None,
) -> str:
    secret = load_or_create_secret(server.data_dir)
    return create_token(secret, subject, roles, ttl, issuer, study=study)


# Tokens the server must refuse, and words the 401's detail says about each.
HOSTILE_TOKENS = {
    "garbage": "malformed",
    "three-parts": "malformed",
    "oversized": "longer than",
    "oversized-100k": "longer than",
    "alg-none": "algorithm",
    "alg-none-valid-claims": "algorithm",
    "expired": "expired",
    "not-yet-valid": "not valid yet",
    "other-key": "signature",
    "other-issuer": "issuer",
    "unknown-role": "no known role",
    "no-subject": "sub",
}


def hostile_token(server: LiveServer, name: str, study: str | None = None) -> str:
    """One of HOSTILE_TOKENS; those with claims are ADMIN tokens (scoped to ``study`` if given) but for one flaw."""
    secret = load_or_create_secret(server.data_dir)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "dicomweb", "sub": "mallory", "roles": ["ADMIN"], "exp": now + 600}
    if study is not None:
        claims["study"] = study
    fixed = {"garbage": "garbage", "three-parts": "a.b.c", "oversized": "x" * 9000, "oversized-100k": "x" * 100_000}
    if name in fixed:
        return fixed[name]
    if name == "alg-none":
        return "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
    if name == "alg-none-valid-claims":
        return jwt.encode(claims, "", algorithm="none")
    changes: dict[str, dict[str, Any]] = {
        "expired": {"exp": now - 3600},
        "not-yet-valid": {"nbf": now + 3600},
        "other-issuer": {"iss": "someone-else"},
        "unknown-role": {"roles": ["SUPERUSER", "root"]},
        "no-subject": {"sub": None},
    }
    key = "k" * 48 if name == "other-key" else secret
    payload = {k: v for k, v in {**claims, **changes.get(name, {})}.items() if v is not None}
    return jwt.encode(payload, key, algorithm="HS256")


def assert_error(response: httpx.Response, status: int, words: str = "") -> None:
    """The status, and the one error body shape with ``words`` in its detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "error", "detail"} and body["status"] == status
    assert words in body["detail"], body["detail"]


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

    @pytest.mark.parametrize(("name", "words"), HOSTILE_TOKENS.items())
    def test_invalid_tokens(self, secured: LiveServer, name: str, words: str) -> None:
        """Malformed, oversized, alg=none, expired, foreign and role-less tokens: 401 invalid_token, saying why."""
        bad = hostile_token(secured, name)
        response = httpx.get(secured.dicomweb + "/studies", headers={"Authorization": f"Bearer {bad}"})
        assert_error(response, 401, words)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    @pytest.mark.parametrize(("name", "words"), [(n, w) for n, w in HOSTILE_TOKENS.items() if n != "oversized-100k"])
    def test_invalid_query_tokens(self, secured: LiveServer, name: str, words: str) -> None:
        """The same tokens as access_token (study-scoped where they have claims): 401 as well."""
        bad = hostile_token(secured, name, study="1.2.3")
        response = httpx.get(secured.dicomweb + "/studies/1.2.3/metadata", params={"access_token": bad})
        assert_error(response, 401, words)

    def test_public_probes(self, secured: LiveServer) -> None:
        """/healthz and /readyz need no token."""
        assert httpx.get(secured.url + "/healthz").status_code == 200
        assert httpx.get(secured.url + "/readyz").status_code == 200


class TestPermissions:
    """Every role against every route: allowed requests pass, others get 403."""

    @pytest.mark.parametrize("role", list(Role))
    @pytest.mark.parametrize(("method", "template"), sorted(SECURED))
    def test_role_on_route(self, secured: LiveServer, role: Role, method: str, template: str) -> None:
        """403 exactly when the role lacks the route's permission."""
        permission = SECURED[method, template]
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

    def test_study_token_command(self, secured: LiveServer, stored: Stored) -> None:
        """dicomweb token --study prints a short-lived token that reads that study from a URL; over an hour: exit 2."""
        command = [sys.executable, "-m", "dicomweb", "token", "--role", "DOCTOR", "--subject", "img",
                   "--study", stored.study, "--data-dir", str(secured.data_dir)]  # fmt: skip
        printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
        claims = jwt.decode(printed, options={"verify_signature": False})
        assert claims["study"] == stored.study and claims["exp"] - claims["iat"] == 300
        url = f"{secured.dicomweb}/studies/{stored.study}/metadata"
        assert httpx.get(url, params={"access_token": printed}).status_code == 200
        refused = subprocess.run([*command, "--ttl", "2h"], capture_output=True, text=True)
        assert refused.returncode == 2 and "at most 3600 seconds" in refused.stderr

    def test_disabled_refuses_public_bind(self, tmp_path: Path) -> None:
        """DICOMWEB_AUTH=disabled with a non-loopback host: the server refuses to start."""
        result = subprocess.run(
            [sys.executable, "-m", "dicomweb", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
            env={**os.environ, "DICOMWEB_AUTH": "disabled"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2
        assert "loopback" in result.stderr or "127.0.0.1" in result.stderr


@dataclass(frozen=True)
class Stored:
    """UIDs of one CT instance stored in the secured server."""

    study: str
    series: str
    sop: str

    @property
    def path(self) -> str:
        return f"/dicomweb/studies/{self.study}/series/{self.series}/instances/{self.sop}"


@pytest.fixture(scope="module")
def stored(secured: LiveServer) -> Stored:
    study, series, sop = str(generate_uid()), str(generate_uid()), str(generate_uid())
    headers = {**stow_headers(), "Authorization": f"Bearer {token(secured, Role.ADMIN)}"}
    body = multipart([ct_instance(study, series, sop_instance_uid=sop)])
    assert httpx.post(secured.dicomweb + "/studies", content=body, headers=headers).status_code == 200
    return Stored(study, series, sop)


class TestQueryTokens:
    """A study-scoped token in ?access_token= (RFC 6750 §2.3) reads its study with GET, and nothing else."""

    @pytest.mark.parametrize(
        "suffix",
        ["/metadata", "/series", "/thumbnail", "/series/{series}/instances/{sop}/rendered", "/instances"],
    )
    def test_reads_its_study(self, secured: LiveServer, stored: Stored, suffix: str) -> None:
        """Metadata, thumbnails, rendered images and searches within the study (the token is not a QIDO key)."""
        scoped = token(secured, Role.DOCTOR, study=stored.study)
        url = f"{secured.dicomweb}/studies/{stored.study}{suffix.format(series=stored.series, sop=stored.sop)}"
        response = httpx.get(url, params={"access_token": scoped}, timeout=60)
        assert response.status_code == 200, response.text

    def test_head(self, secured: LiveServer, stored: Stored) -> None:
        """HEAD is a read too."""
        scoped = token(secured, Role.DOCTOR, study=stored.study)
        url = f"{secured.dicomweb}/studies/{stored.study}/metadata"
        assert httpx.head(url, params={"access_token": scoped}).status_code == 200

    def test_wado_uri(self, secured: LiveServer, stored: Stored) -> None:
        """WADO-URI: the studyUID parameter must be the token's study."""
        scoped = token(secured, Role.DOCTOR, study=stored.study)
        params = {
            "requestType": "WADO",
            "studyUID": stored.study,
            "seriesUID": stored.series,
            "objectUID": stored.sop,
            "contentType": "application/dicom",
            "access_token": scoped,
        }
        assert httpx.get(secured.url + "/wado", params=params).status_code == 200
        other = httpx.get(secured.url + "/wado", params={**params, "studyUID": "1.2.3"})
        assert_error(other, 403, "only allows reading study")
        twice = httpx.get(secured.url + "/wado", params=[*params.items(), ("studyUID", "1.2.3")])
        assert_error(twice, 403, "only allows reading study")

    @pytest.mark.parametrize(
        ("method", "path", "status", "words"),
        [
            ("GET", "/dicomweb/studies/1.2.3/metadata", 403, "not another one"),
            ("GET", "/dicomweb/studies/1.2.3/series", 403, "not another one"),
            ("GET", "/dicomweb/studies", 403, "names no study"),
            ("GET", "/dicomweb/series", 403, "names no study"),
            ("GET", "/dicomweb/instances", 403, "names no study"),
            ("GET", "/wado?requestType=WADO", 403, "names no study"),
            ("GET", "/api/audit", 403, "radiology:manage"),
            ("POST", "/dicomweb/studies/{study}", 401, "GET and HEAD"),
            ("DELETE", "/dicomweb/studies/{study}", 401, "GET and HEAD"),
        ],
    )
    def test_refused_elsewhere(
        self, secured: LiveServer, stored: Stored, method: str, path: str, status: int, words: str
    ) -> None:
        """Another study, a search across studies, or a method other than GET/HEAD: refused, saying why."""
        scoped = token(secured, Role.DOCTOR, study=stored.study)
        url = secured.url + path.format(study=stored.study)
        response = httpx.request(method, url, params={"access_token": scoped})
        assert_error(response, status, words)
        if "manage" not in words:  # the role's permission is checked first: a plain 403
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith("Bearer") and ("insufficient_scope" in challenge) == (status == 403)

    def test_scoped_in_the_header(self, secured: LiveServer, stored: Stored) -> None:
        """Sent in the Authorization header, a scoped token is just as scoped, and read-only even for an ADMIN."""
        headers = {"Authorization": f"Bearer {token(secured, Role.ADMIN, study=stored.study)}"}
        assert httpx.get(f"{secured.dicomweb}/studies/{stored.study}/metadata", headers=headers).status_code == 200
        assert_error(httpx.get(f"{secured.dicomweb}/studies/1.2.3/metadata", headers=headers), 403, "another")
        assert_error(httpx.get(f"{secured.dicomweb}/studies", headers=headers), 403, "names no study")
        deleted = httpx.delete(f"{secured.dicomweb}/studies/{stored.study}", headers=headers)
        assert_error(deleted, 403, "only allows reading")
        body = multipart([ct_instance(stored.study)])
        posted = httpx.post(
            f"{secured.dicomweb}/studies/{stored.study}", content=body, headers={**stow_headers(), **headers}
        )
        assert_error(posted, 403, "only allows reading")

    def test_unscoped_token_not_in_urls(self, secured: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
        """An ordinary token in the query is refused (it would leak into logs) and the refusal is logged."""
        caplog.set_level(logging.WARNING, logger="dicomweb")
        full = token(secured, Role.ADMIN, subject="careless")
        response = httpx.get(secured.dicomweb + "/studies", params={"access_token": full})
        assert_error(response, 401, "Authorization header")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert "careless" in caplog.text and full not in caplog.text

    def test_one_token_per_request(self, secured: LiveServer, stored: Stored) -> None:
        """A token in both places, or two access_token parameters: 400 invalid_request (RFC 6750 §2, §3.1)."""
        scoped = token(secured, Role.DOCTOR, study=stored.study)
        url = f"{secured.dicomweb}/studies/{stored.study}/metadata"
        both = httpx.get(url, params={"access_token": scoped}, headers={"Authorization": f"Bearer {scoped}"})
        assert_error(both, 400, "one token")
        assert 'error="invalid_request"' in both.headers["www-authenticate"]
        twice = httpx.get(url, params=[("access_token", scoped), ("access_token", scoped)])
        assert_error(twice, 400, "one token")

    def test_lifetime(self, secured: LiveServer, stored: Stored) -> None:
        """A scoped token living past the cap is refused in the URL but not in the header; an expired one is 401."""
        secret = load_or_create_secret(secured.data_dir)
        now = int(time.time())
        claims = {"iss": "dicomweb", "sub": "v", "roles": ["DOCTOR"], "study": stored.study}
        long_lived = jwt.encode({**claims, "exp": now + 2 * MAX_QUERY_TOKEN_TTL_SECONDS}, secret, algorithm="HS256")
        expired = jwt.encode({**claims, "exp": now - 3600}, secret, algorithm="HS256")
        url = f"{secured.dicomweb}/studies/{stored.study}/metadata"
        assert_error(httpx.get(url, params={"access_token": long_lived}), 401, "must expire within")
        assert httpx.get(url, headers={"Authorization": f"Bearer {long_lived}"}).status_code == 200
        assert_error(httpx.get(url, params={"access_token": expired}), 401, "expired")

    def test_token_kept_out_of_logs_and_audit(
        self, secured: LiveServer, stored: Stored, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The access log shows access_token=[redacted]; the audit event's query has no token."""
        caplog.set_level(logging.INFO, logger="dicomweb.access")
        scoped = token(secured, Role.DOCTOR, subject="thumbnailer", study=stored.study)
        url = f"{secured.dicomweb}/studies/{stored.study}/series"
        assert httpx.get(url, params={"Modality": "CT", "access_token": scoped}).status_code == 200
        deadline = time.monotonic() + 10
        while "access_token=[redacted]" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)  # the line is written once the response has left, maybe after the client has it
        assert "access_token=[redacted]" in caplog.text and scoped not in caplog.text
        admin = {"Authorization": f"Bearer {token(secured, Role.ADMIN)}"}
        events = httpx.get(secured.url + "/api/audit", params={"user": "thumbnailer"}, headers=admin).json()
        assert [e["query"] for e in events] == ["Modality=CT"]
        assert events[0]["studyInstanceUID"] == stored.study

    def test_stripped_when_auth_is_disabled(self, session_server: LiveServer) -> None:
        """Without authentication the parameter is ignored, not taken for a QIDO key."""
        assert httpx.get(session_server.dicomweb + "/studies", params={"access_token": "x"}).status_code == 200


class TestQueryString:
    """Finding, removing and redacting access_token in a raw query string."""

    @pytest.mark.parametrize(
        ("query", "kept", "tokens", "redacted"),
        [
            (b"", b"", [], b""),
            (b"a=1&b=2", b"a=1&b=2", [], b"a=1&b=2"),
            (b"access_token=t.k.n", b"", ["t.k.n"], b"access_token=[redacted]"),
            (b"a=1&access_token=x&b=", b"a=1&b=", ["x"], b"a=1&access_token=[redacted]&b="),
            (b"access%5Ftoken=x&a", b"a", ["x"], b"access_token=[redacted]&a"),
            (b"access_token&access_token=y", b"", ["", "y"], b"access_token=[redacted]&access_token=[redacted]"),
            (b"xaccess_token=1", b"xaccess_token=1", [], b"xaccess_token=1"),
        ],
    )
    def test_split_and_redact(self, query: bytes, kept: bytes, tokens: list[str], redacted: bytes) -> None:
        """Every spelling of the parameter is found; the rest of the query is kept byte for byte."""
        assert split_access_tokens(query) == (kept, tokens)
        assert redact_access_tokens(query) == redacted


class TestRouteMatch:
    """match_route finds the route the router will run, so the permission checked is that route's."""

    def test_method_decides_between_routes_sharing_a_path(self) -> None:
        """Two routes whose paths differ only in the parameter's name: the one with the request's method wins."""
        from starlette.routing import Mount, Route

        from dicomweb.routing import match_route

        routes = [Mount("/api", routes=[Route("/x/{a}", _endpoint, methods=["POST"]), Route("/x/{b}", _endpoint)])]
        scope = {"type": "http", "path": "/api/x/1", "method": "GET", "root_path": ""}
        found = match_route(routes, scope)
        assert found is not None and found.template == "/api/x/{b}" and found.path_params == {"b": "1"}
        found = match_route(routes, {**scope, "method": "DELETE"})  # no such method: the first path match (405)
        assert found is not None and found.template == "/api/x/{a}"


async def _endpoint(request: Any) -> Any:
    raise AssertionError("not called")
