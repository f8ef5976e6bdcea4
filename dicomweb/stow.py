"""STOW-RS, the Store Instances transaction (PS3.18 §10.5).

The body streams in part by part; each complete part is spooled to disk and parsed in a worker thread while the
next one arrives. Instances are placed and indexed only once the whole body has arrived intact: a body that ends
before its closing boundary, or a client that disconnects, stores nothing (400, or nothing to answer), and every
spooled file is removed.

Response (PS3.18 §10.5.3, Table 10.5.3-3): RetrieveURL, ReferencedSOPSequence and FailedSOPSequence, with status
200 when every instance was stored, 202 when some failed, 409 when none was stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from . import media
from .archive import Archive
from .audit import AUDIT_COMMITTED_STATUS, AUDIT_EVENT, note_study
from .db.audit import Event
from .errors import PayloadTooLarge
from .instance import InvalidInstance
from .metrics import metrics_of
from .multipart import ReceivedPart, read_multipart, read_single
from .responses import DicomJSONResponse, warning_headers
from .services import store
from .state import archive_of, subject_of
from .status import FailureReason
from .uids import require_uid
from .urls import base_url

MAX_PARALLEL_PARSES = 2  # parts parsed in worker threads while the body is still arriving

# DICOM JSON tags of the Store Instances Response Module (PS3.18 Table 10.5.3-3).
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


async def store_instances(request: Request) -> Response:
    """POST /studies and /studies/{StudyInstanceUID}."""
    study_instance_uid = request.path_params.get("StudyInstanceUID")
    if study_instance_uid is not None:
        require_uid(study_instance_uid, "StudyInstanceUID")
    response_type = media.negotiate(request.headers.get("accept"), (media.DICOM_JSON, media.JSON))
    body = media.stow_body(request.headers.get("content-type"))
    archive = archive_of(request)
    limit = archive.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the {archive.settings.max_upload_mb} MiB limit"
        )

    if body.boundary is None:
        parts = _one(read_single(request.stream(), archive.storage, limit))
    else:
        parts = read_multipart(
            request.stream(),
            body.boundary,
            archive.storage,
            limit,
            max_parts=archive.settings.max_parts,
            max_header_bytes=archive.settings.max_part_header_bytes,
        )
    base = base_url(request, archive.settings.public_url)
    event_for = getattr(request.state, AUDIT_EVENT, None)  # an audited route (audit.audited)

    def answer(results: list[store.StoreResult]) -> StoreResponse:
        response = StoreResponse(base, study_instance_uid)
        for result in results:
            response.add(result)
        if len(response.studies) == 1 and study_instance_uid is None:
            note_study(request, next(iter(response.studies)))  # the audit event names what the body stored
        return response

    def audit_event(results: list[store.StoreResult]) -> Event:
        assert event_for is not None
        return event_for(answer(results).status)  # type: ignore[no-any-return]

    try:
        results, audit = await _store_parts(
            archive, parts, study_instance_uid, audit_event if event_for else None, subject_of(request)
        )
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is listening; nothing was stored
    response = answer(results)
    if audit is not None and audit.committed is not None:
        setattr(request.state, AUDIT_COMMITTED_STATUS, audit.committed.status)
    failures = metrics_of(request).stow_failures
    for result in results:
        if result.failure is not None:
            failures.labels(f"{result.failure:#06x}").inc()
    return DicomJSONResponse(
        response.dataset(), status_code=response.status, headers=response.warnings(request), media_type=response_type
    )


async def _one(part: Awaitable[ReceivedPart]) -> AsyncIterator[ReceivedPart]:
    yield await part


async def _store_parts(
    archive: Archive,
    parts: AsyncIterator[ReceivedPart],
    study_instance_uid: str | None,
    audit_event: Callable[[list[store.StoreResult]], Event] | None,
    stored_by: str,
) -> tuple[list[store.StoreResult], store.AuditWith | None]:
    """Receive and parse every part, then commit them together, with the request's audit event (made from all the
    results: ``audit_event``) when there is one; on any receive error nothing is stored. ``stored_by``: the caller,
    the author of what the archive's on_store hook makes of the instances (annotations from an SR)."""
    parses = asyncio.Semaphore(MAX_PARALLEL_PARSES)
    received: list[ReceivedPart] = []
    parsing: list[asyncio.Task[store.Parsed | InvalidInstance]] = []

    async def parse(part: ReceivedPart) -> store.Parsed | InvalidInstance:
        if not media.check_part_type(part.content_type):
            return InvalidInstance(
                FailureReason.CANNOT_UNDERSTAND, f"part Content-Type {part.content_type} is not {media.DICOM}"
            )
        async with parses:
            return await store.parse(part.file, study_instance_uid, archive.on_store)

    try:
        async for part in parts:
            received.append(part)
            parsing.append(asyncio.create_task(parse(part)))
        outcomes = await asyncio.gather(*parsing)
        # The body is complete: the files go in place now, right before their commit.
        batch = await store.place(archive.storage, [o for o in outcomes if isinstance(o, store.Parsed)])
    except BaseException:
        for task in parsing:
            task.cancel()
        await asyncio.gather(*parsing, return_exceptions=True)
        await archive.storage.discard(part.file for part in received)
        raise

    await archive.storage.discard(
        p.file for p, o in zip(received, outcomes, strict=True) if not isinstance(o, store.Parsed)
    )
    refused = [store.StoreResult.failed(o) for o in outcomes if not isinstance(o, store.Parsed)]
    audit = store.AuditWith(lambda stored: audit_event(refused + stored)) if audit_event else None
    committed = iter(await store.commit(archive, batch, audit, stored_by) if batch else [])
    results = [next(committed) if isinstance(o, store.Parsed) else store.StoreResult.failed(o) for o in outcomes]
    return results, audit


class StoreResponse:
    """Builds the Store Instances Response dataset and picks the HTTP status."""

    def __init__(self, base: str, study_instance_uid: str | None) -> None:
        self.base = base
        self.study_instance_uid = study_instance_uid
        self.referenced: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.details: list[str] = []
        self.studies: set[str] = set()

    def add(self, result: store.StoreResult) -> None:
        item: dict[str, Any] = {}
        if result.sop_class_uid:
            item[REFERENCED_SOP_CLASS_UID] = {"vr": "UI", "Value": [result.sop_class_uid]}
        if result.sop_instance_uid:
            item[REFERENCED_SOP_INSTANCE_UID] = {"vr": "UI", "Value": [result.sop_instance_uid]}
        if result.instance is not None:
            item[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{self.base}/{result.instance.path}"]}
            self.referenced.append(dict(sorted(item.items())))
            self.studies.add(result.instance.study_instance_uid)
        else:
            assert result.failure is not None
            item[FAILURE_REASON] = {"vr": "US", "Value": [int(result.failure)]}
            self.failed.append(dict(sorted(item.items())))
            self.details.append(f"{result.sop_instance_uid or 'a part'}: {result.detail} ({result.failure:#06x})")

    @property
    def status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.referenced else 409

    def dataset(self) -> dict[str, Any]:
        dataset: dict[str, Any] = {}
        study = self.study_instance_uid or (next(iter(self.studies)) if len(self.studies) == 1 else None)
        if study is not None and self.referenced:
            dataset[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{self.base}/studies/{study}"]}
        if self.failed:
            dataset[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": self.failed}
        if self.referenced:
            dataset[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": self.referenced}
        return dataset

    def warnings(self, request: Request) -> dict[str, str]:
        """Why each instance failed, as ``Warning: 299`` headers (RFC 7234 §5.5), the first few of them."""
        return warning_headers(request, self.details)
