"""Read and validate one received PS3.10 instance, and extract what the archive indexes of it.

Runs in a worker thread (pydicom parsing is CPU work). Raises ``InvalidInstance`` with the FailureReason that the
STOW-RS response reports; it never modifies the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from .attributes import Level, extract
from .dicomjson import BULK_DATA_THRESHOLD, UNDEFINED_LENGTH, dataset_to_json
from .frame_index import frame_index
from .status import FailureReason
from .uids import is_valid_uid

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class InvalidInstance(Exception):
    """A received part cannot be stored; ``reason`` is the FailureReason (0008,1197) to report for it."""

    def __init__(
        self,
        reason: FailureReason,
        detail: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


@dataclass(frozen=True)
class Instance:
    """One validated instance: its identifying UIDs, indexed column values and DICOM JSON metadata."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    columns: dict[Level, dict[str, Any]]
    metadata: str  # DICOM JSON text (PS3.18 Annex F), as stored in the database
    frame_index: str | None = None  # JSON: the byte ranges of each frame in the file (frame_index.py)

    @property
    def path(self) -> str:
        return instance_path(self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid)


def instance_path(study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    """An instance's URL path relative to the DICOMweb base URL (PS3.18 §10.4.1)."""
    return f"studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"


def read_instance(path: Path, expected_study_instance_uid: str | None = None) -> Instance:
    """Parse the file at ``path``; check it is complete, has valid UIDs and belongs to the expected study."""
    size = path.stat().st_size
    try:
        ds = dcmread(path, defer_size=BULK_DATA_THRESHOLD)
    except InvalidDicomError as exc:
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, f"not a DICOM PS3.10 file: {exc}") from None
    except Exception as exc:
        raise InvalidInstance(FailureReason.CANNOT_UNDERSTAND, f"unreadable DICOM data: {exc}") from None
    truncation = _truncation(ds, path, size)  # before any access converts the raw elements
    sop_class_uid = _uid(ds, "SOPClassUID")
    sop_instance_uid = _uid(ds, "SOPInstanceUID")

    def fail(reason: FailureReason, detail: str) -> InvalidInstance:
        return InvalidInstance(reason, detail, sop_class_uid, sop_instance_uid)

    if truncation:
        raise fail(FailureReason.CANNOT_UNDERSTAND, truncation)
    with path.open("rb") as file:  # before anything reads the deferred pixel data
        index = frame_index(file, ds)
    uids: dict[str, str] = {}
    for keyword in REQUIRED_UIDS:
        value = _uid(ds, keyword)
        if value is None:
            raise fail(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is missing or empty")
        if not is_valid_uid(value):
            raise fail(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} {value[:80]!r} is not a valid UID")
        uids[keyword] = value
    if expected_study_instance_uid is not None and uids["StudyInstanceUID"] != expected_study_instance_uid:
        # PS3.18 §10.5.1: instances stored through /studies/{StudyInstanceUID} must belong to that study.
        raise fail(
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            f"StudyInstanceUID {uids['StudyInstanceUID']} differs from {expected_study_instance_uid} "
            "named in the request URL",
        )
    transfer_syntax_uid = str(ds.file_meta.get("TransferSyntaxUID", "") or "").strip()
    if not is_valid_uid(transfer_syntax_uid):
        raise fail(FailureReason.CANNOT_UNDERSTAND, "File Meta Information has no valid TransferSyntaxUID")
    url_path = instance_path(uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"])
    try:
        columns = extract(ds)
        metadata = orjson.dumps(dataset_to_json(ds, url_path)).decode()
    except Exception as exc:
        raise fail(FailureReason.CANNOT_UNDERSTAND, f"cannot decode the data set: {exc}") from None
    return Instance(
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=transfer_syntax_uid,
        columns=columns,
        metadata=metadata,
        frame_index=orjson.dumps(index).decode() if index is not None else None,
    )


def _uid(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    text = str(value).strip().rstrip("\0") if value is not None else ""
    return text or None


def _truncation(ds: Dataset, path: Path, size: int) -> str | None:
    """Why the file is cut short, if it is: pydicom reads a truncated value silently, so check each one fits.

    pydicom also stops without a word when fewer than 8 bytes (a partial element header) are left, so the last
    top-level element must end where the file does: in PS3.10 §7 the data set runs to the end of the file, and
    padding is an element of its own, Data Set Trailing Padding (FFFC,FFFC). None of pydicom's complete test files
    has bytes after its last element.
    """
    if len(ds) == 0:
        # pydicom drops the whole data set when the file ends inside an undefined-length value.
        return "the data set is empty or cut short"
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return None  # offsets are in the inflated stream; a cut deflate stream fails to inflate instead
    last_tell = -1
    last_end: int | None = None  # where the last element ends; None when its length is undefined
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            tell = raw.value_tell
            end = None if raw.length == UNDEFINED_LENGTH else tell + raw.length
            if end is not None and end > size:
                return (
                    f"the file is cut short: element ({tag.group:04X},{tag.element:04X}) needs {end} bytes, "
                    f"the file has {size}"
                )
        elif raw is not None:
            # Converted while reading: an undefined-length sequence, or Specific Character Set (never last).
            tell, end = raw.file_tell or 0, None
        else:
            continue
        if tell > last_tell:
            last_tell, last_end = tell, end
    if last_end is None:
        # An undefined-length value ends with a Sequence Delimitation Item (PS3.5 §7.5.2, §A.4); pydicom accepts
        # one whose 4-byte length is cut off, and cannot say where the value ends, so look at the file's tail.
        little_endian = ds.original_encoding[1] is not False
        delimiter = struct.pack("<HHL" if little_endian else ">HHL", 0xFFFE, 0xE0DD, 0)
        with path.open("rb") as file:
            file.seek(max(size - len(delimiter), 0))
            if file.read(len(delimiter)) != delimiter:
                return "the file is cut short: it does not end with the Sequence Delimitation Item of its last element"
    elif last_end < size:
        return f"the file is cut short: {size - last_end} bytes after the last element are not a whole element"
    return None
