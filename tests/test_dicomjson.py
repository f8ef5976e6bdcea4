"""DICOM JSON (PS3.18 Annex F) of real files: BulkDataURIs for large binary values, and a round trip through pydicom."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from dicomweb.dicomjson import BULK_DATA_THRESHOLD, dataset_to_json

from .data import CHARSET_FILES, CT, MR, MR_BIG_ENDIAN, MR_IMPLICIT, RT_DOSE, SR, WAVEFORM
from .data import testdata as named_file

INSTANCE_PATH = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
GROUP_LENGTHS = named_file("ExplVR_BigEnd.dcm")  # has Group Length elements in its data set


def _readable(path: Path) -> bool:
    try:
        pydicom.dcmread(path, defer_size=BULK_DATA_THRESHOLD)
    except Exception:
        return False  # the archive refuses such a file before any JSON is made
    return True


READABLE_TEST_FILES = [path for path in sorted(CT.parent.rglob("*.dcm")) if _readable(path)]


def to_json(path: Path) -> dict[str, Any]:
    """As the archive converts at store time: values over the threshold are deferred, never read."""
    return dataset_to_json(pydicom.dcmread(path, defer_size=BULK_DATA_THRESHOLD), INSTANCE_PATH)


def no_bulk_data(tag: str, vr: str, value: str) -> bytes:
    return b""


def read_elements(*elements: tuple[int, str, bytes]) -> Dataset:
    """A data set read from explicit VR little endian bytes, as a file holding exactly these values would be."""
    encoded = b"".join(
        struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value for tag, vr, value in elements
    )
    return read_dataset(io.BytesIO(encoded), is_implicit_VR=False, is_little_endian=True)


class TestBulkData:
    """Large binary values become BulkDataURIs relative to the instance; small ones stay inline."""

    def test_pixel_data_is_a_bulk_data_uri(self) -> None:
        """CT_small's 32 KiB PixelData is a BulkDataURI with its VR, and no inline value."""
        assert to_json(CT)["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{INSTANCE_PATH}/bulk/7FE00010"}

    def test_large_private_binary_is_a_bulk_data_uri(self) -> None:
        """The threshold applies to any binary VR, private tags included (CT_small's (0043,1029) OB)."""
        assert to_json(CT)["00431029"] == {"vr": "OB", "BulkDataURI": f"{INSTANCE_PATH}/bulk/00431029"}

    def test_small_binary_is_inline(self) -> None:
        """A binary value under the threshold is InlineBinary with exactly the file's bytes."""
        element = to_json(CT)["00431028"]
        assert element["vr"] == "OB"
        assert "BulkDataURI" not in element
        assert base64.b64decode(element["InlineBinary"]) == pydicom.dcmread(CT)[0x00431028].value

    def test_bulk_data_in_a_sequence_has_a_nested_path(self) -> None:
        """WaveformData inside WaveformSequence items: {sequence tag}/{item index}/{tag}, one per item."""
        items = to_json(WAVEFORM)["54000100"]["Value"]
        assert len(items) == 2
        for index, item in enumerate(items):
            assert item["54001010"] == {"vr": "OW", "BulkDataURI": f"{INSTANCE_PATH}/bulk/54000100/{index}/54001010"}

    def test_no_binary_value_over_the_threshold_is_inline(self) -> None:
        """Nowhere in the JSON, sequences included, is there an InlineBinary longer than the threshold."""

        def inline_sizes(obj: dict[str, Any]) -> list[int]:
            sizes = []
            for element in obj.values():
                if "InlineBinary" in element:
                    sizes.append(len(base64.b64decode(element["InlineBinary"])))
                if element["vr"] == "SQ":
                    for item in element.get("Value", []):
                        sizes.extend(inline_sizes(item))
            return sizes

        for path in (CT, WAVEFORM, RT_DOSE, MR_IMPLICIT):
            assert all(size <= BULK_DATA_THRESHOLD for size in inline_sizes(to_json(path))), path.name


