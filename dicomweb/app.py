"""The composition root: ``create_app(settings)`` builds the ASGI application with its lifespan resources."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypedDict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from .accesslog import AccessLogMiddleware
from .archive import Archive
from .auth import AuthMiddleware, verifier_for
from .config import Settings
from .db.audit import AuditWriter
from .db.embedded import EmbeddedPostgres
from .db.outage import DatabaseMonitor
from .db.pool import create_pool, ensure_schema
from .dimse.server import DimseServer
from .errors import EXCEPTION_HANDLERS
from .metrics import Metrics, MetricsMiddleware
from .routes import ROUTES
from .routing import MatchedRouter
from .storage import FileStorage

log = logging.getLogger("dicomweb")

# Worker threads for file I/O and parsing. Most of their time is spent waiting on fsync, so there are more of them
# than cores: a store waiting for a free thread while it holds row locks would stall every store into its series.
WORKER_THREADS = 32
# Processes for transcoding and decoding (per server worker process); started on first use.
CPU_PROCESSES = 2
# Connections for the audit trail's writes (per server worker process): one batch is written at a time; a batch that
# fails is written again event by event on the same connection.
AUDIT_CONNECTIONS = 2


class State(TypedDict):
    archive: Archive


def all_routes() -> list[BaseRoute]:
    """The archive's routes and the reporting API's: the one place where dicomweb meets reporting."""
    from reporting.routes import routes as reporting_routes

    return [*ROUTES, *reporting_routes()]


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="dicomweb-io")
        asyncio.get_running_loop().set_default_executor(executor)
        # "spawn": a forked child would inherit the parent's threads' locks in whatever state they were.
        cpu = ProcessPoolExecutor(max_workers=CPU_PROCESSES, mp_context=multiprocessing.get_context("spawn"))
        embedded: EmbeddedPostgres | None = None
        url = settings.database_url
        if not url:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await asyncio.to_thread(embedded.start)
        try:
            storage = FileStorage(settings.data_dir)
            await asyncio.to_thread(storage.prepare)
            pool = await create_pool(url, settings.db_pool_size, settings.db_timeout_seconds)
            try:
                async with pool.acquire() as conn:
                    await ensure_schema(conn)
                # The audit insert's plan never depends on its values: planned once, not for every batch (about
                # 0.1 ms of PostgreSQL's CPU each time, which every audited request waits for).
                audit_pool = await create_pool(url, AUDIT_CONNECTIONS, settings.db_timeout_seconds, custom_plans=False)
                audit = AuditWriter(audit_pool)
                # Logs an outage once, and renews the pools and writes the kept audit events when it ends; the
                # embedded PostgreSQL's own watchdog (db/embedded.py) starts it again if it died.
                monitor = DatabaseMonitor(url, [pool, audit_pool], audit.write_kept)
                watching = asyncio.create_task(monitor.run(), name="dicomweb-database-monitor")
                try:
                    log.info("archive ready: files in %s", storage.root)
                    archive = Archive(settings, pool, storage, cpu, audit)
                    dimse = DimseServer(archive) if settings.dimse_port else None
                    if dimse is not None:
                        dimse.start()
                    try:
                        yield {"archive": archive}
                    finally:
                        if dimse is not None:  # in a thread: an association may be waiting on this loop
                            await asyncio.to_thread(dimse.stop)
                finally:
                    watching.cancel()
                    await asyncio.gather(watching, return_exceptions=True)
                    await audit_pool.close()
            finally:
                await pool.close()
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
            executor.shutdown(wait=False)
            cpu.shutdown(wait=True, cancel_futures=True)

    routes = all_routes()
    verifier = verifier_for(settings)
    metrics = Metrics()
    middleware = [Middleware(AccessLogMiddleware), Middleware(MetricsMiddleware, routes=routes, metrics=metrics)]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        # Outside authentication, so that preflights and 401/403 answers carry CORS headers too (a browser shows
        # an error without them as a CORS failure). Range, If-None-Match and Authorization are what OHIF and
        # Cornerstone send; Content-Range, ETag and Warning are what they read.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Accept", "Content-Type", "Range", "If-None-Match", "If-Match"],
                expose_headers=["Content-Type", "Content-Range", "Content-Length", "ETag", "Warning"],
                max_age=600,
            )
        )
    middleware.append(Middleware(AuthMiddleware, verifier=verifier, routes=routes))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.router = MatchedRouter(routes, lifespan=lifespan)  # runs the route the middlewares found (routing.py)
    app.state.metrics = metrics
    return app


def create_app_from_env() -> Starlette:
    """Factory for uvicorn's worker processes (``dicomweb serve --workers N``): settings from DICOMWEB_* variables."""
    settings = Settings.from_env()
    settings.configure_logging()
    return create_app(settings)
