"""The composition root: ``create_app(settings)`` builds the ASGI application: routes, middleware, and a lifespan
that opens the archive (``archive.open_archive``) for the requests to reach in ``request.state``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from . import openapi, reconcile, swagger
from .accesslog import AccessLogMiddleware
from .archive import Archive, open_archive
from .auth import AuthMiddleware, verifier_for
from .config import Settings
from .dimse.commitment_reports import CommitmentReports
from .dimse.server import DimseServer
from .errors import EXCEPTION_HANDLERS
from .lifetime import SUPERVISOR_PID, end_with
from .metrics import Metrics, MetricsMiddleware
from .routes import DICOM_NODES, ROUTES
from .routing import MatchedRouter
from .services.on_store import OnStore
from .state import State


def all_routes() -> list[BaseRoute]:
    """The archive's routes, the reporting API's, and the OpenAPI document of both JSON APIs with Swagger UI: the one
    place where dicomweb meets reporting."""
    from reporting.routes import REPORTING

    return [*ROUTES, *REPORTING.routes(), *openapi.routes([REPORTING, DICOM_NODES]), *swagger.routes()]


def on_store() -> OnStore:
    """What the archive makes of instances as they are stored, whichever transport stores them: reporting's import of
    measurement reports into annotations (``reporting/sr_import.py``). Here, beside ``all_routes``: dicomweb/ knows
    reporting only in its composition root."""
    from reporting.sr_import import MeasurementImport

    return MeasurementImport()


def background(archive: Archive) -> Coroutine[Any, Any, None]:
    """What every server process runs beside its requests: reporting's import of the measurement groups that wait for
    their image (``reporting/sr_waiting.py``)."""
    from reporting.sr_waiting import import_waiting

    return import_waiting(archive.pool)


def create_app(settings: Settings, supervised: bool = False, reconcile_at_start: bool = False) -> Starlette:
    """``supervised``: a worker of ``dicomweb serve --workers N``, whose supervisor has checked the schema and holds
    the DIMSE port for the workers to share (``cli.serve``). ``reconcile_at_start``: the one process of ``dicomweb
    serve``, which reconciles the files with the index before it serves (``reconcile.py``; a supervisor does it
    before it starts its workers)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with open_archive(settings, schema_checked=supervised, on_store=on_store()) as archive:
            if reconcile_at_start:
                async with archive.pool.acquire() as conn:
                    await reconcile.at_start(conn, archive.storage)
            dimse = DimseServer(archive, metrics, shared_port=supervised) if settings.dimse_port else None
            tasks = [asyncio.create_task(background(archive), name="dicomweb-waiting-measurements")]
            if dimse is not None:
                dimse.start()
                assert dimse.bridge is not None
                # Every process sends the storage commitment reports that are due, whichever process accepted them.
                tasks.append(asyncio.create_task(CommitmentReports(dimse.bridge).run(), name="dicomweb-commitment"))
            try:
                yield {"archive": archive}
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if dimse is not None:  # in a thread: an association may be waiting on this loop
                    await asyncio.to_thread(dimse.stop)

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
    end_with(int(os.environ.get(SUPERVISOR_PID) or os.getppid()))
    settings = Settings.from_env()
    settings.configure_logging()
    return create_app(settings, supervised=True)