class TestRendering:
    """What a client reads in the metadata."""

    def test_group_length_elements_are_omitted(self) -> None:
        """(gggg,0000) Group Length elements describe the encoding, not the data, and are left out."""
        ds = pydicom.dcmread(GROUP_LENGTHS, defer_size=BULK_DATA_THRESHOLD)
        assert any(tag.element == 0 for tag in ds.keys())
        result = dataset_to_json(ds, INSTANCE_PATH)
        assert result
        assert not [key for key in result if key.endswith("0000")]

    def test_person_name(self) -> None:
        """PN values are objects with an Alphabetic component (PS3.18 §F.2.2)."""
        assert to_json(CT)["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}

    def test_person_name_with_ideographic_and_phonetic_components(self) -> None:
        """chrH31 (ISO 2022 IR 87) is decoded and split into its three component groups."""
        assert to_json(CHARSET_FILES / "chrH31.dcm")["00100010"] == {
            "vr": "PN",
            "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}],
        }

    def test_numbers_are_json_numbers(self) -> None:
        """IS and DS values are numbers, multi-valued ones a list in order."""
        result = to_json(CT)
        assert result["00200011"] == {"vr": "IS", "Value": [1]}
        assert result["00280030"] == {"vr": "DS", "Value": [0.661468, 0.661468]}

    def test_keys_are_upper_case_tags(self) -> None:
        """Every key is 8 upper-case hex digits, as PS3.18 §F.2.1 requires."""
        for key in to_json(CT):
            assert len(key) == 8
            assert key == key.upper()
            int(key, 16)

    def test_empty_sequence_has_no_value(self) -> None:
        """An empty sequence is {"vr": "SQ"} without a Value (PS3.18 §F.2.5)."""
        ds = Dataset()
        ds.ReferencedStudySequence = []
        assert dataset_to_json(ds, INSTANCE_PATH) == {"00081110": {"vr": "SQ"}}

    def test_value_that_does_not_fit_its_vr_is_kept_as_text(self) -> None:
        """An IS that is not a number cannot be a JSON number; the element keeps its text instead of being lost."""
        ds = read_elements((0x00200011, "IS", b"abc "))
        assert dataset_to_json(ds, INSTANCE_PATH)["00200011"] == {"vr": "IS", "Value": ["abc"]}

    def test_multi_valued_value_that_does_not_fit_keeps_each_value(self) -> None:
        """A DS of "abc\\1" keeps two values, not the single string "['abc', '1']"."""
        ds = read_elements((0x00280030, "DS", b"abc\\1 "))
        assert dataset_to_json(ds, INSTANCE_PATH)["00280030"] == {"vr": "DS", "Value": ["abc", "1"]}

    def test_fractional_integer_string_is_not_truncated(self) -> None:
        """An IS of "1.5" must not become 1 in the metadata: the module keeps such values as text."""
        ds = read_elements((0x00200011, "IS", b"1.5 "))
        assert dataset_to_json(ds, INSTANCE_PATH)["00200011"]["Value"] != [1]

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (b"1.0 ", ["1.0"]),  # an integer in value, but not an IS
            (b"1e99", ["1e99"]),  # pydicom's integer for it is too large for orjson
            (b"99999999999999999999", ["99999999999999999999"]),  # past signed 64 bits
            (b"1\\1.5 ", ["1", "1.5"]),  # one odd value turns the whole element to text
            (b"1.5\\\\2 ", ["1.5", None, "2"]),  # an empty value stays in place as null (PS3.18 F.2.5)
        ],
    )
    def test_integer_strings_that_are_not_numbers_are_text(self, value: bytes, expected: list[str | None]) -> None:
        """IS values that are not integer strings, or do not fit 64 bits, keep their text, and serialise."""
        result = dataset_to_json(read_elements((0x00200011, "IS", value)), INSTANCE_PATH)
        assert result["00200011"] == {"vr": "IS", "Value": expected}
        assert orjson.loads(orjson.dumps(result)) == result

    @pytest.mark.parametrize(("value", "expected"), [(b"+5", [5]), (b" 007", [7]), (b"-12\\3 ", [-12, 3])])
    def test_integer_strings_are_numbers(self, value: bytes, expected: list[int]) -> None:
        """A sign, leading zeros and padding are all allowed in IS: those values are still JSON numbers."""
        result = dataset_to_json(read_elements((0x00200011, "IS", value)), INSTANCE_PATH)
        assert result["00200011"] == {"vr": "IS", "Value": expected}

    @pytest.mark.parametrize("value", [b"inf ", b"nan ", b"1e400 "])
    def test_decimal_strings_that_are_not_finite_are_text(self, value: bytes) -> None:
        """A DS that is not a finite number keeps its text instead of becoming null."""
        result = dataset_to_json(read_elements((0x00281050, "DS", value)), INSTANCE_PATH)
        assert result["00281050"] == {"vr": "DS", "Value": [value.decode().strip()]}

    @pytest.mark.parametrize("path", [MR_BIG_ENDIAN, MR_IMPLICIT, SR, RT_DOSE, WAVEFORM], ids=lambda p: p.name)
    def test_other_encodings_convert(self, path: Path) -> None:
        """Big endian, implicit VR and structured files convert, and the result serialises with orjson."""
        result = to_json(path)
        assert orjson.loads(orjson.dumps(result)) == result
        assert result["00080018"]["Value"] == [pydicom.dcmread(path).SOPInstanceUID]

    @pytest.mark.parametrize("path", [MR_BIG_ENDIAN, MR_IMPLICIT], ids=lambda p: p.name)
    def test_pixel_data_vr_without_explicit_vr(self, path: Path) -> None:
        """Pixel data of 16-bit images is OW whatever the encoding (PS3.5 §A.1 for implicit VR)."""
        assert to_json(path)["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{INSTANCE_PATH}/bulk/7FE00010"}

    def test_big_endian_values_are_decoded(self) -> None:
        """A big endian file renders the same numbers as its little endian twin."""
        big, little = to_json(MR_BIG_ENDIAN), to_json(MR)
        for key in ("00280010", "00280011", "00280030", "00200032", "00100010"):
            assert big[key] == little[key], key


