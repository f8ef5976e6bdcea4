"""The URL table, in the order PS3.18 lists the resources (§10.5 Store; §10.4 Retrieve and §10.6 Search follow),
each route with the permission it needs and the action its audit event records."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount

from . import audit, delete, health, metrics, qido, rendered, stow, wado, wado_uri
from .actions import Action
from .permissions import Permission
from .routing import Route

DICOMWEB_ROUTES: list[BaseRoute] = [
    # Store (PS3.18 §10.5)
    Route("/studies", stow.store_instances, methods=["POST"], permission=Permission.UPLOAD, action=Action.STORE),
    Route(
        "/studies/{StudyInstanceUID}",
        stow.store_instances,
        methods=["POST"],
        permission=Permission.UPLOAD,
        action=Action.STORE,
    ),
    # Search (PS3.18 §10.6)
    Route("/studies", qido.search_studies, methods=["GET"], permission=Permission.VIEW, action=Action.SEARCH),
    Route(
        "/studies/{StudyInstanceUID}/series",
        qido.search_series,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.SEARCH,
    ),
    Route("/series", qido.search_series, methods=["GET"], permission=Permission.VIEW, action=Action.SEARCH),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances",
        qido.search_instances,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.SEARCH,
    ),
    Route(
        "/studies/{StudyInstanceUID}/instances",
        qido.search_instances,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.SEARCH,
    ),
    Route("/instances", qido.search_instances, methods=["GET"], permission=Permission.VIEW, action=Action.SEARCH),
    # Retrieve (PS3.18 §10.4)
    Route(
        "/studies/{StudyInstanceUID}",
        wado.retrieve_instances,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/metadata",
        wado.retrieve_metadata,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}",
        wado.retrieve_instances,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/metadata",
        wado.retrieve_metadata,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}",
        wado.retrieve_instances,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/metadata",
        wado.retrieve_metadata,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/frames/{frames}",
        wado.retrieve_frames,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/bulk/{path:path}",
        wado.retrieve_bulkdata,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    # Retrieve rendered and thumbnail resources (PS3.18 §10.4.1.1.3, §10.4.1.1.4)
    Route(
        "/studies/{StudyInstanceUID}/rendered",
        rendered.retrieve_rendered,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/thumbnail",
        rendered.retrieve_thumbnail,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/rendered",
        rendered.retrieve_rendered,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/thumbnail",
        rendered.retrieve_thumbnail,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/rendered",
        rendered.retrieve_rendered,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/thumbnail",
        rendered.retrieve_thumbnail,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/frames/{frames}/rendered",
        rendered.retrieve_rendered,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/frames/{frames}/thumbnail",
        rendered.retrieve_thumbnail,
        methods=["GET"],
        permission=Permission.VIEW,
        action=Action.RETRIEVE,
    ),
    # WADO-URI (PS3.18 §9), also under the DICOMweb root for clients configured with one base URL
    Route("/wado", wado_uri.retrieve_wado, methods=["GET"], permission=Permission.VIEW, action=Action.RETRIEVE),
    # Delete (not in PS3.18; as Google, Microsoft and dicomweb-client's delete_* do it)
    Route(
        "/studies/{StudyInstanceUID}",
        delete.delete,
        methods=["DELETE"],
        permission=Permission.MANAGE,
        action=Action.DELETE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}",
        delete.delete,
        methods=["DELETE"],
        permission=Permission.MANAGE,
        action=Action.DELETE,
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}",
        delete.delete,
        methods=["DELETE"],
        permission=Permission.MANAGE,
        action=Action.DELETE,
    ),
]

ROUTES: list[BaseRoute] = [
    # Probes for load balancers and orchestrators: no patient data.
    Route("/healthz", health.healthz, methods=["GET"], permission=None, action=None),
    Route("/readyz", health.readyz, methods=["GET"], permission=None, action=None),
    # Prometheus metrics: counts and timings, no patient data (scrapers do not carry tokens).
    Route("/metrics", metrics.metrics, methods=["GET"], permission=None, action=None),
    # The audit trail: only for managers, and reading it is audited too.
    Route("/api/audit", audit.search_audit, methods=["GET"], permission=Permission.MANAGE, action=Action.AUDIT),
    # WADO-URI (PS3.18 §9) at the server root
    Route("/wado", wado_uri.retrieve_wado, methods=["GET"], permission=Permission.VIEW, action=Action.RETRIEVE),
    Mount("/dicomweb", routes=DICOMWEB_ROUTES),
]
