"""The URL table, in the order PS3.18 lists the resources (§10.5 Store; §10.4 Retrieve and §10.6 Search follow),
each route with the permission it needs and the action its audit event records; then the DICOM nodes' JSON API,
whose table also makes its part of the OpenAPI document (``jsonapi.py``, ``openapi.py``)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount

from . import audit, delete, dicom_nodes, health, home, metrics, qido, rendered, stow, wado, wado_uri
from .actions import Action
from .jsonapi import Endpoint, EndpointTable
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

# The remote AEs the archive knows (issue 14): managed by managers, each change and each association audited.
DICOM_NODES = EndpointTable(
    dicom_nodes.ROOT,
    "the DICOM nodes: the remote AEs (modalities, workstations) that may store, query and retrieve over DIMSE, "
    "and to which the archive sends studies",
    [
        Endpoint(
            "GET",
            "",
            dicom_nodes.list_nodes,
            "List the DICOM nodes",
            None,
            list[dicom_nodes.Node],
            permission=Permission.MANAGE,
            action=Action.READ,
        ),
        Endpoint(
            "GET",
            "/{aet}",
            dicom_nodes.get_node,
            "A DICOM node",
            None,
            dicom_nodes.Node,
            permission=Permission.MANAGE,
            action=Action.READ,
        ),
        Endpoint(
            "PUT",
            "/{aet}",
            dicom_nodes.put_node,
            "Register a DICOM node (201), or replace the one with this AE title (200)",
            dicom_nodes.NodeBody,
            dicom_nodes.Node,
            also=(201,),
            permission=Permission.MANAGE,
            action=Action.UPDATE,
        ),
        Endpoint(
            "DELETE",
            "/{aet}",
            dicom_nodes.delete_node,
            "Remove a DICOM node",
            status=204,
            permission=Permission.MANAGE,
            action=Action.DELETE,
        ),
        Endpoint(
            "POST",
            "/{aet}/echo",
            dicom_nodes.echo_node,
            "C-ECHO the node from the archive: its status and the round-trip time (502 when it does not answer)",
            None,
            dicom_nodes.EchoResult,
            errors=(502,),
            permission=Permission.MANAGE,
            action=Action.ECHO,
        ),
        Endpoint(
            "POST",
            "/{aet}/store",
            dicom_nodes.store_to_node,
            "Send a study, a series or some of their instances to the node (C-STORE): the counts completed, "
            "failed and warned (502 when it does not answer or refuses the association)",
            dicom_nodes.StoreBody,
            dicom_nodes.StoreResult,
            errors=(502,),
            permission=Permission.MANAGE,
            action=Action.RETRIEVE,
        ),
    ],
)

ROUTES: list[BaseRoute] = [
    # Probes for load balancers and orchestrators: no patient data.
    # A page for a browser opening the server's address: counts only, links, the OHIF data source (dicomweb/home.py).
    Route("/", home.home, methods=["GET"], permission=None, action=None),
    Route("/healthz", health.healthz, methods=["GET"], permission=None, action=None),
    Route("/readyz", health.readyz, methods=["GET"], permission=None, action=None),
    # Prometheus metrics: counts and timings, no patient data (scrapers do not carry tokens).
    Route("/metrics", metrics.metrics, methods=["GET"], permission=None, action=None),
    # The audit trail: only for managers, and reading it is audited too.
    Route("/api/audit", audit.search_audit, methods=["GET"], permission=Permission.MANAGE, action=Action.AUDIT),
    # WADO-URI (PS3.18 §9) at the server root
    Route("/wado", wado_uri.retrieve_wado, methods=["GET"], permission=Permission.VIEW, action=Action.RETRIEVE),
    Mount("/dicomweb", routes=DICOMWEB_ROUTES),
    *DICOM_NODES.routes(),
]
