"""The absolute base URL of the DICOMweb service as the client sees it, for RetrieveURL and BulkDataURI.

Order: ``DICOMWEB_PUBLIC_URL`` when set; else the first ``Forwarded`` element (RFC 7239) or ``X-Forwarded-Proto``,
``-Host``, ``-Port`` and ``-Prefix``; else the request's scheme and Host header. A Host header without a port (as
dicomweb-client 0.61 sends) takes the port the request actually arrived on, never an implied port 80.
"""

from __future__ import annotations

from starlette.requests import Request

DICOMWEB_ROOT = "/dicomweb"
DEFAULT_PORTS = {"http": 80, "https": 443}


def base_url(request: Request, public_url: str = "") -> str:
    """``scheme://host[:port][/prefix]/dicomweb`` for this request."""
    if public_url:
        return public_url.rstrip("/") + DICOMWEB_ROOT
    headers = request.headers
    forwarded = _forwarded(headers.get("forwarded", ""))
    scheme = forwarded.get("proto") or _first(headers.get("x-forwarded-proto")) or request.url.scheme
    host = forwarded.get("host") or _first(headers.get("x-forwarded-host")) or headers.get("host", "")
    port = _first(headers.get("x-forwarded-port")) or ""
    prefix = (_first(headers.get("x-forwarded-prefix")) or "").rstrip("/")
    server = request.scope.get("server")
    if not host:
        host = str(server[0]) if server else "localhost"
    if not _has_port(host):
        proxied = bool(forwarded or headers.get("x-forwarded-host"))
        if not port and not proxied and server and server[1]:
            port = str(server[1])
        if port.isdigit() and int(port) != DEFAULT_PORTS.get(scheme):
            host = f"{host}:{port}"
    return f"{scheme}://{host}{prefix}{DICOMWEB_ROOT}"


def _first(value: str | None) -> str | None:
    return value.split(",")[0].strip() if value else None


def _has_port(host: str) -> bool:
    if host.startswith("["):  # IPv6 literal: "[::1]:8080"
        return "]:" in host
    return ":" in host


def _forwarded(value: str) -> dict[str, str]:
    """The parameters of the first (client-nearest proxy's) element of a Forwarded header."""
    if not value:
        return {}
    params: dict[str, str] = {}
    for pair in value.split(",")[0].split(";"):
        name, _, param = pair.strip().partition("=")
        if name and param:
            params[name.lower()] = param.strip().strip('"')
    return params
