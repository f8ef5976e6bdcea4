"""Bearer token authentication and role-based permissions for every route (RFC 6750), as an ASGI middleware.

The route a request will reach is found in the route table; it names the permission it needs and the action its
audit event records (``routing.Route``). Public routes (/healthz, /readyz) and what no route runs (404 and 405 from
the router) pass. Otherwise: no or an invalid token is 401 with ``WWW-Authenticate: Bearer``, a valid token whose
roles lack the permission is 403. The verified ``Principal`` is left in ``request.state.principal`` for the
endpoints, and every request to an audited route leaves an event (``audit.audited``).

The token comes in the ``Authorization`` header (RFC 6750 §2.1) or, for viewers that cannot send headers
(``<img>`` tags, OHIF's ``thumbnailDirect``), in the ``access_token`` query parameter (§2.3), with two limits
against tokens leaking from URLs into logs (§5.3): only for GET and HEAD, and only a study-scoped token
(``dicomweb token --study``) that expires within the hour. A study-scoped token, however it is sent, reads only
its study (the path's StudyInstanceUID, or WADO-URI's studyUID): anything else is 403 ``insufficient_scope``.
The parameter is removed from the query string the endpoints and the audit trail see; the access log redacts it.
A path or query holding a NUL is 400 before anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, unquote_plus

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .audit import audited
from .config import Settings
from .errors import error_response
from .permissions import Permission, allowed
from .routing import Route, RouteMatch, route_of, undecided
from .tokens import (
    Principal,
    TokenError,
    Verifier,
    jwks_file_keys,
    load_or_create_secret,
    public_keys,
    secret_keys,
)

log = logging.getLogger("dicomweb")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# The URI query parameter for a bearer token (RFC 6750 §2.3), for clients that cannot send headers (<img>).
ACCESS_TOKEN_PARAMETER = "access_token"
# A study-scoped token only reads, and only a request of these methods may carry a token in its URL.
READ_METHODS = frozenset({"GET", "HEAD"})
# WADO-URI names its study in the studyUID query parameter, not in the path (PS3.18 Table 9.1.2-1).
WADO_URI_ROUTES = frozenset({"/wado", "/dicomweb/wado"})


def verifier_for(settings: Settings) -> Verifier | None:
    """The token verifier the settings describe; None when authentication is disabled."""
    if settings.auth == "disabled":
        return None
    if settings.jwt_jwks_file:
        keys = jwks_file_keys(Path(settings.jwt_jwks_file))
    elif settings.jwt_public_key:
        pem = Path(settings.jwt_public_key).read_bytes()
        key = load_pem_public_key(pem)
        if isinstance(key, rsa.RSAPublicKey):
            keys = public_keys(pem, "RS256")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            keys = public_keys(pem, "ES256")
        else:
            raise ValueError(f"{settings.jwt_public_key}: only RSA (RS256) and P-256 (ES256) public keys are supported")
    else:
        keys = secret_keys(load_or_create_secret(settings.data_dir, settings.jwt_secret_file))
    return Verifier(keys, settings.jwt_issuer, settings.jwt_audience or None, settings.jwt_roles_claim or "roles")


def split_access_tokens(query_string: bytes) -> tuple[bytes, list[str]]:
    """The query string without its ``access_token`` parameters, and their values."""
    items = query_string.split(b"&")
    tokens = [unquote_plus(item.partition(b"=")[2].decode("latin-1")) for item in items if _is_access_token(item)]
    if not tokens:
        return query_string, []
    return b"&".join(item for item in items if not _is_access_token(item)), tokens


def redact_access_tokens(query_string: bytes) -> bytes:
    """The query string with the value of every ``access_token`` parameter replaced, for logs."""
    redacted = f"{ACCESS_TOKEN_PARAMETER}=[redacted]".encode()
    return b"&".join(redacted if _is_access_token(item) else item for item in query_string.split(b"&"))


def _is_access_token(item: bytes) -> bool:
    return unquote_plus(item.partition(b"=")[0].decode("latin-1")) == ACCESS_TOKEN_PARAMETER


def nul_problem(scope: Scope) -> str:
    """Where the request's path or query holds a NUL (``%00``), if it does. No DICOMweb identifier or parameter
    holds one, and PostgreSQL text cannot: the audit trail could not record the request (a 500 for every probe)."""
    if "\x00" in scope["path"]:
        return "the path contains a NUL character (%00)"
    query = scope.get("query_string", b"")
    if b"%00" not in query:
        return ""
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name + value:
            return f"the value of {name.replace(chr(0), '%00')[:64]} contains a NUL character (%00)"
    return "the query contains a NUL character (%00)"


def requested_studies(match: RouteMatch, query_string: bytes) -> list[str]:
    """The StudyInstanceUIDs a request names: the path's, or WADO-URI's studyUID parameters; none for a search
    across studies."""
    if "StudyInstanceUID" in match.path_params:
        return [match.path_params["StudyInstanceUID"]]
    if match.template in WADO_URI_ROUTES:
        return [v for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if k == "studyUID"]
    return []


def scope_refusal(principal: Principal, method: str, permission: Permission, match: RouteMatch, query: bytes) -> str:
    """Why a study-scoped token may not make this request; empty when it may (or the token is not scoped)."""
    if principal.study is None:
        return ""
    if method not in READ_METHODS or permission is not Permission.VIEW:
        return f"the token only allows reading study {principal.study}"
    studies = requested_studies(match, query)
    if not studies:
        return f"the token only allows reading study {principal.study}; this request names no study"
    if any(study != principal.study for study in studies):
        return f"the token only allows reading study {principal.study}, not another one"
    return ""


class AuthMiddleware:
    def __init__(self, app: ASGIApp, verifier: Verifier | None, routes: Sequence[BaseRoute]) -> None:
        missing = undecided(routes)
        if missing:  # such a route would run without a permission check or an audit event
            raise TypeError(f"routes must be dicomweb.routing.Route (permission and audit action): {missing}")
        self.app = app
        self.verifier = verifier
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        nul = nul_problem(scope)
        if nul:
            await error_response(400, nul)(scope, receive, send)
            return
        query_string, query_tokens = split_access_tokens(scope.get("query_string", b""))
        if query_tokens:  # the endpoints and the audit trail never see the token
            scope = {**scope, "query_string": query_string}
        match = route_of(self.routes, scope)
        route = match.route if match is not None else None
        if match is None or not isinstance(route, Route):  # no route runs (404, or 405 for another method)
            await self.app(scope, receive, send)
            return
        permission = route.permission
        principal: Principal | None = None
        if permission is not None and self.verifier is not None:
            authenticated = self._authenticate(scope, query_tokens)
            if isinstance(authenticated, Response):
                await authenticated(scope, receive, send)
                return
            principal = authenticated
            if not allowed(principal.roles, permission):
                roles = ", ".join(sorted(principal.roles))
                response = error_response(403, f"{permission} is needed; the token grants roles {roles}")
                await response(scope, receive, send)
                return
            refusal = scope_refusal(principal, scope["method"], permission, match, query_string)
            if refusal:
                # RFC 6750 §3.1: a valid token that does not reach this far is insufficient_scope, 403.
                await _challenge(403, "insufficient_scope", refusal)(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        if route.action is not None:
            send = audited(scope, send, match.template, route.action, principal)
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope, query_tokens: list[str]) -> Principal | Response:
        """The caller, or the 400/401 answer that says why there is none (RFC 6750 §3.1)."""
        assert self.verifier is not None
        header = dict(scope.get("headers") or []).get(b"authorization")
        if query_tokens:
            if header is not None or len(query_tokens) > 1:
                # RFC 6750 §2: "Clients MUST NOT use more than one method to transmit the token in each request."
                detail = f"send one token: in the Authorization header or as one {ACCESS_TOKEN_PARAMETER} parameter"
                return _challenge(400, "invalid_request", detail)
            if scope["method"] not in READ_METHODS:
                detail = f"{ACCESS_TOKEN_PARAMETER} is accepted for GET and HEAD only; send Authorization: Bearer"
                return _challenge(401, "", detail)
            token = query_tokens[0]
        else:
            scheme, _, token = (header or b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _challenge(401, "", _NO_TOKEN)
        try:
            principal = self.verifier.verify(token.strip())
            if query_tokens:
                if principal.study is None:
                    log.warning("an unscoped token of %r came as a query parameter (refused)", principal.subject)
                principal.check_query_token()
        except TokenError as exc:
            return _challenge(401, "invalid_token", f"invalid token: {exc}")
        return principal


def _challenge(status: int, error: str, detail: str) -> Response:
    """An error answer with the ``WWW-Authenticate: Bearer`` challenge (RFC 6750 §3), naming the error if any."""
    challenge = 'Bearer realm="dicomweb"' + (f', error="{error}"' if error else "")
    return error_response(status, detail, {"www-authenticate": challenge})


_NO_TOKEN = (
    "authentication required: send Authorization: Bearer <token> (see 'dicomweb token'), "
    f"or a study-scoped token as {ACCESS_TOKEN_PARAMETER}"
)


def check_bind(settings: Settings) -> None:
    """Authentication may be off only on loopback: refuse anything else, warn always."""
    if settings.auth == "disabled":
        if settings.host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"DICOMWEB_AUTH=disabled is for local demos only: refusing to listen on {settings.host}; "
                "use 127.0.0.1 or enable authentication"
            )
        log.warning("authentication is DISABLED: every client on this machine can read and change the archive")
