"""The QIDO-RS query model: query parameters (PS3.18 §8.3.4) parsed into match keys (PS3.4 §C.2.2.2). No I/O."""

from __future__ import annotations

import datetime

import pytest

from dicomweb.attributes import Level
from dicomweb.errors import BadRequest
from dicomweb.query import (
    MAX_VALUE_LENGTH,
    Matching,
    MatchKey,
    Query,
    like_escape,
    like_literals,
    like_pattern,
    parse,
)


def key(name: str, value: str, level: Level = Level.STUDY) -> MatchKey:
    """The one match key that ``name=value`` parses to."""
    query = parse([(name, value)], level)
    assert query.ignored == ()
    assert len(query.keys) == 1
    return query.keys[0]


def refused(params: list[tuple[str, str]], level: Level = Level.STUDY) -> BadRequest:
    """The 400 that parsing ``params`` raises."""
    with pytest.raises(BadRequest) as caught:
        parse(params, level)
    assert caught.value.status == 400
    return caught.value


class TestKeys:
    """Keys are named by keyword, by tag, or by a sequence path (PS3.18 §8.3.4.1 attributeID)."""

    def test_keyword(self) -> None:
        """A keyword names the indexed attribute, and the key remembers the parameter it came from."""
        match = key("PatientName", "Doe")
        assert match.attribute.keyword == "PatientName"
        assert match.parameter == "PatientName"

    @pytest.mark.parametrize("tag", ["00100010", "0020000d", "0020000D"])
    def test_tag(self, tag: str) -> None:
        """An 8-digit tag names the same attribute as its keyword, in lower- or upper-case hex."""
        match = key(tag, "1.2.3" if tag.startswith("0020") else "Doe")
        assert match.attribute.keyword == ("StudyInstanceUID" if tag.startswith("0020") else "PatientName")
        assert match.parameter == tag

    @pytest.mark.parametrize(
        "name",
        [
            "RequestAttributesSequence.ScheduledProcedureStepID",
            "00400275.00400009",
            "00400275.ScheduledProcedureStepID",
        ],
    )
    def test_sequence_path(self, name: str) -> None:
        """Sequence matching (PS3.4 §C.2.2.2.6): Sequence.Item by keyword or tag selects the item attribute."""
        match = key(name, "SPS1", Level.SERIES)
        assert match.attribute.keyword == "ScheduledProcedureStepID"
        assert (match.matching, match.values) == (Matching.SINGLE, ("SPS1",))

    def test_requested_procedure_id_in_sequence(self) -> None:
        """The other indexed item, RequestedProcedureID, is matched through the same sequence."""
        assert key("RequestAttributesSequence.RequestedProcedureID", "RP1", Level.SERIES).attribute.keyword == (
            "RequestedProcedureID"
        )

    def test_item_attribute_without_its_sequence_is_ignored(self) -> None:
        """ScheduledProcedureStepID on its own is not a series attribute: listed as ignored, not matched."""
        query = parse([("ScheduledProcedureStepID", "SPS1")], Level.SERIES)
        assert (query.keys, query.ignored) == ((), ("ScheduledProcedureStepID",))

    def test_item_under_the_wrong_sequence_is_ignored(self) -> None:
        """An item attribute under a sequence the index does not keep it for is ignored, not matched."""
        query = parse([("ReferencedStudySequence.ScheduledProcedureStepID", "SPS1")], Level.SERIES)
        assert (query.keys, query.ignored) == ((), ("ReferencedStudySequence.ScheduledProcedureStepID",))

    def test_repeated_key_gives_one_condition_each(self) -> None:
        """Repeating a key adds a condition per value; none is silently dropped."""
        query = parse([("PatientID", "a"), ("PatientID", "b")], Level.STUDY)
        assert [k.values for k in query.keys] == [("a",), ("b",)]


