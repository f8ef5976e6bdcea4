"""dicomweb/openapi.py: the document covers every endpoint of both JSON APIs (reporting, DICOM nodes), its references
resolve, it is valid OpenAPI (3.1, and 3.0 in the form Swagger UI reads), the plain page shows it."""

from __future__ import annotations

from typing import Any

import httpx
from openapi_spec_validator import validate

from dicomweb.app import all_routes
from dicomweb.routes import DICOM_NODES
from dicomweb.routing import Route, leaves
from reporting.routes import REPORTING

from .conftest import Api

ENDPOINTS = [(table.root, endpoint) for table in (REPORTING, DICOM_NODES) for endpoint in table.endpoints]


def references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(references(v) for v in node))
    return set()


class TestDocument:
    """GET /api/openapi.json, its 3.0 form and /api-docs/plain, without a token (they hold no patient data)."""

    def test_every_endpoint_with_its_permission(self, api: Api) -> None:
        """Each operation names the permission and the audit action of the route that serves it."""
        doc = httpx.get(api.server.url + "/api/openapi.json").json()
        assert doc["openapi"].startswith("3.1")
        operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        assert operations == {(e.method, root + e.path) for root, e in ENDPOINTS}
        served = {(r.method, t): r for t, r in leaves(all_routes()) if isinstance(r, Route)}
        for root, endpoint in ENDPOINTS:
            path = root + endpoint.path
            operation = doc["paths"][path][endpoint.method.lower()]
            route = served[endpoint.method, path]
            assert route.permission is not None and route.action is not None
            assert operation["x-permission"] == route.permission.value
            assert operation["x-audit-action"] == route.action.value
            assert route.permission.value in operation["responses"]["403"]["description"]
            assert str(endpoint.status) in operation["responses"]

    def test_references_resolve(self, api: Api) -> None:
        doc = httpx.get(api.server.url + "/api/openapi.json").json()
        schemas = doc["components"]["schemas"]
        for ref in references(doc["paths"]) | references(schemas):
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref

    def test_models_in_camel_case(self, api: Api) -> None:
        """Field names on the wire are the API's (camelCase), with DICOM's UID spelling."""
        schemas = httpx.get(api.server.url + "/api/openapi.json").json()["components"]["schemas"]
        assert {"patientId", "accessionNumber", "studyInstanceUID", "scheduledAt"} <= set(
            schemas["StudyCreate"]["properties"]
        )
        assert "patientId" in schemas["StudyCreate"]["required"]

    def test_query_defaults(self, api: Api) -> None:
        """A query parameter's default is documented: templates are listed active unless isActive=false."""
        doc = httpx.get(api.server.url + "/api/openapi.json").json()
        parameters = doc["paths"]["/api/radiology/report-templates"]["get"]["parameters"]
        [is_active] = [p for p in parameters if p["name"] == "isActive"]
        assert is_active["in"] == "query" and is_active["schema"]["type"] == "boolean"
        assert is_active["schema"]["default"] is True

    def test_valid(self, api: Api) -> None:
        """The document is valid OpenAPI 3.1, and its form for Swagger UI valid 3.0 with the same operations."""
        doc = httpx.get(api.server.url + "/api/openapi.json").json()
        validate(doc)
        doc_30 = httpx.get(api.server.url + "/api/openapi-3.0.json").json()
        assert doc_30["openapi"] == "3.0.3"
        validate(doc_30)
        assert {p: set(ops) for p, ops in doc_30["paths"].items()} == {p: set(ops) for p, ops in doc["paths"].items()}
        assert doc_30["components"]["securitySchemes"] == {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        for path, operations in doc_30["paths"].items():
            for method, operation in operations.items():
                assert operation["security"] == [{"bearer": []}], (method, path)

    def test_page(self, api: Api) -> None:
        """The plain page (no script) for readers without JavaScript."""
        response = httpx.get(api.server.url + "/api-docs/plain")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        for root, endpoint in ENDPOINTS:
            assert f"<code>{root + endpoint.path}</code>" in response.text
        assert 'id="schema-StudyCreate"' in response.text and "<script" not in response.text
        assert "Needs <code>radiology:verify</code>; audited as <code>create</code>" in response.text
