"""The audit trail: every request to a route that touches patient data leaves an event before its answer leaves.

The event is written when the response starts (its status is known then); if it cannot be written, the client
gets a 500 instead of the data: no unaudited access. While the database is gone a read gets a 503 to retry instead,
and the events are kept to be written once it is back (``send_audited``). Events record who (token subject and
roles), what (the action the route names, from the vocabulary of ``actions.py``; method, route, path, query), which
data (patient, study, series, instance UIDs of the path) and the outcome.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Scope, Send

from .actions import Action
from .db import audit as db
from .db.outage import unreachable
from .errors import DATABASE_UNAVAILABLE, BadRequest, ServiceUnavailable, error_response
from .state import archive_of
from .tokens import Principal

log = logging.getLogger("dicomweb")

# Keys of request.state an endpoint sets when its path names no UID (see ``note_study``).
AUDIT_PATIENT_ID = "audit_patient_id"
AUDIT_STUDY_INSTANCE_UID = "audit_study_instance_uid"
AUDIT_SERIES_INSTANCE_UID = "audit_series_instance_uid"


def note_study(
    request: Request,
    study_instance_uid: str | None,
    patient_id: str | None = None,
    series_instance_uid: str | None = None,
) -> None:
    """Name the study (and patient, and series) a request touched, for its audit event."""
    setattr(request.state, AUDIT_STUDY_INSTANCE_UID, study_instance_uid)
    setattr(request.state, AUDIT_PATIENT_ID, patient_id)
    setattr(request.state, AUDIT_SERIES_INSTANCE_UID, series_instance_uid)


# Keys of request.state for a handler that commits its request's event with its own changes, in one transaction
# (STOW-RS: ``services.store``): the builder of the event for a status, and the status of the event it committed.
AUDIT_EVENT = "audit_event"
AUDIT_COMMITTED_STATUS = "audit_committed_status"


def audited(scope: Scope, send: Send, template: str, action: Action, principal: Principal | None) -> Send:
    """``send`` that writes the audit event before the response starts, and answers 500 if it cannot (503 while the
    database is gone, for a read). A handler may commit the event itself, with the changes it reports (one commit
    instead of two): it builds it with ``request.state.audit_event(status)`` and sets ``audit_committed_status``;
    an answer with that status then writes nothing more, any other answer (an error after the commit) its own."""
    # The access log middleware names every request (and returns the id in X-Request-Id); an app without it here.
    request_id = (scope.get("state") or {}).get("request_id") or uuid.uuid4().hex
    failed = False

    def event_for(status: int) -> db.Event:
        params = scope.get("path_params") or {}
        # Routes whose path names no UID (the reporting API's ids) name the study they touched in the state.
        state = scope.get("state") or {}
        client = scope.get("client")
        return db.Event(
            request_id=request_id,
            subject=principal.subject if principal else None,
            roles=sorted(principal.roles) if principal else [],
            action=action.value,
            method=scope["method"],
            route=template,
            path=scope.get("path", ""),
            query=scope.get("query_string", b"").decode("latin-1") or None,
            patient_id=state.get(AUDIT_PATIENT_ID),
            study_instance_uid=params.get("StudyInstanceUID")
            or state.get(AUDIT_STUDY_INSTANCE_UID)
            or _param(scope, "studyUID"),
            series_instance_uid=params.get("SeriesInstanceUID")
            or state.get(AUDIT_SERIES_INSTANCE_UID)
            or _param(scope, "seriesUID"),
            sop_instance_uid=params.get("SOPInstanceUID") or _param(scope, "objectUID"),
            status=status,
            client=f"{client[0]}" if client else None,
        )

    scope.setdefault("state", {})[AUDIT_EVENT] = event_for

    async def send_audited(message: Message) -> None:
        nonlocal failed
        if failed:
            return
        if message["type"] == "http.response.start":
            if scope["state"].get(AUDIT_COMMITTED_STATUS) == int(message["status"]):
                await send(message)  # committed with the request's changes
                return
            event = event_for(int(message["status"]))
            writer: db.AuditWriter = scope["state"]["archive"].audit
            try:
                await writer.write(event)
            except Exception as exc:
                if not unreachable(exc):
                    log.exception("audit event for request %s could not be written; refusing the request", request_id)
                    failed = True
                    response = error_response(500, "the access could not be audited, so it is refused; try again later")
                    await response(scope, _receive_nothing, send)
                    return
                # The database is gone. An answer that would disclose data (a read that succeeded) becomes a 503
                # to retry, and the event of that refusal is kept; any other answer goes out as it is (a change
                # already committed, which a 503 would misreport, or an error) with its event kept. Kept events
                # are written once the database is back (db.audit.AuditWriter).
                if scope["method"] in ("GET", "HEAD") and int(message["status"]) < 400:
                    writer.keep(replace(event, status=503))
                    failed = True
                    unavailable = ServiceUnavailable(DATABASE_UNAVAILABLE)
                    response = error_response(unavailable.status, unavailable.detail, unavailable.headers)
                    await response(scope, _receive_nothing, send)
                    return
                writer.keep(event)
        await send(message)

    return send_audited


def _param(scope: Scope, name: str) -> str | None:
    """A WADO-URI query parameter (studyUID, seriesUID, objectUID) for the event."""
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


async def _receive_nothing() -> Message:
    return {"type": "http.disconnect"}


async def search_audit(request: Request) -> Response:
    """GET /api/audit?user=&patient=&study=&action=&since=&until=&limit=&offset= (radiology:manage)."""
    params = request.query_params
    unknown = set(params) - {"user", "patient", "study", "action", "since", "until", "limit", "offset"}
    if unknown:
        raise BadRequest(f"unknown parameters: {', '.join(sorted(unknown))}")
    filters = db.Filters(
        subject=params.get("user"),
        patient_id=params.get("patient"),
        study_instance_uid=params.get("study"),
        action=_action(params),
        since=_timestamp(params, "since"),
        until=_timestamp(params, "until"),
        limit=_count(params, "limit", 100, MAX_AUDIT_PAGE),
        offset=_count(params, "offset", 0, 2**31 - 1),
    )
    archive = archive_of(request)
    async with archive.pool.acquire() as conn:
        events = await db.search(conn, filters)
    return JSONResponse([_json(event) for event in events])


MAX_AUDIT_PAGE = 1000  # events per page of GET /api/audit


def _action(params: Mapping[str, str]) -> str | None:
    """The action filter, one of the closed vocabulary: a misspelt one would silently find no events."""
    value = params.get("action")
    if value is None:
        return None
    try:
        return Action(value).value
    except ValueError:
        raise BadRequest(f"action must be one of {', '.join(Action)}, got {value[:40]!r}") from None


def _timestamp(params: Mapping[str, str], name: str) -> datetime.datetime | None:
    value = params.get(name)
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or time, got {value[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _count(params: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return min(int(value), maximum)


def _json(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "occurredAt": event["occurred_at"].isoformat(),
        "requestId": event["request_id"],
        "user": event["subject"],
        "roles": list(event["roles"]),
        "action": event["action"],
        "method": event["method"],
        "route": event["route"],
        "path": event["path"],
        "query": event["query"],
        "patientId": event["patient_id"],
        "studyInstanceUID": event["study_instance_uid"],
        "seriesInstanceUID": event["series_instance_uid"],
        "sopInstanceUID": event["sop_instance_uid"],
        "status": event["status"],
        "client": event["client"],
    }