class TestUnknownAndIgnoredKeys:
    """Unknown names are refused; valid attributes the archive cannot match are reported (PS3.18 §8.3.4.1)."""

    def test_unknown_keyword(self) -> None:
        """A misspelt keyword is a 400 that names it, rather than a search that silently matches everything."""
        assert "PatientNam" in refused([("PatientNam", "Doe")]).detail

    @pytest.mark.parametrize("name", ["0010001G", "001000100", "0010001", "(0010,0010)"])
    def test_malformed_tag(self, name: str) -> None:
        """A tag that is not exactly 8 hex digits is a 400 naming it."""
        assert name in refused([(name, "Doe")]).detail

    def test_unknown_public_tag(self) -> None:
        """A well-formed tag that the data dictionary does not know is a 400."""
        assert "0010001A" in refused([("0010001A", "x")]).detail

    def test_unknown_keyword_in_sequence_path(self) -> None:
        """Both parts of a sequence path must be DICOM keywords or tags."""
        assert "RequestAttributesSequence.ScheduledStepID" in (
            refused([("RequestAttributesSequence.ScheduledStepID", "x")], Level.SERIES).detail
        )

    @pytest.mark.parametrize("name", ["InstitutionName", "00080080"])
    def test_valid_but_not_indexed(self, name: str) -> None:
        """A real attribute the index lacks is listed in ``ignored`` (for the Warning header), not matched."""
        query = parse([(name, "General Hospital")], Level.STUDY)
        assert (query.keys, query.ignored) == ((), (name,))

    def test_private_tag_is_ignored(self) -> None:
        """A private tag is a valid attribute the index lacks: ignored, not refused."""
        query = parse([("00091010", "x")], Level.STUDY)
        assert (query.keys, query.ignored) == ((), ("00091010",))

    def test_series_key_on_study_search(self) -> None:
        """Modality is below the study level: a study search ignores it and says so."""
        query = parse([("Modality", "CT")], Level.STUDY)
        assert (query.keys, query.ignored) == ((), ("Modality",))

    def test_instance_key_on_series_search(self) -> None:
        """SOPInstanceUID is below the series level: a series search ignores it and says so."""
        query = parse([("SOPInstanceUID", "1.2.3")], Level.SERIES)
        assert (query.keys, query.ignored) == ((), ("SOPInstanceUID",))

    def test_higher_level_key_on_series_search(self) -> None:
        """A study attribute on a series search is matched (the series' study must match)."""
        assert key("StudyDate", "20200101", Level.SERIES).attribute.keyword == "StudyDate"

    def test_unknown_keyword_in_deep_path(self) -> None:
        """Every part of a deeper path is validated too: an unknown keyword in it is a 400 naming it."""
        assert "PatientNam" in refused([("PatientNam.Foo.Bar", "x")]).detail

    def test_long_unknown_name_is_not_echoed_whole(self) -> None:
        """A 2000-character unknown name yields a bounded error detail, as values and the shown name are."""
        assert len(refused([("X" * 2000, "a")]).detail) < 300


class TestSingleValueAndUniversal:
    """Single value (PS3.4 §C.2.2.2.1) and universal matching (§C.2.2.2.3)."""

    def test_single_value(self) -> None:
        """A plain value is one exact condition, kept verbatim for non-PN attributes."""
        match = key("AccessionNumber", "ACC-1")
        assert (match.matching, match.values) == (Matching.SINGLE, ("ACC-1",))

    @pytest.mark.parametrize(
        ("name", "keyword"),
        [("PatientName", "PatientName"), ("00100010", "PatientName"), ("StudyDate", "StudyDate")],
    )
    def test_empty_value_is_universal(self, name: str, keyword: str) -> None:
        """An empty value is no condition: the attribute is only asked to be returned."""
        query = parse([(name, "")], Level.STUDY)
        assert query.keys == ()
        assert query.universal == frozenset({keyword})

    def test_empty_sequence_key_is_universal(self) -> None:
        """An empty sequence path asks for the item attribute to be returned."""
        query = parse([("RequestAttributesSequence.ScheduledProcedureStepID", "")], Level.SERIES)
        assert (query.keys, query.universal) == ((), frozenset({"ScheduledProcedureStepID"}))

    def test_defaults(self) -> None:
        """No parameters: no conditions, no limit, offset 0, exact matching."""
        assert parse([], Level.STUDY) == Query(level=Level.STUDY)