class TestRoundTrip:
    """pydicom's Dataset.from_json reads our JSON back to the original values."""

    @pytest.mark.parametrize(
        "keyword",
        [
            "PatientName",
            "PatientID",
            "StudyDate",
            "StudyTime",
            "StudyInstanceUID",
            "SeriesNumber",
            "PixelSpacing",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "Rows",
            "RescaleIntercept",
            "ImageType",
        ],
    )
    def test_ct_values(self, keyword: str) -> None:
        """Text, dates, UIDs, IS, US and multi-valued DS and CS of CT_small come back equal."""
        back = Dataset.from_json(to_json(CT), bulk_data_uri_handler=no_bulk_data)
        assert back[keyword].value == pydicom.dcmread(CT)[keyword].value

    def test_bulk_data_is_fetched_through_the_uri(self) -> None:
        """from_json asks the handler for the PixelData bytes at the URI we wrote."""
        asked: list[tuple[str, str, str]] = []

        def handler(tag: str, vr: str, value: str) -> bytes:
            asked.append((tag, vr, value))
            return b""

        Dataset.from_json(to_json(CT), bulk_data_uri_handler=handler)
        assert ("7FE00010", "OW", f"{INSTANCE_PATH}/bulk/7FE00010") in asked

    def test_non_ascii_names(self) -> None:
        """A name with all three component groups comes back equal."""
        path = CHARSET_FILES / "chrH31.dcm"
        back = Dataset.from_json(to_json(path), bulk_data_uri_handler=no_bulk_data)
        assert str(back.PatientName) == str(pydicom.dcmread(path).PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"

    def test_sequences(self) -> None:
        """An SR's nested content sequences come back equal, item for item (compared as DICOM JSON)."""
        original = pydicom.dcmread(SR)
        back = Dataset.from_json(to_json(SR), bulk_data_uri_handler=no_bulk_data)
        assert len(back.ContentSequence) == len(original.ContentSequence) > 0
        for ours, theirs in zip(back.ContentSequence, original.ContentSequence, strict=True):
            assert ours.to_json_dict() == theirs.to_json_dict()


class TestFromRawBytes:
    """rawjson.py writes the JSON of plain elements from their bytes: exactly what pydicom's conversion writes."""

    @staticmethod
    def both_ways(ds_of: Any, monkeypatch: pytest.MonkeyPatch, source: bytes | Path | None = None) -> tuple[str, str]:
        """The JSON (or the error) with rawjson.py, and with every element converted by pydicom (``source``: where
        the sequences ``defer_size`` left unread are read from, as the store gives it)."""
        from dicomweb import dicomjson

        def convert() -> str:
            try:
                return orjson.dumps(dataset_to_json(ds_of(), INSTANCE_PATH, source)).decode()
            except Exception as exc:
                return f"fails: {exc!r}"

        fast = convert()
        with monkeypatch.context() as patched:
            patched.setattr(dicomjson, "element_json", lambda raw, encodings: None)
            patched.setattr(dicomjson, "sequence_json", lambda *args: None)
            slow = convert()
        return fast, slow

    @pytest.mark.parametrize("path", READABLE_TEST_FILES, ids=lambda p: p.name)
    def test_every_file_pydicom_ships(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every test file of pydicom that it can read, its character set files included, converts the same."""
        fast, slow = self.both_ways(lambda: pydicom.dcmread(path, defer_size=BULK_DATA_THRESHOLD), monkeypatch)
        assert fast == slow

    @pytest.mark.parametrize("path", READABLE_TEST_FILES, ids=lambda p: p.name)
    @pytest.mark.parametrize("kind", ["bytes", "path"])
    def test_every_file_with_its_sequences_read_raw(
        self, path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same with the sequences pydicom left unread given to rawjson.sequence_json, from the file's bytes (as
        the store parses a small file) or from its path (a large one)."""
        data = path.read_bytes()
        fast, slow = self.both_ways(
            lambda: pydicom.dcmread(io.BytesIO(data), defer_size=BULK_DATA_THRESHOLD),
            monkeypatch,
            data if kind == "bytes" else path,
        )
        assert fast == slow

    def test_cut_or_garbled_sequences_go_to_pydicom(self) -> None:
        """A sequence value cut anywhere, or with a byte changed, is read raw or left to pydicom (None), never an
        exception; cut, it is read only up to the last whole item."""
        from dicomweb.rawjson import sequence_json

        ds = pydicom.dcmread(SR)
        raw = ds.get_item("ContentSequence")
        value = bytes(raw.value)
        whole = sequence_json(value, False, ["iso8859"], "bulk/0040A730/", BULK_DATA_THRESHOLD)
        assert whole == to_json(SR)["0040A730"]
        assert whole is not None
        for cut in range(0, len(value), 7):  # None, or the whole items before the cut (a cut between two items)
            found = sequence_json(value[:cut], False, ["iso8859"], "bulk/0040A730/", BULK_DATA_THRESHOLD)
            items = found.get("Value", []) if found is not None else []
            assert found is None or found == {"vr": "SQ", **({"Value": items} if items else {})}
            assert items == whole["Value"][: len(items)]
        for at in range(0, min(len(value), 600), 3):
            garbled = value[:at] + bytes([value[at] ^ 0xFF]) + value[at + 1 :]
            found = sequence_json(garbled, False, ["iso8859"], "", BULK_DATA_THRESHOLD)
            assert found is None or isinstance(orjson.dumps(found), bytes)

    @pytest.mark.parametrize(
        ("vr", "value"),
        [
            ("CS", b"ORIGINAL\\PRIMARY\\\\AXIAL "),
            ("CS", b" LEADING"),
            ("AE", b" STORESCU \\ B "),
            ("UI", b"1.2.3\x00"),
            ("UI", b"1.2\\1.3 "),
            ("DA", b"20240102\\"),
            ("TM", b"101010.5 "),
            ("LO", b"Chest \\ Abdomen\x00"),
            ("LO", b"\\"),
            ("SH", b"caf\xe9 "),
            ("LT", b"  indented\\text \x00"),
            ("UT", b"line one\r\nline two  "),
            ("UR", b"http://example.org/a b  "),
            ("PN", b"Doe^Jane"),
            ("PN", b"Doe^Jane=="),
            ("PN", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"),
            ("PN", b"A^B\\C^D=E"),
            ("PN", b"A\\\\B"),
            ("PN", b"  "),
            ("IS", b" 42 \\-7\\+3"),
            ("IS", b"1.5"),
            ("IS", b"99999999999999999999"),
            ("DS", b"1.5\\-2e3\\.5 \\7."),
            ("DS", b"inf"),
            ("DS", b"1.5\\"),
            ("US", struct.pack("<3H", 1, 2, 65535)),
            ("SS", struct.pack("<h", -5)),
            ("UL", struct.pack("<L", 4000000000)),
            ("SL", struct.pack("<l", -4)),
            ("FL", struct.pack("<2f", 1.5, float("nan"))),
            ("FD", struct.pack("<d", -0.25)),
            ("SV", struct.pack("<q", -(2**40))),
            ("UV", struct.pack("<Q", 2**63)),
            ("US", b"\x01\x00\x02"),
            ("US", b""),
            ("OB", b"\x00\x01\x02\x03"),
            ("OW", b""),
            ("UN", b"\x01\x02"),
            ("AT", struct.pack("<HH", 0x0010, 0x0010)),
        ],
    )
    def test_values(self, vr: str, value: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
        """Padding, empty values among several, escape sequences, numbers that are not plain: as pydicom writes."""
        charset = b"ISO_IR 100\\ISO 2022 IR 87" if b"\x1b" in value else b"ISO_IR 100"
        tag = 0x00091010 if vr in ("UN", "AT") else 0x00111010
        padded = value + b" " * (len(value) % 2)
        encoded = struct.pack("<HH2sH", 0x0008, 0x0005, b"CS", len(charset)) + charset
        if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):  # PS3.5 §7.1.2
            encoded += struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(padded)) + padded
        else:
            encoded += struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(padded)) + padded

        def read() -> Dataset:
            return read_dataset(io.BytesIO(encoded), is_implicit_VR=False, is_little_endian=True)

        fast, slow = self.both_ways(read, monkeypatch)
        assert fast == slow
