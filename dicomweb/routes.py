"""The URL table, in the order PS3.18 lists the resources (§10.5 Store; §10.4 Retrieve and §10.6 Search follow)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from . import health, stow

DICOMWEB_ROUTES: list[BaseRoute] = [
    Route("/studies", stow.store_instances, methods=["POST"]),
    Route("/studies/{StudyInstanceUID}", stow.store_instances, methods=["POST"]),
]

ROUTES: list[BaseRoute] = [
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Mount("/dicomweb", routes=DICOMWEB_ROUTES),
]