class TestUidList:
    """List of UID matching (PS3.4 §C.2.2.2.2); PS3.18 §8.3.4.1 allows backslash or comma as separator."""

    @pytest.mark.parametrize("value", ["1.2.3\\1.2.4", "1.2.3,1.2.4"])
    def test_list(self, value: str) -> None:
        """Either separator gives a list of the UIDs in order."""
        match = key("StudyInstanceUID", value)
        assert (match.matching, match.values) == (Matching.LIST, ("1.2.3", "1.2.4"))

    def test_single_uid(self) -> None:
        """One UID is single value matching."""
        match = key("StudyInstanceUID", "1.2.840.10008.1")
        assert (match.matching, match.values) == (Matching.SINGLE, ("1.2.840.10008.1",))

    def test_trailing_separator(self) -> None:
        """A trailing separator adds no empty UID."""
        match = key("StudyInstanceUID", "1.2.3,")
        assert (match.matching, match.values) == (Matching.SINGLE, ("1.2.3",))

    @pytest.mark.parametrize("value", ["1.2.*", "1.2.?", "*"])
    def test_wildcard_refused(self, value: str) -> None:
        """Wildcards are not allowed for UIDs (PS3.4 §C.2.2.2.4): a 400 naming the parameter."""
        detail = refused([("StudyInstanceUID", value)]).detail
        assert "StudyInstanceUID" in detail
        assert "wildcard" in detail

    @pytest.mark.parametrize("value", ["1.2.abc", "1.2.3\\x.y", "1." + "2" * 70])
    def test_invalid_uid_refused(self, value: str) -> None:
        """A value that is not a UID (PS3.5 §9.1), alone or in a list, is a 400 naming the parameter."""
        assert "StudyInstanceUID" in refused([("StudyInstanceUID", value)]).detail

    @pytest.mark.parametrize("value", [",", "\\", ",,"])
    def test_list_of_no_uid(self, value: str) -> None:
        """A value of separators only is refused (400 naming the parameter), never a condition that matches nothing."""
        try:
            query = parse([("StudyInstanceUID", value)], Level.STUDY)
        except BadRequest as error:
            assert "StudyInstanceUID" in error.detail
        else:
            assert all(match.values for match in query.keys)


class TestWildcard:
    """Wildcard matching (PS3.4 §C.2.2.2.4): ``*``/``?`` become a LIKE pattern; LIKE's own characters are literal."""

    @pytest.mark.parametrize(
        ("value", "pattern"),
        [
            ("*", "%"),
            ("AB*", "AB%"),
            ("A?C", "A_C"),
            ("*123*", "%123%"),
            ("50%*", "50\\%%"),
            ("a_b?", "a\\_b_"),
            ("C:\\dir*", "C:\\\\dir%"),
        ],
    )
    def test_pattern(self, value: str, pattern: str) -> None:
        """``*`` → ``%``, ``?`` → ``_``; a user's ``%``, ``_`` and backslash are escaped to match themselves."""
        match = key("PatientID", value)
        assert (match.matching, match.values) == (Matching.WILDCARD, (pattern,))

    def test_like_pattern_escapes_before_translating(self) -> None:
        """Backslash is escaped first, so the escapes added for ``%`` and ``_`` are not doubled."""
        assert like_pattern("\\%_*?") == "\\\\\\%\\_%_"

    @pytest.mark.parametrize("text", ["", "plain", "50%", "a_b", "C:\\dir", "\\%_*?", "'; --"])
    def test_like_escape_round_trips_through_like_literals(self, text: str) -> None:
        """Escaped text is one literal run that unescapes to the text itself (no wildcard appears or vanishes)."""
        assert like_literals(like_escape(text)) == ([text] if text else [])

    @pytest.mark.parametrize(
        ("value", "runs"),
        [
            ("*MÜL?ER*", ["MÜL", "ER"]),
            ("*", []),
            ("smith", ["smith"]),
            ("*50%_off*", ["50%_off"]),
            ("a\\b?c", ["a\\b", "c"]),
        ],
    )
    def test_like_literals(self, value: str, runs: list[str]) -> None:
        """The literal runs of a wildcard value: split at ``*``/``?``, with LIKE's characters unescaped."""
        assert like_literals(like_pattern(value)) == runs

    def test_like_characters_without_wildcard_stay_single(self) -> None:
        """``%`` and ``_`` are not DICOM wildcards: without ``*`` or ``?`` the value is matched exactly, verbatim."""
        match = key("PatientID", "50%_off")
        assert (match.matching, match.values) == (Matching.SINGLE, ("50%_off",))


