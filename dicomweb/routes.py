"""The URL table, in the order PS3.18 lists the resources (§10.5 Store; §10.4 Retrieve and §10.6 Search follow)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from . import audit, delete, health, metrics, qido, rendered, stow, wado, wado_uri

DICOMWEB_ROUTES: list[BaseRoute] = [
    # Store (PS3.18 §10.5)
    Route("/studies", stow.store_instances, methods=["POST"]),
    Route("/studies/{StudyInstanceUID}", stow.store_instances, methods=["POST"]),
    # Search (PS3.18 §10.6)
    Route("/studies", qido.search_studies, methods=["GET"]),
    Route("/studies/{StudyInstanceUID}/series", qido.search_series, methods=["GET"]),
    Route("/series", qido.search_series, methods=["GET"]),
    Route("/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances", qido.search_instances, methods=["GET"]),
    Route("/studies/{StudyInstanceUID}/instances", qido.search_instances, methods=["GET"]),
    Route("/instances", qido.search_instances, methods=["GET"]),
    # Retrieve (PS3.18 §10.4)
    Route("/studies/{StudyInstanceUID}", wado.retrieve_instances, methods=["GET"]),
    Route("/studies/{StudyInstanceUID}/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route("/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}", wado.retrieve_instances, methods=["GET"]),
    Route("/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}",
        wado.retrieve_instances,
        methods=["GET"],
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/metadata",
        wado.retrieve_metadata,
        methods=["GET"],
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/frames/{frames}",
        wado.retrieve_frames,
        methods=["GET"],
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/bulk/{path:path}",
        wado.retrieve_bulkdata,
        methods=["GET"],
    ),
    # Retrieve rendered and thumbnail resources (PS3.18 §10.4.1.1.3, §10.4.1.1.4)
    Route("/studies/{StudyInstanceUID}/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route("/studies/{StudyInstanceUID}/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/rendered", rendered.retrieve_rendered, methods=["GET"]
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/rendered",
        rendered.retrieve_rendered,
        methods=["GET"],
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/thumbnail",
        rendered.retrieve_thumbnail,
        methods=["GET"],
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/frames/{frames}/rendered",
        rendered.retrieve_rendered,
        methods=["GET"],
    ),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/frames/{frames}/thumbnail",
        rendered.retrieve_thumbnail,
        methods=["GET"],
    ),
    # WADO-URI (PS3.18 §9), also under the DICOMweb root for clients configured with one base URL
    Route("/wado", wado_uri.retrieve_wado, methods=["GET"]),
    # Delete (not in PS3.18; as Google, Microsoft and dicomweb-client's delete_* do it)
    Route("/studies/{StudyInstanceUID}", delete.delete, methods=["DELETE"]),
    Route("/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}", delete.delete, methods=["DELETE"]),
    Route(
        "/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}",
        delete.delete,
        methods=["DELETE"],
    ),
]

ROUTES: list[BaseRoute] = [
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/metrics", metrics.metrics, methods=["GET"]),
    Route("/api/audit", audit.search_audit, methods=["GET"]),
    Route("/wado", wado_uri.retrieve_wado, methods=["GET"]),  # WADO-URI (PS3.18 §9) at the server root
    Mount("/dicomweb", routes=DICOMWEB_ROUTES),
]
