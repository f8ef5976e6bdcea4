"""DICOM JSON (PS3.18 Annex F) for stored instances, with large binary values replaced by BulkDataURI references.

The metadata of every instance is computed once, at store time, and kept in the database, so that WADO-RS metadata
and QIDO-RS ``includefield`` never open a DICOM file. A binary value (VR OB, OD, OF, OL, OV, OW or UN) longer than
``BULK_DATA_THRESHOLD`` bytes becomes a ``BulkDataURI`` (PS3.18 §F.2.6). The stored URI is *relative to the
DICOMweb base URL* (``studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/bulk/{path}``,
where ``path`` is the element's tag, prefixed by ``{sequence tag}/{item index}/`` for each enclosing sequence); the
retrieve services make it absolute for the client that asks.

Values over the threshold are never loaded into memory here: the dataset is read with ``defer_size`` and a
deferred binary element only contributes its tag and length.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

# PS3.18 §F.2.6 leaves the threshold to the server; 1 KiB keeps LUTs and icons inline-free and metadata small.
BULK_DATA_THRESHOLD = 1024  # bytes

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
UNDEFINED_LENGTH = 0xFFFFFFFF


def dataset_to_json(ds: Dataset, instance_path: str) -> dict[str, Any]:
    """The DICOM JSON object of ``ds``; ``instance_path`` is the instance's URL path relative to the base URL."""
    return _dataset(ds, instance_path + "/bulk/")


def _dataset(ds: Dataset, bulk_prefix: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for tag in ds.keys():
        if tag.element == 0:  # Group Length describes the binary encoding, not the data; dcm4che omits it too
            continue
        key = f"{tag:08X}"
        raw = ds.get_item(tag, keep_deferred=True)
        vr = _vr(tag, raw)
        if vr in BINARY_VRS and _binary_length(raw) > BULK_DATA_THRESHOLD:
            result[key] = {"vr": vr, "BulkDataURI": bulk_prefix + key}
            continue
        element = ds[tag]
        if element.VR == "SQ":
            items = [_dataset(item, f"{bulk_prefix}{key}/{index}/") for index, item in enumerate(element.value)]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        else:
            result[key] = _element(element)
    return result


def _vr(tag: BaseTag, raw: DataElement | RawDataElement | None) -> str:
    """The element's VR without loading its value (implicit VR files have none in the raw element)."""
    if raw is not None and raw.VR:
        return str(raw.VR)
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    # Ambiguous dictionary VRs ("OB or OW", "US or SS or OW"): implicit VR Little Endian encodes them as OW
    # (PS3.5 §A.1 and Annex A.2), and numbers that are not binary are resolved by pydicom on access.
    return "OW" if "OW" in vr else vr.split(" ")[0]


def _binary_length(raw: DataElement | RawDataElement | None) -> int:
    if isinstance(raw, RawDataElement):
        if raw.value is None:  # deferred: only values over the defer size are left unread
            return raw.length if raw.length != UNDEFINED_LENGTH else BULK_DATA_THRESHOLD + 1
        return len(raw.value)
    if raw is None or raw.value is None:
        return 0
    value = raw.value
    return len(value) if isinstance(value, bytes | bytearray) else 0


def _element(element: DataElement) -> dict[str, Any]:
    try:
        return element.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=BULK_DATA_THRESHOLD)
    except (ValueError, TypeError, OverflowError):
        # A value that does not fit its VR (e.g. IS "1.5"): keep the text rather than lose the element.
        value = element.value
        values = list(value) if isinstance(value, list | tuple) else [value]
        return {"vr": element.VR, "Value": [str(v) for v in values if v is not None and str(v) != ""]}