class TestDateRange:
    """DA single value and range matching (PS3.4 §C.2.2.2.5)."""

    def test_single_date(self) -> None:
        """A date is single value matching on the parsed date."""
        match = key("StudyDate", "20200315")
        assert (match.matching, match.values) == (Matching.SINGLE, (datetime.date(2020, 3, 15),))

    @pytest.mark.parametrize(
        ("value", "low", "high"),
        [
            ("20200101-20201231", datetime.date(2020, 1, 1), datetime.date(2020, 12, 31)),
            ("-20201231", None, datetime.date(2020, 12, 31)),
            ("20200101-", datetime.date(2020, 1, 1), None),
            ("20200101-20200101", datetime.date(2020, 1, 1), datetime.date(2020, 1, 1)),
        ],
    )
    def test_range(self, value: str, low: datetime.date | None, high: datetime.date | None) -> None:
        """A closed range, or one open at either end (None for the open end)."""
        match = key("StudyDate", value)
        assert (match.matching, match.values) == (Matching.RANGE, (low, high))

    def test_range_on_another_date(self) -> None:
        """Every DA attribute ranges, not only StudyDate."""
        match = key("PatientBirthDate", "19500101-19601231")
        assert match.matching is Matching.RANGE

    @pytest.mark.parametrize(
        "value",
        ["-", "20201231-20200101", "20240230", "20240230-", "2020", "2020*", "20201301", "not-a-date", "2020-01-01"],
    )
    def test_refused(self, value: str) -> None:
        """No end, a reversed range, an impossible date or a wildcard is a 400 naming the parameter."""
        assert "StudyDate" in refused([("StudyDate", value)]).detail

    def test_invalid_date_is_quoted(self) -> None:
        """The 400 for an impossible date quotes the offending value."""
        assert "20240230" in refused([("StudyDate", "20240230")]).detail


class TestTimeRange:
    """TM single value and range matching (PS3.4 §C.2.2.2.5) with partial times (PS3.5 §6.2 TM)."""

    @pytest.mark.parametrize(
        ("value", "time"),
        [
            ("10", datetime.time(10, 0)),
            ("1015", datetime.time(10, 15)),
            ("101530", datetime.time(10, 15, 30)),
            ("101500.5", datetime.time(10, 15, 0, 500000)),
        ],
    )
    def test_partial_times(self, value: str, time: datetime.time) -> None:
        """Hours, hours and minutes, seconds and a fraction each parse to a time."""
        match = key("StudyTime", value)
        assert (match.matching, match.values) == (Matching.SINGLE, (time,))

    @pytest.mark.parametrize(
        ("value", "low", "high"),
        [
            ("1000-1200", datetime.time(10), datetime.time(12)),
            ("-1200", None, datetime.time(12)),
            ("10-", datetime.time(10), None),
            ("083000.25-1700", datetime.time(8, 30, 0, 250000), datetime.time(17)),
        ],
    )
    def test_range(self, value: str, low: datetime.time | None, high: datetime.time | None) -> None:
        """Closed and open TM ranges, with partial times at either end."""
        match = key("StudyTime", value)
        assert (match.matching, match.values) == (Matching.RANGE, (low, high))

    @pytest.mark.parametrize("value", ["-", "25", "1060", "101", "10*", "ten", "10-25"])
    def test_refused(self, value: str) -> None:
        """No end, an impossible or malformed time is a 400 naming the parameter."""
        assert "StudyTime" in refused([("StudyTime", value)]).detail

    def test_reversed_range_with_date_range(self) -> None:
        """StudyDate and StudyTime ranges combine into one date-time range (PS3.4 §C.2.2.2.5.1), so an overnight
        StudyTime=2200-0600 with a two-day StudyDate range is kept as given."""
        query = parse([("StudyDate", "20200101-20200102"), ("StudyTime", "2200-0600")], Level.STUDY)
        assert [k.values for k in query.keys] == [
            (datetime.date(2020, 1, 1), datetime.date(2020, 1, 2)),
            (datetime.time(22), datetime.time(6)),
        ]

    @pytest.mark.parametrize(
        ("params", "level"),
        [
            ([("StudyTime", "1200-1000")], Level.STUDY),
            ([("StudyDate", "20200101"), ("StudyTime", "1200-1000")], Level.STUDY),
            ([("SeriesTime", "1200-1000")], Level.SERIES),
        ],
    )
    def test_reversed_range_alone(self, params: list[tuple[str, str]], level: Level) -> None:
        """A reversed TM range with no date range to combine with (C.2.2.2.5: time1 <= time2) is a 400 naming it."""
        assert params[-1][0] in refused(params, level).detail


