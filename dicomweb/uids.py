"""The UID grammar of PS3.5 §9.1, checked before a UID comes near a file path or a query."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import BadRequest

# PS3.5 §9.1: at most 64 characters; components of digits separated by "."; a component is "0" or has no
# leading zero. Trailing NUL padding is stripped by the caller (pydicom does so for UI values).
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
UID_MAX_LENGTH = 64


def is_valid_uid(value: str) -> bool:
    return len(value) <= UID_MAX_LENGTH and _UID.fullmatch(value) is not None


def require_uid(value: str, name: str) -> str:
    """Return ``value`` if it is a valid UID, else raise BadRequest naming the parameter (e.g. StudyInstanceUID)."""
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise BadRequest(f"{name} {shown!r} is not a valid UID (PS3.5 §9.1: digits and dots, at most 64 characters)")
    return value


def scope_of(params: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """(StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) of a resource path, each checked; absent ones None."""
    series, sop = params.get("SeriesInstanceUID"), params.get("SOPInstanceUID")
    return (
        require_uid(params["StudyInstanceUID"], "StudyInstanceUID"),
        require_uid(series, "SeriesInstanceUID") if series is not None else None,
        require_uid(sop, "SOPInstanceUID") if sop is not None else None,
    )
