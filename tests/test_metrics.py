"""/metrics: Prometheus text with requests per route and status, latency, what is stored, pool use."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import LiveServer, store
from .data import ct_instance, multipart, stow_headers


def samples(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


class TestMetrics:
    def test_requests_stored_and_pool(self, server_factory: object) -> None:
        """Counts by route template (not by path), a latency histogram, stored instances and bytes, the pool."""
        server: LiveServer = server_factory()  # type: ignore[operator]
        instance = ct_instance()
        store(server, [instance])
        for _ in range(3):
            httpx.get(server.dicomweb + "/studies", params={"PatientID": "nobody"})
        httpx.get(server.url + "/no/such/path")
        junk = httpx.post(server.dicomweb + "/studies", content=multipart([b"not DICOM"]), headers=stow_headers())
        reason = f"{junk.json()['00081198']['Value'][0]['00081197']['Value'][0]:#06x}"
        values = samples(server)
        route = "/dicomweb/studies"
        assert values[("dicomweb_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 3
        assert values[("dicomweb_http_requests_total", (("method", "POST"), ("route", route), ("status", "200")))] == 1
        unmatched = (("method", "GET"), ("route", "(unmatched)"), ("status", "404"))
        assert values[("dicomweb_http_requests_total", unmatched)] == 1
        timed = (("method", "GET"), ("route", route), ("status", "200"))
        count = values[("dicomweb_http_request_duration_seconds_count", timed)]
        assert count == 3
        assert values[("dicomweb_stow_failures_total", (("reason", reason),))] == 1
        assert values[("dicomweb_stored_instances", ())] == 1
        assert values[("dicomweb_stored_bytes", ())] == len(instance)
        assert values[("dicomweb_stored_studies", ())] == 1
        assert values[("dicomweb_db_pool_connections", (("state", "max"),))] == server.settings.db_pool_size