class TestInteger:
    """IS attributes match as integers."""

    @pytest.mark.parametrize(("value", "number"), [("3", 3), ("+3", 3), ("-2", -2), ("007", 7)])
    def test_integer(self, value: str, number: int) -> None:
        """SeriesNumber=3 is single value matching on the number 3."""
        match = key("SeriesNumber", value, Level.SERIES)
        assert (match.matching, match.values) == (Matching.SINGLE, (number,))

    @pytest.mark.parametrize("value", ["abc", "3*", "1.5", "3\\4", "0x10"])
    def test_not_an_integer(self, value: str) -> None:
        """A value that is not an integer (wildcards included) is a 400 naming the parameter."""
        assert "SeriesNumber" in refused([("SeriesNumber", value)], Level.SERIES).detail

    @pytest.mark.parametrize("value", ["2147483648", "9999999999", "-2147483649"])
    def test_out_of_is_range(self, value: str) -> None:
        """A value outside the IS range (PS3.5 §6.2: -2^31..2^31-1) is a 400 naming the parameter."""
        assert "SeriesNumber" in refused([("SeriesNumber", value)], Level.SERIES).detail


class TestPersonName:
    """PN values are folded (case- and accent-free) as the index stores them."""

    def test_single_value_folded(self) -> None:
        """An exact name matches regardless of case and accents."""
        match = key("PatientName", "MÜLLER^Hans")
        assert (match.matching, match.values) == (Matching.SINGLE, ("muller^hans",))

    def test_wildcard_folded(self) -> None:
        """``PatientName=MÜLLER*`` → the LIKE pattern ``muller%``."""
        match = key("PatientName", "MÜLLER*")
        assert (match.matching, match.values) == (Matching.WILDCARD, ("muller%",))

    def test_other_pn_attribute_folded(self) -> None:
        """ReferringPhysicianName is folded the same way."""
        assert key("ReferringPhysicianName", "Dr^JÉRÔME").values == ("dr^jerome",)

    def test_quote_in_name(self) -> None:
        """An apostrophe is an ordinary character of a name."""
        assert key("PatientName", "O'Brien*").values == ("o'brien%",)


class TestFuzzyMatching:
    """fuzzymatching (PS3.18 §8.3.4.6): PN words match the start of any name component."""

    def test_fuzzy_words(self) -> None:
        """``fuzzymatching=true&PatientName=Doe^Jo`` → FUZZY on the folded words ("doe", "jo")."""
        query = parse([("fuzzymatching", "true"), ("PatientName", "Doe^Jo")], Level.STUDY)
        assert query.fuzzy is True
        [match] = query.keys
        assert (match.matching, match.values) == (Matching.FUZZY, ("doe", "jo"))

    def test_fuzzy_after_the_key(self) -> None:
        """fuzzymatching applies whatever its position in the query string."""
        query = parse([("PatientName", "Ñúñez Jo"), ("fuzzymatching", "TRUE")], Level.STUDY)
        assert [(k.matching, k.values) for k in query.keys] == [(Matching.FUZZY, ("nunez", "jo"))]

    def test_fuzzy_only_for_person_names(self) -> None:
        """Non-PN keys keep their own matching under fuzzymatching=true."""
        query = parse([("fuzzymatching", "true"), ("PatientID", "Doe*")], Level.STUDY)
        assert [(k.matching, k.values) for k in query.keys] == [(Matching.WILDCARD, ("Doe%",))]

    def test_false_accepted(self) -> None:
        """fuzzymatching=false is exact matching."""
        query = parse([("fuzzymatching", "false"), ("PatientName", "Doe^Jo")], Level.STUDY)
        assert query.fuzzy is False
        assert [(k.matching, k.values) for k in query.keys] == [(Matching.SINGLE, ("doe^jo",))]

    @pytest.mark.parametrize("value", ["maybe", "", "1", "yes"])
    def test_other_values_refused(self, value: str) -> None:
        """fuzzymatching takes true or false only: anything else is a 400 naming it."""
        assert "fuzzymatching" in refused([("fuzzymatching", value)]).detail


