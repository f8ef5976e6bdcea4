"""One log line per request on stderr: method, path, status, duration, client, request id (a pure ASGI middleware,
so that streamed bodies are measured to their last byte). Tokens in the query (``access_token``) are redacted.

Every request gets an id: the caller's ``X-Request-Id`` when it is a plain token (a proxy's, to follow a request
across systems), else a new one. It is returned in the ``X-Request-Id`` header, written in the log line and in the
request's audit event (``scope["state"]["request_id"]``)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import redact_access_tokens

log = logging.getLogger("dicomweb.access")

REQUEST_ID = "request_id"  # its key in scope["state"]
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-Id if it is a plain token, else a new random id."""
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return bytes(value).decode("ascii")
    return uuid.uuid4().hex


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        request_id = request_id_of(scope)
        scope.setdefault("state", {})[REQUEST_ID] = request_id

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            query = redact_access_tokens(scope.get("query_string", b"")).decode("latin-1")
            principal = (scope.get("state") or {}).get("principal")
            fields = {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope.get("path", ""),
                "query": query or None,
                "status": status or None,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "user": principal.subject if principal else None,
            }
            log.info(
                '%s "%s %s%s" %s %.1fms %s',
                fields["client"] or "-",
                fields["method"],
                fields["path"],
                f"?{query}" if query else "",
                status or "-",
                fields["duration_ms"],
                request_id,
                extra=fields,
            )
