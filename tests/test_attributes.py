"""The indexed attributes: name folding for matching, and the column values extract() takes from real instances."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomweb.attributes import ATTRIBUTES, BY_KEYWORD, Level, columns, extract, extract_from_json, normalize_name
from dicomweb.dicomjson import BULK_DATA_THRESHOLD, dataset_to_json

from .data import CHARSET_FILES, CT
from .test_dicomjson import READABLE_TEST_FILES


def extracted(**values: Any) -> dict[Level, dict[str, Any]]:
    """The indexed values of a small in-memory dataset with the given keywords set, as the store takes them (from its
    DICOM JSON), checked against extract() of the data set."""
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    from_json = extract_from_json(dataset_to_json(ds, "studies/1/series/2/instances/3"), ds)
    assert from_json == extract(ds)
    return from_json


class TestAttributeMap:
    """The keyword→column map is consistent."""

    def test_keywords_and_columns_are_unique(self) -> None:
        """No keyword or column is declared twice."""
        assert len(BY_KEYWORD) == len(ATTRIBUTES)
        assert len({(a.level, a.column) for a in ATTRIBUTES}) == len(ATTRIBUTES)

    def test_columns_per_level(self) -> None:
        """Each level lists its own attributes, and the UIDs sit at their level."""
        assert "study_instance_uid" in [a.column for a in columns(Level.STUDY)]
        assert "sop_instance_uid" in [a.column for a in columns(Level.INSTANCE)]
        assert all(a.level is Level.SERIES for a in columns(Level.SERIES))


class TestNormalizeName:
    """Person names folded for case- and accent-insensitive matching."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("Müller", "muller"),
            ("MULLER", "muller"),
            ("ÄNEAS^Rüdiger", "aneas^rudiger"),
            ("Äneas^Rüdiger", "aneas^rudiger"),
            ("Buc^Jérôme", "buc^jerome"),
            ("Ñúñez^Çelik", "nunez^celik"),
            ("Straße", "strasse"),  # casefold, not lower: ß matches SS
            ("Wang^XiaoDong=王^小東", "wang^xiaodong=王^小東"),  # ideographs are unchanged
            ("Nguyễn^Thị", "nguyen^thi"),  # stacked Vietnamese marks
            ("Hong^Gildong=洪^吉洞=홍^길동", "hong^gildong=洪^吉洞=홍^길동"),  # Hangul decomposes and recomposes
            ("やまだ^たろう", "やまだ^たろう"),
            ("ﾔﾏﾀﾞ^ﾀﾛｳ", "ヤマダ^タロウ"),  # half-width katakana: the voicing mark joins its letter
            ("", ""),
        ],
    )
    def test_folding(self, value: str, expected: str) -> None:
        """Case and accents go, the PN separators ^ and = stay."""
        assert normalize_name(value) == expected

    def test_decomposed_and_composed_forms_match(self) -> None:
        """An ü typed as u + combining diaeresis (NFD, as macOS sends) folds like the precomposed one."""
        assert normalize_name("Mu\u0308ller") == normalize_name("Müller") == "muller"

    def test_kana_voicing_marks_are_kept(self) -> None:
        """だ (da) and た (ta) are different syllables: やまだ (Yamada) must not fold to やまた (Yamata)."""
        assert normalize_name("やまだ^たろう") != normalize_name("やまた^たろう")


