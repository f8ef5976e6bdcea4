"""One log line per request on stderr: method, path, status, duration, client (a pure ASGI middleware, so that
streamed bodies are measured to their last byte). Tokens in the query (``access_token``) are redacted."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import redact_access_tokens

log = logging.getLogger("dicomweb.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            query = redact_access_tokens(scope.get("query_string", b"")).decode("latin-1")
            log.info(
                '%s "%s %s%s" %s %.1fms',
                f"{client[0]}:{client[1]}" if client else "-",
                scope["method"],
                scope.get("path", ""),
                f"?{query}" if query else "",
                status or "-",
                (time.perf_counter() - started) * 1000,
            )
