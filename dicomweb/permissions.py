"""Who may do what: permissions, roles, the role → permission table and the route → permission table.

The names and the role table are the product's (issue 5, "Permissions"). Every route in ``routes.py`` has exactly one
entry in ``ROUTE_PERMISSIONS``; ``tests/test_permissions.py`` walks the route table and fails on a route without one.
A leaf module: it knows route paths as strings and imports nothing from the project.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType


class Permission(StrEnum):
    """One thing a caller may be allowed to do."""

    VIEW = "radiology:view"  # search, retrieve, read reports and annotations
    CREATE = "radiology:create"  # create studies and series
    EDIT = "radiology:edit"  # study metadata and status
    UPLOAD = "radiology:upload"  # STOW-RS and uploads
    ANNOTATE = "radiology:annotate"  # image annotations
    REPORT = "radiology:report"  # write reports
    VERIFY = "radiology:verify"  # sign final reports
    MANAGE = "radiology:manage"  # templates, deletion, audit log, settings


class Role(StrEnum):
    """A role a token grants; its value is the name the token's roles claim carries."""

    ADMIN = "ADMIN"
    RADIOLOGIST = "RADIOLOGIST"
    RADIOLOGY_TECH = "RADIOLOGY_TECH"
    DOCTOR = "DOCTOR"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.ADMIN: frozenset(Permission),
        Role.RADIOLOGIST: frozenset({Permission.VIEW, Permission.ANNOTATE, Permission.REPORT, Permission.VERIFY}),
        Role.RADIOLOGY_TECH: frozenset(
            {
                Permission.VIEW,
                Permission.CREATE,
                Permission.EDIT,
                Permission.UPLOAD,
                Permission.ANNOTATE,
                Permission.REPORT,
            }
        ),
        Role.DOCTOR: frozenset({Permission.VIEW}),
    }
)

_STUDIES = "/dicomweb/studies"
_STUDY = _STUDIES + "/{StudyInstanceUID}"
_SERIES = _STUDY + "/series/{SeriesInstanceUID}"
_INSTANCE = _SERIES + "/instances/{SOPInstanceUID}"
_FRAMES = _INSTANCE + "/frames/{frames}"
_API = "/api/radiology"

