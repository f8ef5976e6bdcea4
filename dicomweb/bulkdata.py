"""Find the value a BulkDataURI names inside a stored file (dicomjson.py makes those URIs), without reading the
rest of the file: a top-level value is located by its offset, a value inside a sequence read with its item."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from .dicomjson import BULK_DATA_THRESHOLD
from .transcode import decoding

_PATH = re.compile(r"[0-9A-F]{8}(/\d{1,6}/[0-9A-F]{8})*")


class BulkDataNotFound(LookupError):
    """The path names no element of the instance, or one without a value."""


@dataclass(frozen=True)
class BulkValue:
    """Where a value is: either ``offset``/``length`` in the stored file, or ``data`` in memory."""

    offset: int | None
    length: int
    data: bytes | None
    undefined_length: bool = False  # encapsulated pixel data: served frame by frame, not as raw bytes


def valid_path(path: str) -> bool:
    return _PATH.fullmatch(path) is not None


def locate(file: Path, path: str) -> BulkValue:
    """Locate the value at ``path`` ("7FE00010", or "00540016/0/00181078" through sequence items); CannotDecode when
    the stored data set cannot be parsed as far as that value."""
    if not valid_path(path):
        raise BulkDataNotFound(f"{path!r} is not a bulk data path")
    with decoding("the stored data set", passing=(BulkDataNotFound,)):
        return _locate(file, path)


def _locate(file: Path, path: str) -> BulkValue:
    steps = path.split("/")
    ds: Dataset = dcmread(file, defer_size=BULK_DATA_THRESHOLD)
    # Offsets into a deflated file are offsets into the inflated stream: read such values from memory.
    by_offset = ds.file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian
    for sequence_tag, index in zip(steps[0:-1:2], steps[1:-1:2], strict=True):
        tag = Tag(int(sequence_tag, 16))
        if tag not in ds or ds[tag].VR != "SQ" or int(index) >= len(ds[tag].value):
            raise BulkDataNotFound(f"no item {index} of sequence ({sequence_tag[:4]},{sequence_tag[4:]})")
        ds = ds[tag].value[int(index)]
    tag = Tag(int(steps[-1], 16))
    if tag not in ds:
        raise BulkDataNotFound(f"no element ({steps[-1][:4]},{steps[-1][4:]}) at {path}")
    raw = ds.get_item(tag, keep_deferred=True)
    if by_offset and isinstance(raw, RawDataElement) and raw.value is None and raw.length != 0xFFFFFFFF:
        return BulkValue(offset=raw.value_tell, length=raw.length, data=None)
    element = ds[tag]
    if element.is_undefined_length:
        return BulkValue(offset=None, length=0, data=None, undefined_length=True)
    value = element.value
    if not isinstance(value, bytes):
        raise BulkDataNotFound(f"element at {path} has no binary value")
    return BulkValue(offset=None, length=len(value), data=value)
