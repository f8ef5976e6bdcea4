"""The DICOM nodes over HTTP (``/api/dicom-nodes``, the table is in ``routes.py``): list, read, create or replace and
delete the remote AEs the archive knows (``dimse/nodes.py``, ``db/nodes.py``); C-ECHO a node, and send it a study,
a series or some of their instances (C-STORE SCU, ``dimse/outgoing.py``). Thin: parse, call, answer camelCase JSON.

The associations block, so they run in a worker thread; a node that does not answer, or refuses the association,
is a 502 (the detail says which). The instances go over one association, each in its stored transfer syntax when
the node accepts it, else converted losslessly (``outgoing.py``); the answer counts them as C-MOVE does.
"""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import quote

from pydantic import AfterValidator, Field
from starlette.requests import Request
from starlette.responses import Response

from .archive import Archive
from .audit import note_study
from .db import nodes as db
from .dimse import outgoing
from .dimse.nodes import (
    MAX_DESCRIPTION,
    MAX_HOST,
    DicomNode,
    NodePermission,
    check_ae_title,
    check_host,
    check_port,
)
from .errors import BadGateway, InvalidFields, NotFound
from .jsonapi import UID, ModelResponse, RequestModel, ResponseModel, json_body
from .services.retrieve import check_files, stored_files
from .state import archive_of
from .status import DimseStatus

ROOT = "/api/dicom-nodes"


class NodeBody(RequestModel):
    """A node to create or replace; its AE title is the one in the path."""

    host: Annotated[str, Field(min_length=1, max_length=MAX_HOST, examples=["10.0.0.5"]), AfterValidator(check_host)]
    port: Annotated[int, Field(strict=True, examples=[104]), AfterValidator(check_port)]
    permissions: list[NodePermission] = Field(
        default=[], description="what the node may ask of the archive besides C-ECHO"
    )
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] = ""
    worklist_own_station: bool = Field(
        default=False,
        description="a worklist query of the node that names no station (empty or '*' ScheduledStationAETitle) gets "
        "the items scheduled on its own AE title only",
    )


class Node(ResponseModel):
    """A DICOM node: its AE title, where it listens, what it may ask of the archive."""

    ae_title: str
    host: str
    port: int
    permissions: list[NodePermission]
    description: str
    worklist_own_station: bool


class StoreBody(RequestModel):
    """What to send: a study, one of its series, or some of their instances."""

    study_instance_uid: UID = Field(alias="studyInstanceUID")
    series_instance_uid: UID | None = Field(default=None, alias="seriesInstanceUID")
    sop_instance_uids: list[UID] | None = Field(default=None, alias="sopInstanceUIDs", min_length=1)


class EchoResult(ResponseModel):
    """The node's answer to a C-ECHO: its status (0 is Success) and the round trip, association included."""

    ae_title: str
    status: int
    success: bool
    round_trip_ms: float


class StoreResult(ResponseModel):
    """What became of the instances sent (C-STORE sub-operations, counted as PS3.4 C.4.2.1.4 counts them)."""

    ae_title: str
    completed: int
    failed: int
    warning: int
    failed_sop_instance_uids: list[str] = Field(alias="failedSOPInstanceUIDs")


def _model(node: DicomNode) -> Node:
    permissions = [p for p in NodePermission if p in node.permissions]  # in a fixed order
    return Node(
        ae_title=node.ae_title,
        host=node.host,
        port=node.port,
        permissions=permissions,
        description=node.description,
        worklist_own_station=node.worklist_own_station,
    )


def _ae_title(request: Request) -> str:
    """The path's AE title, as PS3.5 allows one (400 otherwise), without its non-significant spaces."""
    try:
        return check_ae_title(request.path_params["aet"])
    except ValueError as exc:
        raise InvalidFields([{"field": "aet", "message": str(exc)}]) from None


async def _node(archive: Archive, ae_title: str) -> DicomNode:
    node = await db.get_node(archive.pool, ae_title)
    if node is None:
        raise NotFound(f"no DICOM node {ae_title!r}")
    return node


async def list_nodes(request: Request) -> Response:
    """Every node, by AE title."""
    nodes = await db.list_nodes(archive_of(request).pool)
    return ModelResponse([_model(node) for node in nodes])


async def get_node(request: Request) -> Response:
    """One node."""
    return ModelResponse(_model(await _node(archive_of(request), _ae_title(request))))


async def put_node(request: Request) -> Response:
    """Create the node (201), or replace the one with this AE title (200)."""
    ae_title = _ae_title(request)
    body = await json_body(request, NodeBody)
    node = DicomNode(
        ae_title, body.host, body.port, frozenset(body.permissions), body.description, body.worklist_own_station
    )
    if await db.put_node(archive_of(request).pool, node):
        return ModelResponse(_model(node), status_code=201, headers={"location": f"{ROOT}/{quote(ae_title)}"})
    return ModelResponse(_model(node))


async def delete_node(request: Request) -> Response:
    """Forget the node: it may no longer ask anything but C-ECHO of the archive, nor receive from it."""
    ae_title = _ae_title(request)
    if not await db.delete_node(archive_of(request).pool, ae_title):
        raise NotFound(f"no DICOM node {ae_title!r}")
    return Response(status_code=204)


async def echo_node(request: Request) -> Response:
    """A C-ECHO from the archive's AE title to the node."""
    archive = archive_of(request)
    node = await _node(archive, _ae_title(request))
    try:
        status, seconds = await asyncio.to_thread(outgoing.echo, node, archive.settings.dimse_aet)
    except outgoing.NodeUnreachable as exc:
        raise BadGateway(str(exc)) from None
    result = EchoResult(
        ae_title=node.ae_title, status=status, success=status == DimseStatus.SUCCESS, round_trip_ms=seconds * 1000
    )
    return ModelResponse(result)


async def store_to_node(request: Request) -> Response:
    """Send the stored instances named to the node, over one association of the archive's."""
    archive = archive_of(request)
    ae_title = _ae_title(request)
    body = await json_body(request, StoreBody)
    # Sending a study away is a retrieval of its data: the event names it, whatever the outcome.
    note_study(request, body.study_instance_uid, series_instance_uid=body.series_instance_uid)
    node = await _node(archive, ae_title)
    files = await stored_files(archive, body.study_instance_uid, body.series_instance_uid, None)
    if body.sop_instance_uids is not None:
        wanted = set(body.sop_instance_uids)
        files = [file for file in files if file.sop_instance_uid in wanted]
        missing = sorted(wanted - {file.sop_instance_uid for file in files})
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise NotFound(f"not stored in this study or series: {shown}")
    await check_files(archive, files)
    try:
        counts = await asyncio.to_thread(
            outgoing.send, node, archive.settings.dimse_aet, archive.storage.local_copy, files
        )
    except outgoing.NodeUnreachable as exc:
        raise BadGateway(str(exc)) from None
    result = StoreResult(
        ae_title=node.ae_title,
        completed=counts.completed,
        failed=counts.failed,
        warning=counts.warning,
        failed_sop_instance_uids=counts.failed_sop_instance_uids,
    )
    return ModelResponse(result)
