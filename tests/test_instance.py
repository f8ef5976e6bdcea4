"""read_instance: which received files are stored, and the FailureReason of those that are not (PS3.18 §10.5.3)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicomweb.attributes import Level
from dicomweb.instance import InvalidInstance, read_instance
from dicomweb.status import FailureReason

from .data import (
    CT,
    DEFLATED,
    MULTIFRAME_US,
    RLE,
    RT_DOSE,
    SR,
    TEST_FILES,
    WAVEFORM,
    ct_instance,
    readable_test_files,
)
from .data import JPEG2000 as JPEG2000_FILE
from .data import testdata as named_file
from .test_frame_index import edited, value_tell
from .test_frames import image

MR_TRUNCATED = named_file("MR_truncated.dcm")  # pydicom's own example of a file cut inside PixelData
# pydicom's test files that have the four UIDs and are still refused, and why: each is really broken.
REFUSED_TEST_FILES = {
    "MR_truncated.dcm": "the file is cut short",  # cut inside Pixel Data
    "rtplan_truncated.dcm": "the file is cut short",
    "badVR.dcm": "Number of Frames '1A' is not a number",  # its frames cannot be located; pydicom cannot read them
}
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def write(tmp_path: Path, content: bytes, name: str = "part.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def save(tmp_path: Path, ds: Dataset) -> Path:
    path = tmp_path / "changed.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def failure(path: Path, expected_study_instance_uid: str | None = None) -> InvalidInstance:
    with pytest.raises(InvalidInstance) as caught:
        read_instance(path, expected_study_instance_uid)
    return caught.value


class TestStored:
    """Real files of every kind the archive must accept."""

    @pytest.mark.parametrize(
        ("path", "transfer_syntax_uid"),
        [
            (CT, ExplicitVRLittleEndian),
            (JPEG2000_FILE, JPEG2000),
            (RLE, RLELossless),
            (DEFLATED, DeflatedExplicitVRLittleEndian),
            (MULTIFRAME_US, JPEGBaseline8Bit),
            (SR, ExplicitVRLittleEndian),
            (RT_DOSE, ImplicitVRLittleEndian),
            (WAVEFORM, ExplicitVRLittleEndian),
        ],
        ids=lambda value: value.name if isinstance(value, Path) else None,
    )
    def test_real_files(self, path: Path, transfer_syntax_uid: str) -> None:
        """The UIDs and transfer syntax are the file's own, and the instance path is built from them."""
        ds = pydicom.dcmread(path)
        instance = read_instance(path)
        assert instance.study_instance_uid == ds.StudyInstanceUID
        assert instance.series_instance_uid == ds.SeriesInstanceUID
        assert instance.sop_instance_uid == ds.SOPInstanceUID
        assert instance.sop_class_uid == ds.SOPClassUID
        assert instance.transfer_syntax_uid == transfer_syntax_uid
        assert instance.path == (
            f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )

    def test_expected_study_matches(self) -> None:
        """Storing through /studies/{StudyInstanceUID} of the instance's own study succeeds."""
        ds = pydicom.dcmread(CT)
        assert read_instance(CT, ds.StudyInstanceUID).study_instance_uid == ds.StudyInstanceUID

    def test_metadata_is_dicom_json_text(self) -> None:
        """metadata is JSON text orjson parses, keyed by tag, with PixelData as a BulkDataURI under the instance."""
        instance = read_instance(CT)
        assert isinstance(instance.metadata, str)
        metadata = orjson.loads(instance.metadata)
        assert metadata["00080018"] == {"vr": "UI", "Value": [instance.sop_instance_uid]}
        assert metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{instance.path}/bulk/7FE00010"}

    def test_columns(self) -> None:
        """The indexed column values come with the instance."""
        instance = read_instance(CT)
        assert instance.columns[Level.PATIENT]["patient_id"] == "1CT1"
        assert instance.columns[Level.SERIES]["modality"] == "CT"

    def test_synthetic_instance(self, tmp_path: Path) -> None:
        """The instances tests build (tests.data.ct_instance) are valid too."""
        content = ct_instance(patient_name="Müller^Jürgen")
        instance = read_instance(write(tmp_path, content))
        assert instance.columns[Level.PATIENT]["patient_name_folded"] == "muller^jurgen"

    def test_file_is_not_modified(self, tmp_path: Path) -> None:
        """Reading never changes the received bytes (they are stored as they came)."""
        path = write(tmp_path, CT.read_bytes())
        read_instance(path)
        assert path.read_bytes() == CT.read_bytes()

    @pytest.mark.parametrize("path", readable_test_files(), ids=lambda p: str(p.relative_to(TEST_FILES)))
    def test_every_file_with_its_uids_is_stored(self, path: Path) -> None:
        """Every pydicom test file with the four UIDs is stored, but for the broken ones named in REFUSED_TEST_FILES:
        the store-time checks refuse no valid file."""
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if not all(str(ds.get(keyword, "")).strip() for keyword in REQUIRED_UIDS):
            return
        if path.name in REFUSED_TEST_FILES:
            assert failure(path).detail.startswith(REFUSED_TEST_FILES[path.name])
        else:
            assert read_instance(path).sop_instance_uid == ds.SOPInstanceUID

    @pytest.mark.parametrize("path", readable_test_files(), ids=lambda p: str(p.relative_to(TEST_FILES)))
    def test_every_readable_file_is_stored_or_refused(self, path: Path) -> None:
        """Whatever pydicom reads, read_instance stores or refuses with a FailureReason; nothing else escapes."""
        try:
            read_instance(path)
        except InvalidInstance as exc:
            assert exc.reason in (FailureReason.CANNOT_UNDERSTAND, FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS)
            assert exc.detail


