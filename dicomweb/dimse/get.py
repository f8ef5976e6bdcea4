"""C-GET SCP (PS3.4 C.4.3): the instances an identifier names, sent back as C-STORE sub-operations on the same
association, found by the same retrieve service as WADO-RS.

Each instance goes in its stored transfer syntax when the requester accepted it for its SOP class, else converted
losslessly to Explicit VR Little Endian by the same code as WADO-RS (``transcode.py``) when that was accepted; an
instance that can be sent in neither way is a failed sub-operation (pynetdicom counts it), never a stop.
Blocking work (reading, converting): it runs in the association's thread.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ..db.retrieve import StoredFile
from ..services.retrieve import NotStored, stored_files
from ..transcode import CannotTranscode, transcode

if TYPE_CHECKING:
    from .server import Bridge

LEVELS = ("STUDY", "SERIES", "IMAGE")


@dataclass(frozen=True)
class Scope:
    """What one C-GET asks for: a study, a series of it, or instances of it."""

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


def datasets(bridge: Bridge, files: list[StoredFile], accepted: dict[str, set[str]]) -> Iterator[Dataset]:
    """Each file as the data set to send: converted to Explicit VR Little Endian when only that was accepted for its
    SOP class, else as stored (which pynetdicom counts as a failed sub-operation when no context fits it)."""
    storage = bridge.archive.storage
    for file in files:
        syntaxes = accepted.get(file.sop_class_uid, set())
        path = storage.absolute(file.file_path)
        converted = None
        if file.transfer_syntax_uid not in syntaxes and ExplicitVRLittleEndian in syntaxes:
            try:
                converted = transcode(path, ExplicitVRLittleEndian)
            except CannotTranscode:
                pass  # sent as stored: a failed sub-operation
        yield dcmread(io.BytesIO(converted) if converted is not None else path)