# (HTTP method, path template as routes.py spells it, mount prefix included) → the permission it needs;
# None marks a public route (no token). HEAD is answered as GET (RFC 9110 §9.3.2) and needs what GET needs.
ROUTE_PERMISSIONS: Mapping[tuple[str, str], Permission | None] = MappingProxyType(
    {
        # Probes for load balancers and orchestrators: no patient data.
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        # Prometheus metrics: counts and timings, no patient data (scrapers do not carry tokens).
        ("GET", "/metrics"): None,
        # The audit trail (security issue): only for managers.
        ("GET", "/api/audit"): Permission.MANAGE,
        # Store (PS3.18 §10.5)
        ("POST", _STUDIES): Permission.UPLOAD,
        ("POST", _STUDY): Permission.UPLOAD,
        # Search (PS3.18 §10.6)
        ("GET", _STUDIES): Permission.VIEW,
        ("GET", _STUDY + "/series"): Permission.VIEW,
        ("GET", "/dicomweb/series"): Permission.VIEW,
        ("GET", _SERIES + "/instances"): Permission.VIEW,
        ("GET", _STUDY + "/instances"): Permission.VIEW,
        ("GET", "/dicomweb/instances"): Permission.VIEW,
        # Retrieve (PS3.18 §10.4)
        ("GET", _STUDY): Permission.VIEW,
        ("GET", _STUDY + "/metadata"): Permission.VIEW,
        ("GET", _SERIES): Permission.VIEW,
        ("GET", _SERIES + "/metadata"): Permission.VIEW,
        ("GET", _INSTANCE): Permission.VIEW,
        ("GET", _INSTANCE + "/metadata"): Permission.VIEW,
        ("GET", _FRAMES): Permission.VIEW,
        ("GET", _INSTANCE + "/bulk/{path:path}"): Permission.VIEW,
        # Rendered and thumbnail resources (PS3.18 §10.4.1.1.3, §10.4.1.1.4)
        ("GET", _STUDY + "/rendered"): Permission.VIEW,
        ("GET", _STUDY + "/thumbnail"): Permission.VIEW,
        ("GET", _SERIES + "/rendered"): Permission.VIEW,
        ("GET", _SERIES + "/thumbnail"): Permission.VIEW,
        ("GET", _INSTANCE + "/rendered"): Permission.VIEW,
        ("GET", _INSTANCE + "/thumbnail"): Permission.VIEW,
        ("GET", _FRAMES + "/rendered"): Permission.VIEW,
        ("GET", _FRAMES + "/thumbnail"): Permission.VIEW,
        # WADO-URI (PS3.18 §9), at the server root and under the DICOMweb root
        ("GET", "/wado"): Permission.VIEW,
        ("GET", "/dicomweb/wado"): Permission.VIEW,
        # Delete
        ("DELETE", _STUDY): Permission.MANAGE,
        ("DELETE", _SERIES): Permission.MANAGE,
        ("DELETE", _INSTANCE): Permission.MANAGE,
        # The reporting API's OpenAPI document and its page: no patient data.
        ("GET", "/api/openapi.json"): None,
        ("GET", "/api-docs"): None,
        # The reporting API (reporting/routes.py): workflow studies and series
        ("POST", _API + "/studies"): Permission.CREATE,
        ("GET", _API + "/studies"): Permission.VIEW,
        ("GET", _API + "/studies/{id}"): Permission.VIEW,
        ("PUT", _API + "/studies/{id}/status"): Permission.EDIT,
        ("DELETE", _API + "/studies/{id}"): Permission.MANAGE,
        ("GET", _API + "/studies/{id}/images"): Permission.VIEW,
        ("POST", _API + "/studies/{studyId}/series"): Permission.CREATE,
        ("GET", _API + "/modalities"): Permission.VIEW,
        # Reports and report templates
        ("POST", _API + "/studies/{studyId}/report"): Permission.REPORT,
        ("GET", _API + "/studies/{studyId}/reports"): Permission.VIEW,
        ("GET", _API + "/reports/{id}"): Permission.VIEW,
        ("PUT", _API + "/reports/{id}"): Permission.REPORT,
        ("POST", _API + "/reports/{id}/verify"): Permission.VERIFY,
        ("POST", _API + "/reports/{id}/addendum"): Permission.REPORT,
        ("GET", _API + "/report-templates"): Permission.VIEW,
        ("POST", _API + "/report-templates"): Permission.MANAGE,
        ("GET", _API + "/report-templates/{id}"): Permission.VIEW,
        ("PUT", _API + "/report-templates/{id}"): Permission.MANAGE,
        ("DELETE", _API + "/report-templates/{id}"): Permission.MANAGE,
        # The reporting API: uploads, image files and annotations
        ("POST", _API + "/series/{seriesId}/images"): Permission.UPLOAD,
        ("POST", _API + "/studies/{studyId}/upload"): Permission.UPLOAD,
        ("GET", _API + "/images/{imageId}/file"): Permission.VIEW,
        ("POST", _API + "/images/{imageId}/annotations"): Permission.ANNOTATE,
        ("GET", _API + "/images/{imageId}/annotations"): Permission.VIEW,
        ("PUT", _API + "/annotations/{id}"): Permission.ANNOTATE,
        ("DELETE", _API + "/annotations/{id}"): Permission.ANNOTATE,
    }
)


def permission_for(method: str, path_template: str) -> Permission | None:
    """The permission a route needs (None: public); raises KeyError for a route the table does not know."""
    method = method.upper()
    if method == "HEAD":
        method = "GET"
    return ROUTE_PERMISSIONS[(method, path_template)]


def allowed(roles: Iterable[Role], permission: Permission) -> bool:
    """Whether any of the roles grants the permission."""
    return any(permission in ROLE_PERMISSIONS[role] for role in roles)
