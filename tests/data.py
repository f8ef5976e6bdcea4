"""Real DICOM files from pydicom's test data, named for what they are, and helpers that make request bodies."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def testdata(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


CT = testdata("CT_small.dcm")  # CT, explicit VR little endian
MR = testdata("MR_small.dcm")
MR_BIG_ENDIAN = testdata("MR_small_bigendian.dcm")  # same SOP Instance UID as MR, other bytes
MR_IMPLICIT = testdata("MR_small_implicit.dcm")
JPEG2000 = testdata("JPEG2000.dcm")
JPEG_BASELINE = testdata("SC_rgb_jpeg_dcmtk.dcm")
JPEG_LS = testdata("JPEGLSNearLossless_08.dcm")
RLE = testdata("MR_small_RLE.dcm")
DEFLATED = testdata("image_dfl.dcm")
MULTIFRAME_US = testdata("examples_ybr_color.dcm")  # 30 frames, JPEG baseline
SR = testdata("test-SR.dcm")
RT_DOSE = testdata("rtdose.dcm")
WAVEFORM = testdata("waveform_ecg.dcm")
CHARSET_FILES = TEST_FILES.parent / "charset_files"


def readable_test_files() -> list[Path]:
    """Every file under pydicom's test_files that pydicom itself reads (without force)."""
    files = []
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        try:
            pydicom.dcmread(path)
        except Exception:
            continue
        files.append(path)
    return files


def ct_instance(
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^Jane",
    size: int = 64,
    sop_instance_uid: str | None = None,
    **attributes: object,
) -> bytes:
    """A synthetic CT Image Storage instance (PS3.10 file bytes) with fresh UIDs unless given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    sop_instance_uid = UID(sop_instance_uid) if sop_instance_uid else generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20240315"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC" + uuid.uuid4().hex[:8]
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (bytes(range(256)) * (size * size * 2 // 256 + 1))[: size * size * 2]
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(
    parts: Iterable[bytes], boundary: str = "dicomweb-test-boundary", content_type: str | None = None
) -> bytes:
    """A multipart/related body whose parts are DICOM files (each with Content-Type application/dicom)."""
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {content_type or 'application/dicom'}\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def stow_headers(boundary: str = "dicomweb-test-boundary") -> dict[str, str]:
    return {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }


def ct_series_stream(count: int, boundary: str, size: int = 512) -> tuple[int, Iterable[bytes]]:
    """A multipart body of ``count`` CT instances of one new series, generated part by part (never whole in
    memory); returns (Content-Length, chunks). Each part is a template with its SOP Instance UID swapped."""
    study, series = generate_uid(), generate_uid()
    prefix = generate_uid()[:40] + "."  # unique per call; every UID below has the same length as the placeholder
    placeholder = prefix + "9" * 12
    template = ct_instance(study, series, size=size, sop_instance_uid=placeholder)
    uids = [(prefix + f"1{i:011d}").encode() for i in range(count)]
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"--{boundary}--\r\n".encode()
    length = count * (len(head) + len(template) + 2) + len(tail)

    def chunks() -> Iterable[bytes]:
        for uid in uids:
            yield head + template.replace(placeholder.encode(), uid) + b"\r\n"
        yield tail

    return length, chunks()
