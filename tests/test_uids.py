"""The UID grammar of PS3.5 §9.1: what may reach a file path or a query, and the 400 for what may not."""

from __future__ import annotations

import pytest

from dicomweb.errors import BadRequest
from dicomweb.uids import UID_MAX_LENGTH, is_valid_uid, require_uid

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"  # CT_small.dcm's StudyInstanceUID


class TestIsValidUid:
    """Digits and dots, no leading zeros, at most 64 characters."""

    @pytest.mark.parametrize(
        "value",
        [
            "1",
            "0",
            "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
            "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            CT_STUDY,
            "2.25.329800735698586629295641978511506172918",  # UUID-derived (PS3.5 §B.2)
            "1.0.2",  # a component that is exactly "0" is allowed
            "0.0.0",
        ],
    )
    def test_valid(self, value: str) -> None:
        """UIDs real archives and pydicom produce are accepted."""
        assert is_valid_uid(value)

    def test_64_characters_is_the_limit(self) -> None:
        """A UID of exactly 64 characters is valid; one more character makes it invalid."""
        uid = "1." + "2" * 62
        assert len(uid) == UID_MAX_LENGTH == 64
        assert is_valid_uid(uid)
        assert not is_valid_uid(uid + "3")

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "1.02",  # leading zero in a component
            "01.2",
            "00",
            "1..2",  # empty component
            ".1.2",
            "1.2.",
            "../../etc/passwd",
            "..",
            "1.2/3",
            "1.2\\3",
            "1.2.3\0",  # NUL padding must be stripped by the caller, never reach a path
            "1.2.3 ",
            " 1.2.3",
            "1.2.3\n",
            "1.2.abc",
            "1.2.3e5",
            "-1.2",
            "1.2.٣",  # ARABIC-INDIC DIGIT THREE: a Unicode digit, not an ASCII one
            "1.2,3",
            "1.2.3*",  # a QIDO wildcard is not a UID
        ],
    )
    def test_invalid(self, value: str) -> None:
        """Anything outside the grammar is rejected, including path tricks, NUL, whitespace and letters."""
        assert not is_valid_uid(value)


class TestRequireUid:
    """require_uid guards path and query parameters with a 400 that names the parameter."""

    def test_returns_a_valid_uid_unchanged(self) -> None:
        """A valid UID is returned as given, so it can be used inline."""
        assert require_uid(CT_STUDY, "StudyInstanceUID") == CT_STUDY

    @pytest.mark.parametrize("value", ["../../etc", "", "1.02", "1.2.3\0", "abc"])
    def test_invalid_raises_bad_request_naming_the_parameter(self, value: str) -> None:
        """The error is a 400 whose detail names the parameter and shows the offending value."""
        with pytest.raises(BadRequest) as caught:
            require_uid(value, "SeriesInstanceUID")
        assert caught.value.status == 400
        assert "SeriesInstanceUID" in caught.value.detail
        assert repr(value) in caught.value.detail

    def test_long_value_is_shortened_in_the_detail(self) -> None:
        """A huge value is cut in the message, so an attacker cannot make the error body (or the log) huge."""
        value = "1." * 5000
        with pytest.raises(BadRequest) as caught:
            require_uid(value, "StudyInstanceUID")
        assert "StudyInstanceUID" in caught.value.detail
        assert len(caught.value.detail) < 300
