"""Permissions: the role table is the issue's, and every route in the route table needs a named permission."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from starlette.routing import BaseRoute, Mount, Route

from dicomweb.app import all_routes
from dicomweb.permissions import ROLE_PERMISSIONS, ROUTE_PERMISSIONS, Permission, Role, allowed, permission_for

ROUTES = all_routes()

V, C, E, U, A, R, S, M = (
    Permission.VIEW,
    Permission.CREATE,
    Permission.EDIT,
    Permission.UPLOAD,
    Permission.ANNOTATE,
    Permission.REPORT,
    Permission.VERIFY,
    Permission.MANAGE,
)

# Issue 5, "Permissions": ADMIN all; RADIOLOGIST view, annotate, report, verify; RADIOLOGY_TECH view, create, edit,
# upload, annotate, report; DOCTOR view.
EXPECTED = {
    Role.ADMIN: {V, C, E, U, A, R, S, M},
    Role.RADIOLOGIST: {V, A, R, S},
    Role.RADIOLOGY_TECH: {V, C, E, U, A, R},
    Role.DOCTOR: {V},
}


_API = "/api/radiology"
# The reporting API's permissions as the security issue names them (view to read, create for studies and series,
# edit for status, upload for images, annotate, report, verify to sign, manage to delete a study or a template).
REPORTING = {
    ("POST", _API + "/studies"): C,
    ("GET", _API + "/studies"): V,
    ("GET", _API + "/studies/{id}"): V,
    ("PUT", _API + "/studies/{id}/status"): E,
    ("DELETE", _API + "/studies/{id}"): M,
    ("GET", _API + "/studies/{id}/images"): V,
    ("POST", _API + "/studies/{studyId}/series"): C,
    ("GET", _API + "/modalities"): V,
    ("POST", _API + "/studies/{studyId}/report"): R,
    ("GET", _API + "/studies/{studyId}/reports"): V,
    ("GET", _API + "/reports/{id}"): V,
    ("PUT", _API + "/reports/{id}"): R,
    ("POST", _API + "/reports/{id}/verify"): S,
    ("POST", _API + "/reports/{id}/addendum"): R,
    ("GET", _API + "/report-templates"): V,
    ("POST", _API + "/report-templates"): M,
    ("GET", _API + "/report-templates/{id}"): V,
    ("PUT", _API + "/report-templates/{id}"): M,
    ("DELETE", _API + "/report-templates/{id}"): M,
    ("POST", _API + "/series/{seriesId}/images"): U,
    ("POST", _API + "/studies/{studyId}/upload"): U,
    ("GET", _API + "/images/{imageId}/file"): V,
    ("POST", _API + "/images/{imageId}/annotations"): A,
    ("GET", _API + "/images/{imageId}/annotations"): V,
    ("PUT", _API + "/annotations/{id}"): A,
    ("DELETE", _API + "/annotations/{id}"): A,
}


def route_pairs(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, full path template) for every route, through mounts; HEAD that Starlette adds to GET is left out."""
    for route in routes:
        if isinstance(route, Mount):
            yield from route_pairs(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            methods = route.methods or set()
            for method in sorted(methods):
                if not (method == "HEAD" and "GET" in methods):
                    yield method, prefix + route.path
        else:  # a new kind of route (WebSocketRoute, Host): teach this walk about it
            raise AssertionError(f"unexpected route {route!r}")


def missing_permissions(routes: Sequence[BaseRoute]) -> set[tuple[str, str]]:
    return set(route_pairs(routes)) - set(ROUTE_PERMISSIONS)


class TestRoutePermissions:
    """ROUTE_PERMISSIONS against dicomweb.routes.ROUTES."""

    def test_every_route_has_a_permission(self) -> None:
        """No route in the application lacks an entry."""
        assert missing_permissions(ROUTES) == set()

    def test_a_new_route_without_permission_is_caught(self) -> None:
        """Adding a route without an entry makes the check above fail."""
        extra = Mount("/dicomweb", routes=[Route("/workitems", lambda request: None, methods=["POST"])])
        assert missing_permissions([*ROUTES, extra]) == {("POST", "/dicomweb/workitems")}

    def test_no_entry_for_a_route_that_does_not_exist(self) -> None:
        """Every entry names a route in the application (no stale entries)."""
        assert set(ROUTE_PERMISSIONS) - set(route_pairs(ROUTES)) == set()

    def test_reporting_permissions(self) -> None:
        """Each reporting route needs the permission the security issue gives its kind of work."""
        assert {k: v for k, v in ROUTE_PERMISSIONS.items() if k[1].startswith(_API)} == REPORTING

    def test_walk_sees_the_mounted_routes(self) -> None:
        """The walk reaches routes under the /dicomweb mount with their full path."""
        pairs = set(route_pairs(ROUTES))
        assert ("GET", "/dicomweb/studies/{StudyInstanceUID}/metadata") in pairs
        assert ("GET", "/healthz") in pairs and ("DELETE", "/dicomweb/studies/{StudyInstanceUID}") in pairs

    @pytest.mark.parametrize(("method", "path"), sorted(k for k in ROUTE_PERMISSIONS if not k[1].startswith(_API)))
    def test_permission_by_kind_of_route(self, method: str, path: str) -> None:
        """Probes are public, STOW needs upload, DELETE and the audit trail need manage, every other route view."""
        if path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api-docs"):
            expected = None
        elif path == "/api/audit":
            expected = Permission.MANAGE
        elif method == "POST":
            expected = Permission.UPLOAD
        elif method == "DELETE":
            expected = Permission.MANAGE
        else:
            assert method == "GET"
            expected = Permission.VIEW
        assert permission_for(method, path) == expected

    def test_head_needs_what_get_needs(self) -> None:
        """HEAD, which Starlette answers for every GET route, maps to the GET entry."""
        for method, path in ROUTE_PERMISSIONS:
            if method == "GET":
                assert permission_for("HEAD", path) == permission_for("GET", path)

    def test_method_is_case_insensitive(self) -> None:
        """A lowercase method finds the same entry."""
        assert permission_for("delete", "/dicomweb/studies/{StudyInstanceUID}") == Permission.MANAGE

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/dicomweb/workitems"),
            ("PUT", "/dicomweb/studies/{StudyInstanceUID}"),
            ("DELETE", "/dicomweb/studies"),
            ("GET", "/dicomweb/studies/1.2.3"),  # a concrete path, not a template
            ("POST", "/healthz"),
        ],
    )
    def test_unknown_route_raises(self, method: str, path: str) -> None:
        """A route the table does not know raises KeyError (never silently public)."""
        with pytest.raises(KeyError):
            permission_for(method, path)


