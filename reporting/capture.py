"""Pictures (JPEG, PNG) as DICOM Secondary Capture Image Storage instances (PS3.3 A.8.1), so that DICOMweb viewers
show a photograph or a scanned document uploaded through the reporting API beside the modality's images.

Pure: the picture's bytes and the instance's attributes in, PS3.10 file bytes out, no I/O. Decoding is CPU work:
call ``convert`` from a worker thread. The pixels are stored native (uncompressed) in Explicit VR Little Endian, so
that every viewer reads them: colour as RGB with PlanarConfiguration 0 (interleaved, as decoded), greyscale as
MONOCHROME2 with 8 or 16 bits; an alpha channel is dropped, and the EXIF orientation is applied first (a phone's
photograph shows upright, since DICOM has no orientation flag for it).
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Mapping
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

PictureType = Literal["image/jpeg", "image/png"]
FileType = Literal["application/dicom", "image/jpeg", "image/png"]

SNIFF_BYTES = 132  # enough to see a PS3.10 preamble and its "DICM" prefix
_DICOM_PREFIX_OFFSET = 128  # PS3.10 §7.1: a 128-byte preamble, then "DICM"
_JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI marker and the first byte of the next marker (ISO/IEC 10918-1 B.2)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # PNG specification §5.2
_PIL_FORMATS: Mapping[PictureType, str] = {"image/jpeg": "JPEG", "image/png": "PNG"}

# Rows and Columns are US, at most 65535 (PS3.5 Table 6.2-1). Beyond 50 megapixels (a high-end camera's photograph)
# the decoded pixels would cost too much memory for a picture meant to sit beside a study.
MAX_PICTURE_SIDE = 65535
MAX_PICTURE_PIXELS = 50_000_000

# Type 2 attributes of the SC Image IOD's modules (PS3.3 A.8.1.3): present, empty when unknown.
_TYPE_2 = (
    "PatientName",  # Patient Module C.7.1.1
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",  # General Study Module C.7.2.1
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",  # General Series Module C.7.3.1
    "InstanceNumber",  # General Image Module C.7.6.1
    "PatientOrientation",  # Type 2C there: required, as a picture has no Image Orientation (Patient)
)
REQUIRED = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class PictureError(ValueError):
    """The bytes are not a picture that can be converted (broken, truncated, too large); the message says why."""


def sniff(head: bytes) -> FileType | None:
    """What the first ``SNIFF_BYTES`` of a file say it is, whatever the Content-Type claimed."""
    if head[_DICOM_PREFIX_OFFSET : _DICOM_PREFIX_OFFSET + 4] == b"DICM":
        return "application/dicom"
    if head.startswith(_JPEG_SIGNATURE):
        return "image/jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "image/png"
    return None


def convert(
    data: bytes,
    picture_type: PictureType,
    attributes: Mapping[str, object],
    now: datetime.datetime | None = None,
) -> bytes:
    """A Secondary Capture instance (PS3.10 file bytes) of the picture.

    ``attributes`` are DICOM keywords and values (patient, study, series, SOPInstanceUID, InstanceNumber); a None
    value leaves a Type 2 attribute empty. Dates may be ``datetime.date``. ``now`` is the capture time (for tests).
    Raises PictureError when the picture cannot be decoded.
    """
    missing = [keyword for keyword in REQUIRED if not attributes.get(keyword)]
    if missing:
        raise ValueError(f"attributes lack {', '.join(missing)}")
    image = _decode(data, picture_type)
    pixels, photometric = _pixels(image)
    when = now or datetime.datetime.now(datetime.UTC)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names from the ERP may have any script
    for keyword in _TYPE_2:
        setattr(ds, keyword, None)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    ds.ConversionType = "WSD"  # SC Equipment Module C.8.6.1: Workstation, the picture was made outside a modality
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.ContentDate = ds.DateOfSecondaryCapture = date
    ds.InstanceCreationTime = ds.ContentTime = ds.TimeOfSecondaryCapture = time
    if picture_type == "image/jpeg":
        # C.7.6.1.1.5: once lossy compressed, an image says so for ever, even when stored uncompressed.
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    for keyword, value in attributes.items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{keyword} is not a DICOM keyword")
        setattr(ds, keyword, _dicom_value(value))

    rows, columns = pixels.shape[:2]
    ds.Rows, ds.Columns = rows, columns
    ds.PhotometricInterpretation = photometric
    if photometric == "RGB":
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0  # C.7.6.3.1.3: R1 G1 B1 R2 G2 B2 ..., as the decoder gives them
    else:
        ds.SamplesPerPixel = 1
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    value = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(value) % 2:
        value += b"\0"  # PS3.5 §7.1.1: values have an even length
    ds.add_new("PixelData", "OB" if bits == 8 else "OW", value)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dicom_value(value: object) -> object:
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y%m%d%H%M%S")
    if isinstance(value, datetime.date):
        return value.strftime("%Y%m%d")
    return value


def _decode(data: bytes, picture_type: PictureType) -> Image.Image:
    """The decoded picture, upright (EXIF orientation applied)."""
    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[picture_type]])
        columns, rows = image.size
        if max(columns, rows) > MAX_PICTURE_SIDE or columns * rows > MAX_PICTURE_PIXELS:
            raise PictureError(
                f"the picture has {columns}x{rows} pixels; at most {MAX_PICTURE_PIXELS // 1_000_000} megapixels "
                f"and {MAX_PICTURE_SIDE} pixels a side are accepted"
            )
        image.load()
        upright = ImageOps.exif_transpose(image)
    except PictureError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        kind = picture_type.removeprefix("image/").upper()
        raise PictureError(f"the {kind} picture cannot be decoded: {exc}") from None
    return upright


def _pixels(image: Image.Image) -> tuple[np.ndarray, Literal["RGB", "MONOCHROME2"]]:
    """The pixel array (rows, columns[, 3]) and its PhotometricInterpretation."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16), "MONOCHROME2"
    if mode == "I":  # 32-bit integers, as some decoders give 16-bit greyscale
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise PictureError("the picture's greyscale values do not fit in 16 bits")
        return values.astype(np.uint16), "MONOCHROME2"
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L")), "MONOCHROME2"
    if mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")  # a palette's transparent entry, then dropped like any alpha
    return np.asarray(image.convert("RGB")), "RGB"