class TestExtractRealFiles:
    """Column values of real pydicom test files."""

    def test_ct(self) -> None:
        """CT_small: text, dates as datetime.date, times as datetime.time, numbers as int, at their levels."""
        record = extract(pydicom.dcmread(CT))
        assert record[Level.PATIENT]["patient_id"] == "1CT1"
        assert record[Level.PATIENT]["patient_name"] == "CompressedSamples^CT1"
        assert record[Level.PATIENT]["patient_name_folded"] == "compressedsamples^ct1"
        assert record[Level.STUDY]["study_instance_uid"] == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
        assert record[Level.STUDY]["study_date"] == datetime.date(2004, 1, 19)
        assert record[Level.STUDY]["study_time"] == datetime.time(7, 27, 30)
        assert record[Level.SERIES]["modality"] == "CT"
        assert record[Level.SERIES]["series_number"] == 1
        assert isinstance(record[Level.SERIES]["series_number"], int)
        assert record[Level.INSTANCE]["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
        assert record[Level.INSTANCE]["rows"] == 128
        assert record[Level.INSTANCE]["columns"] == 128

    def test_absent_attributes_are_none(self) -> None:
        """CT_small has no AccessionNumber or NumberOfFrames: NULL columns, not empty strings or zero."""
        record = extract(pydicom.dcmread(CT))
        assert record[Level.STUDY]["accession_number"] is None
        assert record[Level.INSTANCE]["number_of_frames"] is None
        assert record[Level.STUDY]["referring_physician_name_folded"] is None

    def test_every_column_is_present(self) -> None:
        """Every declared column (and a _folded one per PN) is in the record, so inserts can name them all."""
        record = extract(pydicom.dcmread(CT))
        for attribute in ATTRIBUTES:
            assert attribute.column in record[attribute.level]
            if attribute.kind == "pn":
                assert attribute.column + "_folded" in record[attribute.level]

    @pytest.mark.parametrize(
        ("name", "patient_name", "folded"),
        [
            ("chrGerm.dcm", "Äneas^Rüdiger", "aneas^rudiger"),  # ISO_IR 100 (Latin-1)
            ("chrFren.dcm", "Buc^Jérôme", "buc^jerome"),
            ("chrX1.dcm", "Wang^XiaoDong=王^小東", "wang^xiaodong=王^小東"),  # ISO_IR 192 (UTF-8)
        ],
    )
    def test_specific_character_set_is_decoded(self, name: str, patient_name: str, folded: str) -> None:
        """Names are decoded with the file's Specific Character Set, then folded for matching."""
        record = extract(pydicom.dcmread(CHARSET_FILES / name))
        assert record[Level.PATIENT]["patient_name"] == patient_name
        assert record[Level.PATIENT]["patient_name_folded"] == folded


class TestDates:
    """DA values (PS3.5 Table 6.2-1) become dates, or NULL when they are not dates."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("20240315", datetime.date(2024, 3, 15)),
            ("20240229", datetime.date(2024, 2, 29)),  # leap year
            ("2024.03.15", datetime.date(2024, 3, 15)),  # ACR-NEMA form
            (" 20240315 ", datetime.date(2024, 3, 15)),
        ],
    )
    def test_valid(self, value: str, expected: datetime.date) -> None:
        """Valid dates, including the old dotted form, are indexed."""
        assert extracted(StudyDate=value)[Level.STUDY]["study_date"] == expected

    @pytest.mark.parametrize(
        "value",
        ["20240230", "20230229", "20241301", "2024031", "202403150", "2024-03-15", "yesterday", "", "2024.3.15"],
    )
    def test_invalid_is_none(self, value: str) -> None:
        """Impossible or malformed dates become NULL instead of failing the store."""
        assert extracted(StudyDate=value)[Level.STUDY]["study_date"] is None


class TestTimes:
    """TM values (HH[MM[SS[.F{1-6}]]]) become times, or NULL."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("10", datetime.time(10, 0)),
            ("1015", datetime.time(10, 15)),
            ("101500", datetime.time(10, 15)),
            ("101500.123", datetime.time(10, 15, 0, 123000)),
            ("101500.123456", datetime.time(10, 15, 0, 123456)),
            ("101500.1", datetime.time(10, 15, 0, 100000)),
            ("10:15:00", datetime.time(10, 15)),  # old ACR-NEMA form
            ("235960", datetime.time(23, 59, 59)),  # a leap second is clamped, not lost
        ],
    )
    def test_valid(self, value: str, expected: datetime.time) -> None:
        """Every precision the standard allows is indexed, fractions as microseconds."""
        assert extracted(StudyTime=value)[Level.STUDY]["study_time"] == expected

    @pytest.mark.parametrize("value", ["240000", "1060", "106100", "1", "101", "10150", "ab", "1015.x", ""])
    def test_invalid_is_none(self, value: str) -> None:
        """Out-of-range or malformed times become NULL."""
        assert extracted(StudyTime=value)[Level.STUDY]["study_time"] is None