class TestModalitiesInStudy:
    """ModalitiesInStudy: the study matches when any of its series' modalities match."""

    def test_single(self) -> None:
        """One modality is single value matching."""
        match = key("ModalitiesInStudy", "CT")
        assert (match.matching, match.values) == (Matching.SINGLE, ("CT",))

    @pytest.mark.parametrize("value", ["CT\\MR", "CT,MR"])
    def test_list(self, value: str) -> None:
        """A list by backslash or comma matches studies with any of the modalities."""
        match = key("ModalitiesInStudy", value)
        assert (match.matching, match.values) == (Matching.LIST, ("CT", "MR"))

    def test_wildcard(self) -> None:
        """A wildcard becomes a LIKE pattern."""
        match = key("ModalitiesInStudy", "M?")
        assert (match.matching, match.values) == (Matching.WILDCARD, ("M_",))

    def test_by_tag(self) -> None:
        """(0008,0061) names ModalitiesInStudy."""
        assert key("00080061", "CT").attribute.keyword == "ModalitiesInStudy"


class TestIncludeField:
    """includefield (PS3.18 §8.3.4.3): extra attributes to return, or ``all``."""

    def test_repeated(self) -> None:
        """Repeated includefield parameters accumulate."""
        query = parse([("includefield", "StudyDescription"), ("includefield", "00080060")], Level.STUDY)
        assert query.includes == frozenset({"StudyDescription", "Modality"})

    def test_comma_separated_tags(self) -> None:
        """``00081030,00080060`` (already percent-decoded by the caller) names two attributes by tag."""
        query = parse([("includefield", "00081030,00080060")], Level.STUDY)
        assert query.includes == frozenset({"StudyDescription", "Modality"})

    def test_spaces_around_commas(self) -> None:
        """Spaces around commas and empty items are tolerated."""
        query = parse([("includefield", " PatientAge , ,00101020")], Level.STUDY)
        assert query.includes == frozenset({"PatientAge", "PatientSize"})

    def test_percent_encoding_is_the_callers_job(self) -> None:
        """parse() does not decode: a still-encoded comma is an unknown name, a 400 naming includefield."""
        assert "includefield" in refused([("includefield", "00081030%2C00080060")]).detail

    def test_all(self) -> None:
        """``all`` asks for every attribute, alongside any named ones."""
        query = parse([("includefield", "all"), ("includefield", "PatientAge")], Level.STUDY)
        assert query.include_all is True
        assert query.includes == frozenset({"PatientAge"})

    def test_any_dictionary_attribute(self) -> None:
        """An attribute the index lacks can still be returned (from the stored metadata)."""
        assert parse([("includefield", "InstitutionName")], Level.STUDY).includes == frozenset({"InstitutionName"})

    def test_private_tag(self) -> None:
        """A private attribute has no keyword: it is kept as its upper-case tag."""
        assert parse([("includefield", "0009101a")], Level.STUDY).includes == frozenset({"0009101A"})

    @pytest.mark.parametrize("value", ["StudyDescriptio", "0010001G", "StudyDescription,Bogus"])
    def test_unknown_refused(self, value: str) -> None:
        """An unknown keyword or malformed tag is a 400 naming includefield."""
        assert "includefield" in refused([("includefield", value)]).detail

    def test_includefield_is_not_a_key(self) -> None:
        """includefield adds no condition and is not reported as ignored."""
        query = parse([("includefield", "StudyDescription")], Level.STUDY)
        assert (query.keys, query.ignored, query.universal) == ((), (), frozenset())


