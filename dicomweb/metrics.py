"""Prometheus metrics at /metrics: requests and their latency per route and status, what the archive holds, STOW
failures by reason, database pool use, the missing files the last reconciliation found, the storage commitment
requests by state.

With several worker processes (``dicomweb serve --workers N``) each writes its values to files in the folder
named by ``PROMETHEUS_MULTIPROC_DIR`` (set by the command before the workers start), and a scrape of any worker
adds them up (prometheus_client's multiprocess mode), so one scrape sees the whole server.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from typing import get_args

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .db.commitment import State as CommitmentState
from .db.commitment import counts as commitment_counts
from .db.outage import unreachable
from .reconcile import Summary, read_summary
from .routing import route_of
from .state import archive_of

UNMATCHED = "(unmatched)"  # the route label of requests no route matches (404s), to keep the label set small
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)  # seconds


class Metrics:
    """The server's metrics, in a registry of their own (one per application, so that applications started side by
    side, as tests do, count apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dicomweb_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dicomweb_http_request_duration_seconds",
            "Time from the request's arrival to the last byte of its answer, by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stow_failures = Counter(
            "dicomweb_stow_failures",
            "Instances a STOW-RS request could not store, by FailureReason (PS3.18 §10.5.3)",
            ["reason"],
            registry=self.registry,
        )
        self.dimse_associations = Counter(
            "dicomweb_dimse_associations",
            "DICOM associations requested of the DIMSE listener, by calling AE title and outcome (accepted, rejected)",
            ["calling_ae_title", "outcome"],
            registry=self.registry,
        )
        self.dimse_operations = Counter(
            "dicomweb_dimse_operations",
            "DIMSE operations answered, by service (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE) and final status",
            ["service", "status"],
            registry=self.registry,
        )
        self.pool_connections = Gauge(
            "dicomweb_db_pool_connections",
            "Database connections of the pools: open, in use, and the most allowed",
            ["state"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )


def metrics_of(request: Request) -> Metrics:
    found: Metrics = request.app.state.metrics
    return found


class MetricsMiddleware:
    """Counts and times every request under its route template (``/dicomweb/studies/{StudyInstanceUID}``)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], metrics: Metrics) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started
        # Matched before the app runs: routing rewrites the scope's root_path under mounts.
        matched = route_of(self.routes, scope)
        route = matched.template if matched else UNMATCHED

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route, str(status)).observe(time.perf_counter() - started)
            state = scope.get("state") or {}
            archive = state.get("archive")
            if archive is not None:
                pool = archive.pool
                gauge = self.metrics.pool_connections
                gauge.labels("open").set(pool.get_size())
                gauge.labels("in_use").set(pool.get_size() - pool.get_idle_size())
                gauge.labels("max").set(pool.get_max_size())


class _Stored(Collector):
    """What the archive holds, read from the database at scrape time."""

    def __init__(self, instances: int, size: int, studies: int) -> None:
        self.values = instances, size, studies

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instances, size, studies = self.values
        yield GaugeMetricFamily("dicomweb_stored_instances", "Instances in the archive", value=instances)
        yield GaugeMetricFamily("dicomweb_stored_bytes", "Bytes of the stored instance files", value=size)
        yield GaugeMetricFamily("dicomweb_stored_studies", "Studies in the archive", value=studies)


class _Commitments(Collector):
    """The storage commitment requests the database keeps, by state, read at scrape time (any process may send a
    report, so no process's own count would do)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dicomweb_storage_commitments",
            "Storage commitment requests kept, by state: pending (report not sent yet), reported, abandoned (not "
            "sent within DICOMWEB_COMMIT_RETRY_HOURS)",
            labels=["state"],
        )
        for state in get_args(CommitmentState):
            family.add_metric([state], self.counts.get(state, 0))
        yield family


async def metrics(request: Request) -> Response:
    """GET /metrics in the Prometheus text format; while the database is gone, without what the archive holds (the
    503s of the outage are worth seeing)."""
    row = None
    commitments: dict[str, int] | None = None
    try:
        async with archive_of(request).pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM instance), (SELECT coalesce(sum(file_size), 0) FROM instance), "
                "(SELECT count(*) FROM study)"
            )
            commitments = await commitment_counts(conn)
    except Exception as exc:
        if not unreachable(exc):
            raise
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Of(metrics_of(request).registry))
    if row is not None:
        registry.register(_Stored(int(row[0]), int(row[1]), int(row[2])))
    if commitments is not None:
        registry.register(_Commitments(commitments))
    summary = await asyncio.to_thread(read_summary, archive_of(request).storage.root)
    if summary is not None:
        registry.register(_Reconciled(summary))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Reconciled(Collector):
    """The last reconciliation of the files with the index (at the start, or ``dicomweb check``)."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "dicomweb_missing_files",
            "Indexed instances whose file is missing, as the last reconciliation (start or dicomweb check) found",
            value=self.summary.missing_files,
        )
        yield GaugeMetricFamily(
            "dicomweb_reconciled_timestamp_seconds",
            "When the last reconciliation of the files with the index ended (seconds since the epoch)",
            value=self.summary.finished_at,
        )


class _Of(Collector):
    """The metrics of another registry, collected into the scrape's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
