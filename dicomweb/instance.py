"""Read and validate one received PS3.10 instance, and extract what the archive indexes of it.

Runs in a worker thread (pydicom parsing is CPU work). Raises ``InvalidInstance`` with the FailureReason that the
STOW-RS response reports; it never modifies the file.

Besides its UIDs, what is cheap to check and would make the instance unreadable later is refused here with 0xC000
(Cannot understand), never decoding a frame (that would halve ingest):

* a file cut short (``_truncation``);
* elements of group 0000 (DIMSE command) or 0002 (File Meta Information) in the data set, which PS3.5 §7.1 reserves
  for commands and the file format: they are refused, not dropped, so that the stored bytes stay the received bytes
  (pydicom's ``dcmwrite`` refuses to write such a data set, so it could never be transcoded);
* pixel data without the Image Pixel module attributes needed to read it (``_pixel_module_problem``);
* pixel data that cannot hold the frames its attributes describe (``frame_index.frame_index``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from .attributes import Level, extract_from_json
from .dicomjson import BULK_DATA_THRESHOLD, UNDEFINED_LENGTH, dataset_to_json
from .frame_index import frame_index
from .frames import PIXEL_DATA_TAGS, BrokenPixelData
from .status import FailureReason
from .storage import IN_MEMORY_BYTES
from .uids import is_valid_uid

if TYPE_CHECKING:
    from .services.on_store import OnStore

log = logging.getLogger("dicomweb")

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
RESERVED_GROUPS = {0x0000: "DIMSE command", 0x0002: "File Meta Information"}  # not in a data set (PS3.5 §7.1)
MAX_TAGS_NAMED = 5  # reserved-group tags named in a refusal
# The Image Pixel module attributes a reader needs to cut frames out of Pixel Data and decode them (PS3.3 §C.7.6.3);
# the Floating Point Image Pixel module needs the same (PS3.3 §C.7.6.24).
PIXEL_MODULE_NUMBERS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
FLOAT_BITS_ALLOCATED = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}  # PS3.3 §C.7.6.24


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

    def __reduce__(self) -> tuple[Any, ...]:  # across processes (``dicomweb import`` parses in a process pool)
        return (InvalidInstance, (self.reason, self.detail, self.sop_class_uid, self.sop_instance_uid))


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
    found: object | None = None  # what the archive's OnStore hook read of it, if anything (services/on_store.py)

    @property
    def path(self) -> str:
        return instance_path(self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid)


def instance_path(study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    """An instance's URL path relative to the DICOMweb base URL (PS3.18 §10.4.1)."""
    return f"studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"


def read_instance(
    path: Path,
    expected_study_instance_uid: str | None = None,
    data: bytes | None = None,
    on_store: OnStore | None = None,
) -> Instance:
    """Parse the file at ``path`` (whose bytes are ``data``, when the caller has them); check it is complete, has
    valid UIDs and belongs to the expected study; let ``on_store`` read what it wants of it, last."""
    size = path.stat().st_size if data is None else len(data)
    # A file that is not large is parsed from memory: pydicom asks a file for its position at every element, and each
    # of those calls lets go of the interpreter lock and waits to take it back, which with other threads busy cost
    # more than the parse (hundreds of futex calls per instance).
    if data is None and size <= IN_MEMORY_BYTES:
        data = path.read_bytes()
    source: BinaryIO | Path = io.BytesIO(data) if data is not None else path
    try:
        ds = dcmread(source, defer_size=BULK_DATA_THRESHOLD)
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
    problem = _reserved_elements(ds) or _pixel_module_problem(ds)
    if problem:
        raise fail(FailureReason.CANNOT_UNDERSTAND, problem)
    try:
        with path.open("rb") if isinstance(source, Path) else contextlib.nullcontext(source) as file:
            index = frame_index(file, ds)  # before anything reads the deferred pixel data
    except BrokenPixelData as exc:
        raise fail(FailureReason.CANNOT_UNDERSTAND, str(exc)) from None
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
        # The JSON first, from the elements' bytes as they are; the indexed values are read from it.
        dicom_json = dataset_to_json(ds, url_path, data if data is not None else path)
        columns = extract_from_json(dicom_json, ds)
        metadata = orjson.dumps(dicom_json).decode()
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
        found=_read_for_hook(on_store, ds, uids) if on_store is not None else None,
    )