class TestLimitOffset:
    """limit and offset (PS3.18 §8.3.4.4): non-negative integers."""

    @pytest.mark.parametrize("name", ["limit", "offset"])
    @pytest.mark.parametrize("value", ["0", "1", "101", "0000025"])
    def test_accepted(self, name: str, value: str) -> None:
        """Non-negative integers, leading zeros included, are taken as numbers."""
        assert getattr(parse([(name, value)], Level.STUDY), name) == int(value)

    def test_huge_value_is_capped(self) -> None:
        """A value past any real result count is capped, not an error, and stays a valid SQL integer."""
        assert parse([("offset", "9" * 40)], Level.STUDY).offset == 2**31 - 1

    @pytest.mark.parametrize("name", ["limit", "offset"])
    @pytest.mark.parametrize("value", ["-1", "abc", "1.5", "\u0663", "", "+1", " 1", "1e3", "\u00b2"])
    def test_refused(self, name: str, value: str) -> None:
        """Negative, non-numeric, fractional or non-ASCII-digit values (Arabic-Indic ٣) are a 400 naming it."""
        assert name in refused([(name, value)]).detail


class TestHostileValues:
    """Values that are hostile to SQL or to the server are kept literal or refused."""

    @pytest.mark.parametrize("value", ["O'Brien", 'a"b', "x'; DROP TABLE study; --", "a\\b", "100%", "a_b"])
    def test_kept_verbatim(self, value: str) -> None:
        """Quotes, backslashes, ``%`` and ``_`` are data: a single value carries them unchanged (the SQL binds it)."""
        match = key("PatientID", value)
        assert (match.matching, match.values) == (Matching.SINGLE, (value,))

    def test_hostile_wildcard(self) -> None:
        """In a wildcard value, the LIKE metacharacters of the user are escaped; only ``*``/``?`` are wild."""
        assert key("PatientID", "'%_\\*").values == ("'\\%\\_\\\\%",)

    def test_longest_value_accepted(self) -> None:
        """A value of exactly the maximum length is accepted."""
        assert key("StudyDescription", "a" * MAX_VALUE_LENGTH).values == ("a" * MAX_VALUE_LENGTH,)

    @pytest.mark.parametrize("name", ["StudyDescription", "includefield", "limit", "InstitutionName"])
    def test_too_long_refused(self, name: str) -> None:
        """A value over 1024 characters is refused (not truncated), naming the parameter, whatever the parameter."""
        detail = refused([(name, "a" * (MAX_VALUE_LENGTH + 1))]).detail
        assert name in detail
        assert len(detail) < 200

    @pytest.mark.parametrize("name", ["PatientID", "PatientName", "StudyDate", "includefield"])
    def test_nul_refused(self, name: str) -> None:
        """A NUL byte in a value is a 400 naming the parameter."""
        assert name in refused([(name, "a\x00b")]).detail

    def test_nul_in_name_refused(self) -> None:
        """A NUL byte in a parameter name is no keyword: a 400."""
        refused([("Patient\x00Name", "a")])


class TestOhifStudyList:
    """The exact parameters the OHIF v3 study list sends."""

    def test_study_list_query(self) -> None:
        """limit=101&offset=0&fuzzymatching=false&includefield=…&PatientName=*smith*&00100020=*123*&StudyDate=…&
        ModalitiesInStudy=CT parses to exactly these conditions, with nothing ignored."""
        params = [
            ("limit", "101"),
            ("offset", "0"),
            ("fuzzymatching", "false"),
            ("includefield", "00081030,00080060"),
            ("PatientName", "*smith*"),
            ("00100020", "*123*"),
            ("StudyDate", "19700102-20261129"),
            ("ModalitiesInStudy", "CT"),
        ]
        query = parse(params, Level.STUDY)
        assert (query.limit, query.offset, query.fuzzy, query.include_all) == (101, 0, False, False)
        assert query.includes == frozenset({"StudyDescription", "Modality"})
        assert (query.ignored, query.universal) == ((), frozenset())
        assert [(k.attribute.keyword, k.matching, k.values, k.parameter) for k in query.keys] == [
            ("PatientName", Matching.WILDCARD, ("%smith%",), "PatientName"),
            ("PatientID", Matching.WILDCARD, ("%123%",), "00100020"),
            ("StudyDate", Matching.RANGE, (datetime.date(1970, 1, 2), datetime.date(2026, 11, 29)), "StudyDate"),
            ("ModalitiesInStudy", Matching.SINGLE, ("CT",), "ModalitiesInStudy"),
        ]
