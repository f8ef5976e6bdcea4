"""C-GET and C-MOVE SCP (PS3.4 C.4.2, C.4.3): which stored instances an identifier names, found by the same
retrieve service as WADO-RS. What is sent for each is ``outgoing.py``'s choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from ..db.retrieve import StoredFile
from ..services.retrieve import NotStored, stored_files

if TYPE_CHECKING:
    from .server import Bridge

LEVELS = ("STUDY", "SERIES", "IMAGE")


@dataclass(frozen=True)
class Scope:
    """What one C-GET or C-MOVE asks for: a study, a series of it, or instances of it."""

    study: str
    series: str | None
    sops: tuple[str, ...]


def scope_of(identifier: Dataset) -> Scope | str:
    """The instances an identifier names (PS3.4 C.4.3.1.3: the unique keys down to its level), or why it names none."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        return f"QueryRetrieveLevel {level!r} is not STUDY, SERIES or IMAGE"
    study = str(identifier.get("StudyInstanceUID", "") or "").strip()
    if not study:
        return "StudyInstanceUID is required"
    series = str(identifier.get("SeriesInstanceUID", "") or "").strip() or None
    if level in ("SERIES", "IMAGE") and series is None:
        return f"SeriesInstanceUID is required at {level} level"
    sops: tuple[str, ...] = ()
    if level == "IMAGE":
        value = identifier.get("SOPInstanceUID", "")
        sops = tuple(str(v).strip() for v in (value if isinstance(value, list | tuple) else [value]) if str(v).strip())
        if not sops:
            return "SOPInstanceUID is required at IMAGE level"
    return Scope(study, series if level != "STUDY" else None, sops)


def files_of(bridge: Bridge, scope: Scope) -> list[StoredFile]:
    """The stored files in scope, in series and instance order (none when nothing is stored)."""
    try:
        files = bridge.run(stored_files(bridge.archive, scope.study, scope.series, None))
    except NotStored:
        return []
    return [f for f in files if not scope.sops or f.sop_instance_uid in scope.sops]