def _read_for_hook(on_store: OnStore, ds: Dataset, uids: dict[str, str]) -> object | None:
    """What the hook reads of the data set; a hook that fails costs its own work, never the instance."""
    try:
        return on_store.read(ds, uids["SOPClassUID"])
    except Exception:
        log.exception("reading %s for %s failed", uids["SOPInstanceUID"], type(on_store).__name__)
        return None


def _uid(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    text = str(value).strip().rstrip("\0") if value is not None else ""
    return text or None


def _reserved_elements(ds: Dataset) -> str | None:
    """Why the data set holds elements of a group reserved for commands or the File Meta Information, if it does.

    Only the top level is looked at: that is where pydicom's ``dcmwrite`` refuses them."""
    tags = [tag for tag in ds.keys() if tag.group in RESERVED_GROUPS]
    if not tags:
        return None
    named = ", ".join(f"({tag.group:04X},{tag.element:04X})" for tag in tags[:MAX_TAGS_NAMED])
    more = f" and {len(tags) - MAX_TAGS_NAMED} more" if len(tags) > MAX_TAGS_NAMED else ""
    groups = " and ".join(f"{group:04X} ({RESERVED_GROUPS[group]})" for group in sorted({tag.group for tag in tags}))
    return f"the data set holds {named}{more}: group {groups} elements are not allowed in a data set (PS3.5 7.1)"


def _pixel_module_problem(ds: Dataset) -> str | None:
    """What of the Image Pixel module (PS3.3 §C.7.6.3, §C.7.6.24) is missing or wrong for the pixel data to be
    read, if anything; None also when there is no pixel data. Only what locating and decoding frames needs is
    required: attributes that only change how pixels are shown (Pixel Representation, Planar Configuration) are
    left to the reader."""
    keyword = next((name for tag, name in PIXEL_DATA_TAGS.items() if tag in ds), None)
    if keyword is None:
        return None
    values: dict[str, Any] = {}
    for name in (*PIXEL_MODULE_NUMBERS, "BitsStored", "PhotometricInterpretation"):
        try:
            values[name] = ds.get(name)
        except Exception as exc:
            return f"{name} cannot be read: {exc}"
    for name in PIXEL_MODULE_NUMBERS:
        value = values[name]
        if value is None or value == "":
            return f"{keyword} is present but {name} is missing (PS3.3 C.7.6.3)"
        if not isinstance(value, int) or value < 1:
            return f"{name} is {value!r}; it must be a number of at least 1"
    photometric = values["PhotometricInterpretation"]
    if not isinstance(photometric, str) or not photometric.strip():
        return f"{keyword} is present but PhotometricInterpretation is missing (PS3.3 C.7.6.3)"
    bits_allocated = values["BitsAllocated"]
    if keyword in FLOAT_BITS_ALLOCATED:
        if bits_allocated != FLOAT_BITS_ALLOCATED[keyword]:
            return (
                f"{keyword} needs BitsAllocated {FLOAT_BITS_ALLOCATED[keyword]}, not {bits_allocated} (PS3.3 C.7.6.24)"
            )
        return None
    if bits_allocated != 1 and bits_allocated % 8:
        return f"BitsAllocated is {bits_allocated}; it must be 1 or a multiple of 8 (PS3.5 8.1.1)"
    bits_stored = values["BitsStored"]
    if bits_stored not in (None, "") and (not isinstance(bits_stored, int) or not 1 <= bits_stored <= bits_allocated):
        return f"BitsStored is {bits_stored!r}; it must be from 1 to BitsAllocated ({bits_allocated}) (PS3.5 8.1.1)"
    return None


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