class TestCannotUnderstand:
    """Files that are not complete DICOM PS3.10 data: FailureReason C000."""

    def test_cut_in_half(self, tmp_path: Path) -> None:
        """CT_small cut in the middle of PixelData: pydicom reads it silently, read_instance refuses it."""
        content = CT.read_bytes()
        error = failure(write(tmp_path, content[: len(content) // 2]))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert "cut short" in error.detail
        # The UIDs were readable, so the failure can still name the instance in FailedSOPSequence.
        assert error.sop_instance_uid == pydicom.dcmread(CT).SOPInstanceUID

    def test_cut_inside_encapsulated_pixel_data(self, tmp_path: Path) -> None:
        """JPEG2000 cut at 95%, inside its undefined-length encapsulated PixelData."""
        content = JPEG2000_FILE.read_bytes()
        error = failure(write(tmp_path, content[: len(content) * 95 // 100]))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND

    def test_cut_inside_deflated_data(self, tmp_path: Path) -> None:
        """A deflated file cut short: the deflate stream is incomplete."""
        content = DEFLATED.read_bytes()
        assert failure(write(tmp_path, content[: len(content) * 9 // 10])).reason == FailureReason.CANNOT_UNDERSTAND

    def test_cut_one_byte_short(self, tmp_path: Path) -> None:
        """Even the last byte missing is noticed."""
        content = CT.read_bytes()
        assert failure(write(tmp_path, content[:-1])).reason == FailureReason.CANNOT_UNDERSTAND

    def test_cut_inside_an_element_header(self, tmp_path: Path) -> None:
        """CT_small cut 4 bytes into PixelData's header: pydicom stops silently, the file must still be refused."""
        content = CT.read_bytes()
        header = content.index(struct.pack("<HH2s", 0x7FE0, 0x0010, b"OW"))
        assert failure(write(tmp_path, content[: header + 4])).reason == FailureReason.CANNOT_UNDERSTAND

    @pytest.mark.parametrize("cut", [1, 2, 3, 4])
    def test_cut_inside_the_sequence_delimiter(self, tmp_path: Path, cut: int) -> None:
        """JPEG2000 missing bytes of its final Sequence Delimitation Item: pydicom reads it, read_instance refuses."""
        content = JPEG2000_FILE.read_bytes()
        error = failure(write(tmp_path, content[:-cut]))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert "cut short" in error.detail

    def test_bytes_after_the_last_element(self, tmp_path: Path) -> None:
        """Bytes that are not an element after the data set are refused too (padding is (FFFC,FFFC))."""
        content = CT.read_bytes()
        assert failure(write(tmp_path, content + b"\0\0")).reason == FailureReason.CANNOT_UNDERSTAND

    @pytest.mark.parametrize("path", readable_test_files(), ids=lambda p: str(p.relative_to(TEST_FILES)))
    def test_only_truncated_real_files_are_cut_short(self, path: Path) -> None:
        """No complete file pydicom reads is called cut short; only its two truncated examples are."""
        try:
            read_instance(path)
        except InvalidInstance as exc:
            assert ("cut short" in exc.detail) == (path.name in ("MR_truncated.dcm", "rtplan_truncated.dcm"))

    def test_pydicom_truncated_example(self) -> None:
        """pydicom's MR_truncated.dcm is refused."""
        assert failure(MR_TRUNCATED).reason == FailureReason.CANNOT_UNDERSTAND

    @pytest.mark.parametrize(
        "content",
        [b"", b"hello, this is not DICOM\n" * 100, b"\0" * 128 + b"DICX" + b"\0" * 100, b"%PDF-1.4\n" + bytes(2000)],
        ids=["empty", "text", "bad-prefix", "pdf"],
    )
    def test_not_dicom(self, tmp_path: Path, content: bytes) -> None:
        """Anything that is not a PS3.10 file, without UIDs to name it by."""
        error = failure(write(tmp_path, content))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert error.sop_instance_uid is None

    def test_file_meta_only(self, tmp_path: Path) -> None:
        """A preamble and File Meta Information with no data set after them."""
        content = CT.read_bytes()
        ds = pydicom.dcmread(CT)
        end_of_meta = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
        error = failure(write(tmp_path, content[:end_of_meta]))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert "empty" in error.detail


class TestDataSetDoesNotMatch:
    """Complete files whose identifying attributes are missing or wrong: FailureReason A900."""

    @pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
    def test_missing_uid(self, tmp_path: Path, keyword: str) -> None:
        """Each required UID missing is refused, and the detail names it."""
        ds = pydicom.dcmread(CT)
        delattr(ds, keyword)
        error = failure(save(tmp_path, ds))
        assert error.reason == FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        assert keyword in error.detail

    def test_empty_uid(self, tmp_path: Path) -> None:
        """An empty StudyInstanceUID is as good as none."""
        ds = pydicom.dcmread(CT)
        ds.StudyInstanceUID = ""
        error = failure(save(tmp_path, ds))
        assert error.reason == FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        assert "StudyInstanceUID" in error.detail

    @pytest.mark.parametrize("value", ["../../etc", "1.2.abc", "1.02.3", "1." + "2" * 70])
    def test_invalid_study_uid(self, tmp_path: Path, value: str) -> None:
        """A StudyInstanceUID outside the UID grammar never reaches a storage path."""
        ds = pydicom.dcmread(CT)
        with pydicom.config.disable_value_validation():
            ds.StudyInstanceUID = value
            path = save(tmp_path, ds)
        error = failure(path)
        assert error.reason == FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        assert "StudyInstanceUID" in error.detail
        assert error.sop_instance_uid == ds.SOPInstanceUID

    def test_invalid_sop_instance_uid(self, tmp_path: Path) -> None:
        """A path-like SOPInstanceUID is refused as well."""
        ds = pydicom.dcmread(CT)
        with pydicom.config.disable_value_validation():
            ds.SOPInstanceUID = "../../../tmp/x"
            path = save(tmp_path, ds)
        error = failure(path)
        assert error.reason == FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        assert "SOPInstanceUID" in error.detail

    def test_other_study_than_the_request_url(self) -> None:
        """Stored through /studies/{other}: refused, and the detail names both StudyInstanceUIDs."""
        other = "1.2.826.0.1.3680043.8.498.1"
        error = failure(CT, other)
        assert error.reason == FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        assert pydicom.dcmread(CT).StudyInstanceUID in error.detail
        assert other in error.detail
        assert error.sop_instance_uid == pydicom.dcmread(CT).SOPInstanceUID
        assert error.sop_class_uid == pydicom.dcmread(CT).SOPClassUID

    def test_odd_integer_string_does_not_reject_the_instance(self, tmp_path: Path) -> None:
        """An IS of "1e99" in one element is a bad value, not an unreadable file: the instance is still stored."""
        content = CT.read_bytes()
        header = struct.pack("<HH2s", 0x0020, 0x0011, b"IS")
        position = content.index(header + struct.pack("<H", 2))
        changed = content[:position] + header + struct.pack("<H", 4) + b"1e99" + content[position + 10 :]
        path = write(tmp_path, changed)
        assert pydicom.dcmread(path).SeriesNumber > 2**63  # pydicom reads the value, however odd
        assert read_instance(path).columns[Level.SERIES]["series_number"] is None


def command_element(content: bytes, tag: tuple[int, int] = (0x0000, 0x0902), value: bytes = b"bad!") -> bytes:
    """``content`` (an explicit VR little endian file) with an element of a reserved group at the start of its data
    set, implicit VR as pydicom reads group 0000 (as a DIMSE command set is always encoded)."""
    start = (
        132
        + 12
        + pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True).file_meta.FileMetaInformationGroupLength
    )
    return content[:start] + struct.pack("<HHL", *tag, len(value)) + value + content[start:]


class TestReservedGroups:
    """Group 0000 (DIMSE command) and 0002 (File Meta Information) elements are not allowed in a data set (PS3.5 §7.1):
    refused, never dropped, so the stored bytes stay the received ones."""

    def test_error_comment(self, tmp_path: Path) -> None:
        """Error Comment (0000,0902) in CT_small's data set: refused with 0xC000, the tag named, the file unchanged."""
        content = command_element(CT.read_bytes())
        path = write(tmp_path, content)
        error = failure(path)
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert error.detail == (
            "the data set holds (0000,0902): group 0000 (DIMSE command) elements are not allowed in a data set "
            "(PS3.5 7.1)"
        )
        assert error.sop_instance_uid == pydicom.dcmread(CT).SOPInstanceUID
        assert path.read_bytes() == content

    def test_several_command_elements(self, tmp_path: Path) -> None:
        """Every reserved tag is named, up to five."""
        content = CT.read_bytes()
        for element in (0x0902, 0x0900, 0x0800, 0x0120, 0x0110, 0x0100):
            content = command_element(content, (0x0000, element), b"\0\0")
        detail = failure(write(tmp_path, content)).detail
        assert detail.startswith("the data set holds (0000,0100), (0000,0110), (0000,0120), (0000,0800), (0000,0900)")
        assert "and 1 more" in detail

    def test_file_meta_element_in_the_data_set(self, tmp_path: Path) -> None:
        """A (0002,0100) element after the data set's last element, outside the File Meta Information."""
        content = CT.read_bytes() + struct.pack("<HH2sH", 0x0002, 0x0100, b"UI", 6) + b"1.2.3\0"
        detail = failure(write(tmp_path, content)).detail
        assert detail.startswith("the data set holds (0002,0100): group 0002 (File Meta Information) elements")

    def test_group_length_elements_are_fine(self) -> None:
        """Group Length (gggg,0000) elements of other groups are retired but allowed (PS3.5 §7.2): stored."""
        path = named_file("693_J2KI.dcm")
        assert Tag(0x0008, 0x0000) in pydicom.dcmread(path, stop_before_pixels=True)
        assert read_instance(path)


class TestPixelModule:
    """Pixel data without the Image Pixel module attributes needed to read it (PS3.3 §C.7.6.3): 0xC000."""

    @pytest.mark.parametrize(
        "keyword", ["Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation"]
    )
    def test_missing(self, tmp_path: Path, keyword: str) -> None:
        """Each attribute deleted from CT_small is named in the detail."""
        ds = pydicom.dcmread(CT)
        delattr(ds, keyword)
        error = failure(save(tmp_path, ds))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert error.detail == f"PixelData is present but {keyword} is missing (PS3.3 C.7.6.3)"
        assert error.sop_instance_uid == ds.SOPInstanceUID

    @pytest.mark.parametrize(
        ("keyword", "value", "detail"),
        [
            ("Rows", 0, "Rows is 0; it must be a number of at least 1"),
            ("BitsAllocated", 12, "BitsAllocated is 12; it must be 1 or a multiple of 8 (PS3.5 8.1.1)"),
            ("BitsStored", 17, "BitsStored is 17; it must be from 1 to BitsAllocated (16) (PS3.5 8.1.1)"),
            ("PhotometricInterpretation", "", "PixelData is present but PhotometricInterpretation is missing"),
        ],
    )
    def test_wrong(self, tmp_path: Path, keyword: str, value: object, detail: str) -> None:
        """Values in CT_small no reader can locate or decode frames with."""
        ds = pydicom.dcmread(CT)
        setattr(ds, keyword, value)
        assert failure(save(tmp_path, ds)).detail.startswith(detail)

    @pytest.mark.parametrize("keyword", ["PixelRepresentation", "PlanarConfiguration", "BitsStored", "HighBit"])
    def test_not_required(self, tmp_path: Path, keyword: str) -> None:
        """What only changes how pixels are shown is left to the reader: the instance is stored."""
        ds = pydicom.dcmread(CT)
        if keyword in ds:
            delattr(ds, keyword)
        assert read_instance(save(tmp_path, ds))

    @pytest.mark.parametrize(("keyword", "bits"), [("FloatPixelData", 32), ("DoubleFloatPixelData", 64)])
    def test_float_pixel_data(self, tmp_path: Path, keyword: str, bits: int) -> None:
        """Float Pixel Data needs Bits Allocated 32, Double Float Pixel Data 64 (PS3.3 §C.7.6.24), and no Bits
        Stored; anything else is refused."""
        ds = image(ExplicitVRLittleEndian, None, BitsAllocated=bits)
        for name in ("BitsStored", "HighBit", "PixelRepresentation"):
            delattr(ds, name)
        setattr(ds, keyword, bytes(16 * 16 * bits // 8))
        path = tmp_path / "float.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert read_instance(path).sop_instance_uid == ds.SOPInstanceUID
        ds.BitsAllocated = 16
        ds.save_as(path, enforce_file_format=True)
        assert failure(path).detail == f"{keyword} needs BitsAllocated {bits}, not 16 (PS3.3 C.7.6.24)"

    def test_no_pixel_data_needs_none(self) -> None:
        """A structured report has no pixel data and none of these attributes."""
        assert read_instance(SR)


class TestBrokenPixelData:
    """Pixel data that cannot hold its frames, found from item headers and offset tables alone (frame_index.py)."""

    def test_fragment_header_garbled(self, tmp_path: Path) -> None:
        """The first fragment's item tag of JPEG2000.dcm overwritten: 0xC000, the instance named."""
        position = value_tell(JPEG2000_FILE) + 8  # its Basic Offset Table is empty
        error = failure(edited(tmp_path, JPEG2000_FILE, position, b"JUNK"))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert error.detail.startswith("the fragments of the encapsulated pixel data do not parse")
        assert error.sop_instance_uid == pydicom.dcmread(JPEG2000_FILE).SOPInstanceUID

    def test_basic_offset_beyond_the_value(self, tmp_path: Path) -> None:
        """The last Basic Offset Table entry of the 30-frame JPEG points past the pixel data."""
        position = value_tell(MULTIFRAME_US) + 8 + 29 * 4
        error = failure(edited(tmp_path, MULTIFRAME_US, position, struct.pack("<L", 0xFFFFFF)))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert "where no fragment starts" in error.detail

    def test_native_pixel_data_too_short(self, tmp_path: Path) -> None:
        """Fewer bytes than Rows x Columns x Bits Allocated (pydicom cannot read those pixels)."""
        error = failure(write(tmp_path, ct_instance(PixelData=bytes(100))))
        assert error.reason == FailureReason.CANNOT_UNDERSTAND
        assert error.detail.startswith("the pixel data is 100 bytes long")

    def test_number_of_frames_not_a_number(self) -> None:
        """pydicom's badVR.dcm: Number of Frames '1A' locates no frame."""
        error = failure(named_file("badVR.dcm"))
        assert (error.reason, error.detail) == (
            FailureReason.CANNOT_UNDERSTAND,
            "Number of Frames '1A' is not a number",
        )

    def test_file_is_not_modified(self, tmp_path: Path) -> None:
        """A refused file is left as it came (the caller removes it)."""
        path = edited(tmp_path, JPEG2000_FILE, value_tell(JPEG2000_FILE) + 8, b"JUNK")
        content = path.read_bytes()
        failure(path)
        assert path.read_bytes() == content
