"""When, and by which server process, a storage commitment report is sent (README "Running at scale"): a modality
deletes its own copies once the archive commits, so a request must not live only in the memory of the process that
received it.

A request is a row of ``storage_commitment`` (``db/commitment.py``) before its N-ACTION is answered success. The
process that accepted it holds it and sends the report a moment later (``report_soon``), on the requester's
association if that is still open, else on a new one to the requester's node. A report that could not be sent, or
whose process died before sending it, is sent by whichever process claims it next (``CommitmentReports``, a task of
every process that runs the DIMSE listener), on a new association to the node. The report is worked out when it is
sent, from the index and the files as they are then.

A process holds a request while it sends its report (a lease of ``DICOMWEB_COMMIT_LEASE_SECONDS``, renewed just
before the N-EVENT-REPORT goes out), so that two processes never send the same report at once, and one that died
holds it no longer than that. An attempt that sends nothing releases it to be tried again after
``DICOMWEB_COMMIT_RETRY_SECONDS``, doubled each time up to an hour, until ``DICOMWEB_COMMIT_RETRY_HOURS`` after it
arrived; then it is abandoned, with a warning. Reported and abandoned requests are kept ``RETENTION``, then purged.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import threading
import time
from typing import TYPE_CHECKING

from pynetdicom.association import Association

from ..db import commitment as db
from ..db.commitment import CommitmentRequest
from ..db.outage import unreachable
from . import commitment

if TYPE_CHECKING:
    from .server import Bridge

log = logging.getLogger("dicomweb")

REPORT_DELAY = 0.05  # seconds: the N-ACTION response goes first (pynetdicom sends it when the handler returns)
POLL_SECONDS = 5.0  # between a process's looks for due requests (DICOMWEB_COMMIT_RETRY_SECONDS when shorter)
MAX_SENDING = 8  # reports one process sends at once, each in a thread of its own (an association blocks)
MAX_RETRY_SECONDS = 3600.0  # the longest wait between two attempts (unless DICOMWEB_COMMIT_RETRY_SECONDS is longer)
RETENTION = datetime.timedelta(days=30)  # how long reported and abandoned requests are kept, for the record
PURGE_SECONDS = 3600.0  # between a process's purges of those older than RETENTION


def report_soon(bridge: Bridge, assoc: Association, request: CommitmentRequest) -> None:
    """The first attempt, by the process that accepted the request (in a thread of its own), once the N-ACTION
    response has gone out."""
    time.sleep(REPORT_DELAY)
    attempt(bridge, request, assoc)


def attempt(bridge: Bridge, request: CommitmentRequest, assoc: Association | None = None) -> None:
    """One attempt at the report of a request this process holds: check the instances, send the report (on
    ``assoc`` while it is open, else on a new association to the requester's node) and record what came of it.
    Blocks; never raises."""
    pool, settings = bridge.archive.pool, bridge.archive.settings
    opened: Association | None = None
    try:
        failures = commitment.failures_of(bridge, request.references)
        event_type, report = commitment.report_of(request.transaction_uid, request.references, failures)
        on = assoc if assoc is not None and assoc.is_established else None
        if on is None:
            on = opened = commitment.associate(bridge, request.calling_ae_title)
        if not bridge.run(db.renew(pool, request.pk, bridge.holder, settings.commit_lease_seconds)):
            log.info(
                "storage commitment report %s for %s: taken over by another process after this one's lease ended",
                request.transaction_uid,
                request.calling_ae_title,
            )
            return
        commitment.send(on, event_type, report)
    except commitment.NotSent as exc:
        _not_sent(bridge, request, str(exc))
        return
    except Exception as exc:
        if bridge.loop.is_closed():  # the server stopped: the lease ends, and another process sends it
            return
        if unreachable(exc):
            log.warning(
                "storage commitment report %s for %s not sent: the database is not reachable; tried again "
                "when this process's hold on it ends",
                request.transaction_uid,
                request.calling_ae_title,
            )
            return
        log.exception("storage commitment report %s for %s failed", request.transaction_uid, request.calling_ae_title)
        _not_sent(bridge, request, f"{type(exc).__name__}: {exc}")
        return
    finally:
        if opened is not None and opened.is_established:
            opened.release()
    log.info(
        "storage commitment report %s sent to %s: %d committed, %d failed",
        request.transaction_uid,
        request.calling_ae_title,
        len(request.references) - len(failures),
        len(failures),
    )
    try:
        bridge.run(db.reported(pool, request.pk, event_type, len(failures)))
    except Exception:  # sent but not recorded: sent again once the lease ends (a report may arrive twice)
        log.exception("storage commitment report %s: sent, but not recorded as sent", request.transaction_uid)


def retry_seconds(base: int, attempts: int) -> float:
    """The wait after a failed attempt: ``base`` doubled after each, up to MAX_RETRY_SECONDS."""
    return min(base * 2.0 ** min(attempts - 1, 30), max(MAX_RETRY_SECONDS, base))


def _not_sent(bridge: Bridge, request: CommitmentRequest, error: str) -> None:
    """Release the request to be tried again later, or abandon it when its retry hours have passed."""
    settings = bridge.archive.settings
    wait = retry_seconds(settings.commit_retry_seconds, request.attempts)
    try:
        state = bridge.run(
            db.not_sent(bridge.archive.pool, request.pk, bridge.holder, wait, settings.commit_retry_hours, error)
        )
    except Exception as exc:
        if not bridge.loop.is_closed() and not unreachable(exc):
            log.exception(
                "storage commitment report %s: the failed attempt could not be recorded", request.transaction_uid
            )
        return
    if state == "abandoned":
        log.warning(
            "storage commitment report %s for %s abandoned after %d attempts in %d hours: %s",
            request.transaction_uid,
            request.calling_ae_title,
            request.attempts,
            settings.commit_retry_hours,
            error,
        )
    elif state == "pending":
        log.info(
            "storage commitment report %s for %s not sent (%s); tried again in %.0f s",
            request.transaction_uid,
            request.calling_ae_title,
            error,
            wait,
        )


class CommitmentReports:
    """The task of every process that runs the DIMSE listener: claims the requests due for an attempt and sends
    their reports, and purges the requests older than RETENTION."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.sending: list[threading.Thread] = []
        self.purged_at = -math.inf

    async def run(self) -> None:
        """Look every POLL_SECONDS (or DICOMWEB_COMMIT_RETRY_SECONDS when shorter) until cancelled."""
        interval = min(POLL_SECONDS, self.bridge.archive.settings.commit_retry_seconds)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception as exc:
                if not unreachable(exc):  # an outage is logged once, by the database monitor
                    log.exception("the storage commitment requests could not be looked at")

    async def sweep(self) -> None:
        """Claim what is due (as many as this process has threads free for) and start sending it; purge hourly."""
        archive = self.bridge.archive
        self.sending = [thread for thread in self.sending if thread.is_alive()]
        free = MAX_SENDING - len(self.sending)
        if free > 0:
            lease = archive.settings.commit_lease_seconds
            for request in await db.claim_due(archive.pool, self.bridge.holder, lease, free):
                thread = threading.Thread(
                    target=attempt, args=(self.bridge, request), name="dicomweb-commitment", daemon=True
                )
                thread.start()
                self.sending.append(thread)
        if time.monotonic() - self.purged_at >= PURGE_SECONDS:
            purged = await db.purge(archive.pool, RETENTION)
            self.purged_at = time.monotonic()
            if purged:
                log.info("%d storage commitment requests older than %d days purged", purged, RETENTION.days)
