"""Who may do what: permissions, roles and the role → permission table.

The names and the role table are the product's (issue 5, "Permissions"). Which permission a route needs is said on
the route itself (``routing.Route`` in ``routes.py`` and ``reporting/routes.py``), not in a table of path strings
that could drift from the routes; ``tests/test_permissions.py`` walks the routes and fails on one that does not say.
A leaf module: it imports nothing from the project.
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


def allowed(roles: Iterable[Role], permission: Permission) -> bool:
    """Whether any of the roles grants the permission."""
    return any(permission in ROLE_PERMISSIONS[role] for role in roles)