class TestValues:
    """Numbers, multi-valued attributes and sequences."""

    def test_integer_out_of_int4_range_is_none(self) -> None:
        """An IS value too large for an integer column becomes NULL instead of failing the insert."""
        assert extracted(SeriesNumber=2**31)[Level.SERIES]["series_number"] is None
        assert extracted(SeriesNumber=2**31 - 1)[Level.SERIES]["series_number"] == 2**31 - 1
        assert extracted(SeriesNumber=-(2**31))[Level.SERIES]["series_number"] == -(2**31)

    def test_blank_text_is_none(self) -> None:
        """A value of spaces is absent, not an empty string."""
        assert extracted(AccessionNumber="  ")[Level.STUDY]["accession_number"] is None

    def test_multi_valued_keeps_the_first(self) -> None:
        """Multi-valued attributes index their first value, converted to the column's kind."""
        record = extracted(
            StudyDate=["20240101", "20240202"],
            InstanceNumber=["3", "4"],
            PatientName=["Müller^Hans", "Other^Name"],
            Modality=["CT", "PT"],
        )
        assert record[Level.STUDY]["study_date"] == datetime.date(2024, 1, 1)
        assert record[Level.INSTANCE]["instance_number"] == 3
        assert record[Level.PATIENT]["patient_name"] == "Müller^Hans"
        assert record[Level.PATIENT]["patient_name_folded"] == "muller^hans"
        assert record[Level.SERIES]["modality"] == "CT"

    def test_request_attributes_sequence(self) -> None:
        """Every item of RequestAttributesSequence contributes its step and procedure IDs, in order."""
        items = []
        for step, procedure in (("SPS1", "RP1"), ("SPS2", "RP2")):
            item = Dataset()
            item.ScheduledProcedureStepID = step
            item.RequestedProcedureID = procedure
            items.append(item)
        record = extracted(RequestAttributesSequence=items)
        assert record[Level.SERIES]["scheduled_procedure_step_ids"] == ["SPS1", "SPS2"]
        assert record[Level.SERIES]["requested_procedure_ids"] == ["RP1", "RP2"]

    def test_request_attributes_items_without_the_value_are_skipped(self) -> None:
        """An item without a ScheduledProcedureStepID adds nothing (no NULL or empty entries)."""
        first, second = Dataset(), Dataset()
        first.RequestedProcedureID = "RP1"
        second.ScheduledProcedureStepID = "SPS2"
        record = extracted(RequestAttributesSequence=[first, second])
        assert record[Level.SERIES]["scheduled_procedure_step_ids"] == ["SPS2"]
        assert record[Level.SERIES]["requested_procedure_ids"] == ["RP1"]

    def test_no_request_attributes_sequence_is_an_empty_list(self) -> None:
        """Without the sequence the array columns are empty lists."""
        record = extract(pydicom.dcmread(CT))
        assert record[Level.SERIES]["scheduled_procedure_step_ids"] == []


class TestFromJson:
    """The store reads the indexed values from the DICOM JSON it has made (extract_from_json), not from pydicom's
    elements again: the same values as extract(), on every file pydicom ships and can read."""

    @pytest.mark.parametrize("path", READABLE_TEST_FILES, ids=lambda p: p.name)
    def test_same_as_from_the_data_set(self, path: Path) -> None:
        ds = pydicom.dcmread(path, defer_size=BULK_DATA_THRESHOLD)
        from_json = extract_from_json(dataset_to_json(ds, "studies/1/series/2/instances/3"), ds)
        assert from_json == extract(pydicom.dcmread(path))

    def test_sequence_values(self) -> None:
        """RequestAttributesSequence > ScheduledProcedureStepID and RequestedProcedureID, from every item."""
        ds = Dataset()
        ds.RequestAttributesSequence = [Dataset(), Dataset(), Dataset()]
        ds.RequestAttributesSequence[0].ScheduledProcedureStepID = "SPS1"
        ds.RequestAttributesSequence[0].RequestedProcedureID = "RP1"
        ds.RequestAttributesSequence[2].ScheduledProcedureStepID = " SPS3 "
        record = extract_from_json(dataset_to_json(ds, "studies/1/series/2/instances/3"), ds)
        assert record[Level.SERIES]["scheduled_procedure_step_ids"] == ["SPS1", "SPS3"]
        assert record[Level.SERIES]["requested_procedure_ids"] == ["RP1"]
        assert record == extract(ds)
