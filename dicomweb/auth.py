"""Bearer token authentication and role-based permissions for every route (RFC 6750), as an ASGI middleware.

The route a request will reach is found in the route table, its permission in ``permissions.ROUTE_PERMISSIONS``;
public routes (/healthz, /readyz) and unknown paths (404 from the router) pass. Otherwise: no or an invalid token
is 401 with ``WWW-Authenticate: Bearer``, a valid token whose roles lack the permission is 403. The verified
``Principal`` is left in ``request.state.principal`` for the endpoints (and the audit trail).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from .audit import audited
from .config import Settings
from .errors import error_response
from .permissions import allowed, permission_for
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
        keys = secret_keys(load_or_create_secret(settings.data_dir))
    return Verifier(keys, settings.jwt_issuer, settings.jwt_audience or None, settings.jwt_roles_claim or "roles")


def route_template(routes: Sequence[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    """The path template of the route a request will reach (``/dicomweb/studies/{StudyInstanceUID}``), if any."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        path = str(getattr(route, "path", ""))
        if isinstance(route, Mount):
            return route_template(route.routes, {**scope, **child}, prefix + path)
        return prefix + path
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, verifier: Verifier | None, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.verifier = verifier
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        template = route_template(self.routes, scope)
        try:
            permission = permission_for(scope["method"], template) if template else None
        except KeyError:  # a method the route does not have: the router answers 405
            permission = None
        if permission is None or template is None:
            await self.app(scope, receive, send)
            return
        principal: Principal | None = None
        if self.verifier is not None:
            principal, problem = self._principal(scope)
            if principal is None:
                challenge = 'Bearer realm="dicomweb"' + (', error="invalid_token"' if problem != _NO_TOKEN else "")
                await error_response(401, problem, {"www-authenticate": challenge})(scope, receive, send)
                return
            if not allowed(principal.roles, permission):
                roles = ", ".join(sorted(principal.roles))
                response = error_response(403, f"{permission} is needed; the token grants roles {roles}")
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, audited(scope, send, template, permission, principal))

    def _principal(self, scope: Scope) -> tuple[Principal | None, str]:
        assert self.verifier is not None
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, _NO_TOKEN
        try:
            return self.verifier.verify(token.strip()), ""
        except TokenError as exc:
            return None, f"invalid token: {exc}"


_NO_TOKEN = "authentication required: send Authorization: Bearer <token> (see 'dicomweb token')"


def check_bind(settings: Settings) -> None:
    """Authentication may be off only on loopback: refuse anything else, warn always."""
    if settings.auth == "disabled":
        if settings.host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"DICOMWEB_AUTH=disabled is for local demos only: refusing to listen on {settings.host}; "
                "use 127.0.0.1 or enable authentication"
            )
        log.warning("authentication is DISABLED: every client on this machine can read and change the archive")
