"""Permissions and audit actions: the role table is the issue's, and every route in the route table says which
permission it needs and which action its audit event records."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from starlette.routing import BaseRoute, Mount
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from dicomweb.actions import DIMSE_ACTIONS, Action
from dicomweb.app import all_routes
from dicomweb.auth import AuthMiddleware
from dicomweb.permissions import ROLE_PERMISSIONS, Permission, Role, allowed
from dicomweb.routing import Route, leaves, match_route, undecided

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

# The routes that need no token (no patient data), and are not audited.
PUBLIC = {
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/openapi.json",
    "/api/openapi-3.0.json",
    "/api-docs",
    "/api-docs/plain",
    "/api-docs/assets/{name}",
}

_API = "/api/radiology"
# The reporting API's permissions as the security issue names them (view to read, create for studies and series,
# edit for status, upload for images, annotate, report, verify to sign, manage to delete a study or a template),
# and the actions their audit events have recorded since the audit trail began (read, create, update, store, delete).
REPORTING = {
    ("POST", _API + "/studies"): (C, Action.CREATE),
    ("GET", _API + "/studies"): (V, Action.READ),
    ("GET", _API + "/studies/{id}"): (V, Action.READ),
    ("GET", _API + "/performed-procedure-steps"): (V, Action.READ),
    ("GET", _API + "/storage-commitments"): (M, Action.READ),
    ("PUT", _API + "/studies/{id}/status"): (E, Action.UPDATE),
    ("DELETE", _API + "/studies/{id}"): (M, Action.DELETE),
    ("GET", _API + "/studies/{id}/images"): (V, Action.READ),
    ("POST", _API + "/studies/{studyId}/series"): (C, Action.CREATE),
    ("GET", _API + "/modalities"): (V, Action.READ),
    ("POST", _API + "/studies/{studyId}/report"): (R, Action.CREATE),
    ("GET", _API + "/studies/{studyId}/reports"): (V, Action.READ),
    ("GET", _API + "/reports/{id}"): (V, Action.READ),
    ("PUT", _API + "/reports/{id}"): (R, Action.UPDATE),
    ("POST", _API + "/reports/{id}/verify"): (S, Action.CREATE),
    ("POST", _API + "/reports/{id}/addendum"): (R, Action.CREATE),
    ("GET", _API + "/report-templates"): (V, Action.READ),
    ("POST", _API + "/report-templates"): (M, Action.CREATE),
    ("GET", _API + "/report-templates/{id}"): (V, Action.READ),
    ("PUT", _API + "/report-templates/{id}"): (M, Action.UPDATE),
    ("DELETE", _API + "/report-templates/{id}"): (M, Action.DELETE),
    ("POST", _API + "/series/{seriesId}/images"): (U, Action.STORE),
    ("POST", _API + "/studies/{studyId}/upload"): (U, Action.STORE),
    ("GET", _API + "/images/{imageId}/file"): (V, Action.READ),
    ("POST", _API + "/images/{imageId}/annotations"): (A, Action.CREATE),
    ("POST", _API + "/studies/{id}/annotations/sr"): (A, Action.CREATE),
    ("GET", _API + "/images/{imageId}/annotations"): (V, Action.READ),
    ("PUT", _API + "/annotations/{id}"): (A, Action.UPDATE),
    ("DELETE", _API + "/annotations/{id}"): (A, Action.DELETE),
}


_NODES = "/api/dicom-nodes"
# The DICOM nodes (issue 14): managing them is managers' work; reading and changing them are audited as the reporting
# API's reads and changes, a C-ECHO as echo, and sending a study to a node as a retrieval of its data.
NODES = {
    ("GET", _NODES): (M, Action.READ),
    ("GET", _NODES + "/{aet}"): (M, Action.READ),
    ("PUT", _NODES + "/{aet}"): (M, Action.UPDATE),
    ("DELETE", _NODES + "/{aet}"): (M, Action.DELETE),
    ("POST", _NODES + "/{aet}/echo"): (M, Action.ECHO),
    ("POST", _NODES + "/{aet}/store"): (M, Action.RETRIEVE),
}


def route_table(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], tuple[Permission | None, Action | None]]:
    """(method, full path template) → (permission, action) for every route, through mounts."""
    table = {}
    for template, route in leaves(routes):
        assert isinstance(route, Route), template
        assert (route.method, template) not in table, (route.method, template)
        table[route.method, template] = (route.permission, route.action)
    return table


TABLE = route_table(ROUTES)


class TestRouteDecisions:
    """Every route of the application says which permission it needs and which action it is audited as."""

    def test_every_route_decides(self) -> None:
        """Every route is a dicomweb.routing.Route; only the listed ones are public, and those are not audited."""
        assert undecided(ROUTES) == []
        assert {template for (_, template), (permission, _) in TABLE.items() if permission is None} == PUBLIC
        for (method, template), (permission, action) in TABLE.items():
            assert (action is None) == (permission is None), (method, template)  # a route with data is audited

    def test_a_route_without_decisions_is_caught(self) -> None:
        """A plain Starlette route, in a mount or not, is reported, and the server refuses to serve it."""
        extra = Mount("/dicomweb", routes=[StarletteRoute("/workitems", _endpoint, methods=["POST"])])
        bare = StarletteRoute("/other", _endpoint, methods=["GET"])
        assert undecided([*ROUTES, extra, bare]) == ["/dicomweb/workitems (Route)", "/other (Route)"]
        with pytest.raises(TypeError, match="/dicomweb/workitems"):
            AuthMiddleware(_app, None, [*ROUTES, extra])

    def test_no_default_decision(self) -> None:
        """A Route must be given its permission and its action (None is a decision, not a default)."""
        with pytest.raises(TypeError, match="permission"):
            Route("/x", _endpoint, methods=["GET"], action=None)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="action"):
            Route("/x", _endpoint, methods=["GET"], permission=None)  # type: ignore[call-arg]

    @pytest.mark.parametrize("methods", [["GET", "DELETE"], ["GET", "POST", "HEAD"], ["HEAD"], []])
    def test_one_method_per_route(self, methods: list[str]) -> None:
        """One permission never covers two methods (HEAD aside): a route with none or two is refused."""
        with pytest.raises(ValueError, match="one method"):
            Route("/x", _endpoint, methods=methods, permission=V, action=Action.READ)

    def test_method_is_case_insensitive(self) -> None:
        """A lowercase method is that method; HEAD comes with GET."""
        route = Route("/x", _endpoint, methods=["get", "GET"], permission=V, action=Action.READ)
        assert route.method == "GET" and route.methods == {"GET", "HEAD"}

    def test_reporting_routes(self) -> None:
        """Each reporting route needs the permission the security issue gives its kind of work, and keeps its
        action."""
        assert {k: v for k, v in TABLE.items() if k[1].startswith(_API)} == REPORTING

    def test_dicom_node_routes(self) -> None:
        """Each DICOM node route needs radiology:manage, with the action its kind of work has."""
        assert {k: v for k, v in TABLE.items() if k[1].startswith(_NODES)} == NODES

    def test_walk_sees_the_mounted_routes(self) -> None:
        """The walk reaches routes under the /dicomweb mount with their full path."""
        assert ("GET", "/dicomweb/studies/{StudyInstanceUID}/metadata") in TABLE
        assert ("GET", "/healthz") in TABLE and ("DELETE", "/dicomweb/studies/{StudyInstanceUID}") in TABLE

    @pytest.mark.parametrize(("method", "path"), sorted(k for k in TABLE if not k[1].startswith((_API, _NODES))))
    def test_decisions_by_kind_of_route(self, method: str, path: str) -> None:
        """Probes are public and not audited; STOW needs upload (store), DELETE manage (delete), the audit trail
        manage (audit), QIDO-RS view (search), every other route view (retrieve)."""
        expected: tuple[Permission | None, Action | None]
        if path in PUBLIC:
            expected = (None, None)
        elif path == "/api/audit":
            expected = (Permission.MANAGE, Action.AUDIT)
        elif method == "POST":
            expected = (Permission.UPLOAD, Action.STORE)
        elif method == "DELETE":
            expected = (Permission.MANAGE, Action.DELETE)
        else:
            assert method == "GET"
            search = path.endswith(("/studies", "/series", "/instances"))
            expected = (Permission.VIEW, Action.SEARCH if search else Action.RETRIEVE)
        assert TABLE[method, path] == expected

    @pytest.mark.parametrize(("method", "path"), sorted(k for k in TABLE if k[0] == "GET"))
    def test_head_needs_what_get_needs(self, method: str, path: str) -> None:
        """HEAD, which Starlette answers for every GET route, reaches the GET route: its permission and action."""
        concrete = path.replace("{path:path}", "7FE00010").replace("{", "").replace("}", "")
        found = {
            verb: match_route(ROUTES, {"type": "http", "path": concrete, "method": verb, "root_path": ""})
            for verb in ("GET", "HEAD")
        }
        get, head = found["GET"], found["HEAD"]
        assert get is not None and isinstance(get.route, Route) and get.template == path
        assert head is not None and head.route is get.route


class TestActions:
    """The closed vocabulary of audit actions, shared by HTTP and DIMSE."""

    def test_stored_values(self) -> None:
        """The values the audit trail has stored from the start keep their spelling; echo is new (C-ECHO)."""
        assert [a.value for a in Action] == [
            "search",
            "retrieve",
            "store",
            "delete",
            "audit",
            "read",
            "create",
            "update",
            "echo",
        ]

    def test_dimse_operations(self) -> None:
        """Each DIMSE operation is audited as the HTTP transaction doing the same work."""
        assert dict(DIMSE_ACTIONS) == {
            "C-ECHO": Action.ECHO,
            "C-STORE": Action.STORE,
            "C-FIND": Action.SEARCH,
            "MWL C-FIND": Action.SEARCH,
            "C-GET": Action.RETRIEVE,
            "C-MOVE": Action.RETRIEVE,
            "MPPS N-CREATE": Action.CREATE,
            "MPPS N-SET": Action.UPDATE,
            "COMMIT N-ACTION": Action.READ,
        }

    def test_every_action_is_used(self) -> None:
        """Each action names what some route or DIMSE operation does (no dead words in the vocabulary)."""
        used = {action for _, action in TABLE.values() if action is not None} | set(DIMSE_ACTIONS.values())
        assert used == set(Action)


async def _endpoint(request: object) -> None:
    raise AssertionError("not called")


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not called")


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
