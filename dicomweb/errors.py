"""Errors that carry their HTTP status, and the one handler that shapes every error body.

The tree::

    DicomwebError (500)
     ├── BadRequest (400)             the request itself is malformed: fix the request and retry
     │    └── InvalidFields (400)     a JSON body or query of a JSON API fails validation, field by field
     ├── Forbidden (403)              the roles allow the action, but not on this resource (another's annotation)
     ├── NotFound (404)               no such resource (unknown UID or path)
     ├── NotAcceptable (406)          no representation the Accept header allows
     │    └── NoImage (406)           a rendered image of an instance without pixel data (an SR, a waveform)
     ├── Conflict (409)               the request clashes with what is stored
     ├── PayloadTooLarge (413)        the body exceeds DICOMWEB_MAX_UPLOAD_MB
     ├── RangeNotSatisfiable (416)    a Range header outside the value
     ├── Unprocessable (422)          a stored instance's pixel data cannot be decoded, so it has no rendered image
     ├── PreconditionRequired (428)   an update must name the version it read (If-Match or "version")
     ├── UnsupportedMediaType (415)   the Content-Type is not one the resource accepts
     ├── BadGateway (502)             a DICOM node the archive called did not answer or refused the association
     └── ServiceUnavailable (503)     a dependency (database, storage) is not ready; retry after Retry-After

Every error body has one shape, ``{"status": 400, "error": "Bad Request", "detail": "..."}``, served as
``application/json``; some errors add fields that say more (``errors``: each invalid field and why;
``allowedTransitions``: the states a workflow may move to). ``tests/test_error_shape.py`` pins the shape.

The services (``dicomweb/services/``) know no HTTP: their errors are answered here as the DicomwebError they amount
to (``SERVICE_ERRORS``: NotStored is a NotFound, FilesMissing a 500).

An error that says the database is gone (``db.outage.unreachable``: refused, lost mid-query, starting up, shutting
down) is answered here, for every endpoint, as ServiceUnavailable with ``Retry-After``; any other error of the
database is a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .db.outage import DATABASE_ERRORS, unreachable
from .services.retrieve import FilesMissing, NotStored

log = logging.getLogger("dicomweb")


class DicomwebError(Exception):
    """Base of all errors the server turns into an HTTP response; ``status`` is the HTTP status code."""

    status = 500

    def __init__(
        self, detail: str, headers: dict[str, str] | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


class BadRequest(DicomwebError):
    """The request is malformed (bad parameter, broken multipart framing); the detail names what is wrong."""

    status = 400


class InvalidFields(BadRequest):
    """A JSON API's request body or query fails validation; ``errors`` lists each field (a dotted path) and why."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        fields = ", ".join(e["field"] for e in errors)
        super().__init__(f"invalid request: {fields}", extra={"errors": errors})


class Forbidden(DicomwebError):
    """The caller's roles allow the kind of action, but not on this resource (an annotation is changed by its
    author or an admin only); another user or an admin can do it."""

    status = 403


class NotFound(DicomwebError):
    """The addressed study, series, instance or route does not exist."""

    status = 404


class NotAcceptable(DicomwebError):
    """None of the media types in the Accept header can be produced for this resource."""

    status = 406


class NoImage(NotAcceptable):
    """A rendered image or thumbnail of an instance that has no pixel data (an SR, a waveform): it has no image
    representation at all (PS3.18 §8.7.8.1); a study or series rendering passes over it."""


class Conflict(DicomwebError):
    """The request clashes with stored data, e.g. a STOW request of which no instance could be stored."""

    status = 409


class PayloadTooLarge(DicomwebError):
    """The request body is larger than ``DICOMWEB_MAX_UPLOAD_MB``; send fewer instances per request."""

    status = 413


class RangeNotSatisfiable(DicomwebError):
    """The Range header asks for bytes the value does not have; the response says how long the value is."""

    status = 416

    def __init__(self, detail: str, size: int) -> None:
        super().__init__(detail, {"content-range": f"bytes */{size}"})


class Unprocessable(DicomwebError):
    """The request is understood and the instance is stored, but its pixel data cannot be decoded (broken in a way
    that only decoding shows), so no rendered image or thumbnail can be made of it; the instance as stored
    (``transfer-syntax=*``) and its metadata can still be retrieved."""

    status = 422


class PreconditionRequired(DicomwebError):
    """An update of a versioned resource (a report) does not say which version it read (RFC 6585 §3): send
    ``If-Match`` with the ETag, or ``version`` in the body, so that a concurrent edit is a 409, not a lost update."""

    status = 428


class UnsupportedMediaType(DicomwebError):
    """The request's Content-Type is not one this resource accepts; the detail names the accepted ones."""

    status = 415


class BadGateway(DicomwebError):
    """The request needed another server, a DICOM node the archive associates with (C-ECHO, C-STORE), and it did
    not answer or refused the association; the detail says which. Check the node's host, port and AE title, and
    that it runs."""

    status = 502


RETRY_AFTER_SECONDS = 5  # what a 503 tells the client to wait (RFC 9110 §10.2.3); a dead embedded PostgreSQL is
# running again within a few seconds
DATABASE_UNAVAILABLE = "the database is not reachable; retry later"


class ServiceUnavailable(DicomwebError):
    """The database or the storage is not reachable; retry after ``Retry-After`` seconds, nothing was changed."""

    status = 503

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"retry-after": str(RETRY_AFTER_SECONDS)})


def error_response(
    status: int, detail: str, headers: dict[str, str] | None = None, extra: Mapping[str, Any] | None = None
) -> Response:
    """The single error body shape used by every endpoint."""
    body = {**(extra or {}), "status": status, "error": HTTPStatus(status).phrase, "detail": detail}
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


async def handle_dicomweb_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomwebError)
    return error_response(exc.status, exc.detail, exc.headers, exc.extra)


# The transport-neutral errors of the services, and the HTTP errors they are answered as.
SERVICE_ERRORS: dict[type[Exception], type[DicomwebError]] = {NotStored: NotFound, FilesMissing: DicomwebError}


async def handle_service_error(request: Request, exc: Exception) -> Response:
    """A service's error, as the HTTP error it amounts to."""
    error = next(http for service, http in SERVICE_ERRORS.items() if isinstance(exc, service))
    return await handle_dicomweb_error(request, error(str(exc)))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in our shape."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def handle_database_error(request: Request, exc: Exception) -> Response:
    """The database gone is a 503 the client may retry (the monitor in ``db/outage.py`` logs the outage once, so
    not here); any other database error is a fault of ours."""
    if unreachable(exc):
        return await handle_dicomweb_error(request, ServiceUnavailable(DATABASE_UNAVAILABLE))
    return await handle_unexpected(request, exc)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; the server log has the details")


EXCEPTION_HANDLERS = {
    DicomwebError: handle_dicomweb_error,
    HTTPException: handle_http_exception,
    **dict.fromkeys(SERVICE_ERRORS, handle_service_error),
    **dict.fromkeys(DATABASE_ERRORS, handle_database_error),
    Exception: handle_unexpected,
}