class TestRoles:
    """ROLE_PERMISSIONS and allowed()."""

    def test_names(self) -> None:
        """Permission and role names are the product's."""
        assert [p.value for p in Permission] == [
            "radiology:view",
            "radiology:create",
            "radiology:edit",
            "radiology:upload",
            "radiology:annotate",
            "radiology:report",
            "radiology:verify",
            "radiology:manage",
        ]
        assert [r.value for r in Role] == ["ADMIN", "RADIOLOGIST", "RADIOLOGY_TECH", "DOCTOR"]

    def test_table_is_the_issues(self) -> None:
        """Each role has exactly the permissions the issue lists."""
        assert {role: set(permissions) for role, permissions in ROLE_PERMISSIONS.items()} == EXPECTED

    @pytest.mark.parametrize("role", list(Role))
    @pytest.mark.parametrize("permission", list(Permission))
    def test_every_role_and_permission(self, role: Role, permission: Permission) -> None:
        """allowed() answers each role × permission as the issue's table does."""
        assert allowed([role], permission) is (permission in EXPECTED[role])

    def test_any_role_suffices(self) -> None:
        """A caller with several roles has the union of their permissions."""
        assert allowed([Role.DOCTOR, Role.RADIOLOGIST], Permission.VERIFY)
        assert not allowed([Role.DOCTOR, Role.RADIOLOGIST], Permission.UPLOAD)

    def test_no_role_allows_nothing(self) -> None:
        """A caller with no role is allowed nothing."""
        assert not any(allowed([], permission) for permission in Permission)
