"""Content-Type checks for STOW-RS (415 / 400) and Accept negotiation (406), as PS3.18 §8.7 and RFC 9110 decide."""

from __future__ import annotations

import pytest

from dicomweb.errors import BadRequest, NotAcceptable, UnsupportedMediaType
from dicomweb.media import DICOM, DICOM_JSON, JSON, MediaType, check_part_type, negotiate, stow_body

JSON_TYPES = (DICOM_JSON, JSON)


class TestStowBody:
    """stow_body accepts multipart/related of application/dicom, or a single application/dicom file."""

    @pytest.mark.parametrize(
        "content_type",
        [
            'multipart/related; type="application/dicom"; boundary=abc123',
            "multipart/related; type=application/dicom; boundary=abc123",
            'multipart/related; type="application/dicom"; boundary="abc123"',
            'multipart/related; boundary=abc123; type="application/dicom"',
            "multipart/related;boundary=abc123;type=application/dicom",
            'multipart/related ; type = "application/dicom" ; boundary = "abc123"',
        ],
    )
    def test_quoting_and_parameter_order(self, content_type: str) -> None:
        """Quoted or bare values, in any order, with or without spaces, give the same boundary."""
        assert stow_body(content_type).boundary == b"abc123"

    @pytest.mark.parametrize(
        "content_type",
        [
            'Multipart/Related; Type="Application/DICOM"; Boundary=abc123',
            "MULTIPART/RELATED; TYPE=APPLICATION/DICOM; BOUNDARY=abc123",
        ],
    )
    def test_names_are_case_insensitive(self, content_type: str) -> None:
        """Media types and parameter names match whatever their case (RFC 9110 §8.3.1)."""
        assert stow_body(content_type).boundary == b"abc123"

    def test_boundary_keeps_its_case(self) -> None:
        """The boundary value is case-sensitive: lower-casing it would never find the delimiter in the body."""
        assert stow_body('multipart/related; type="application/dicom"; boundary=AbCdEf').boundary == b"AbCdEf"

    @pytest.mark.parametrize(
        ("boundary", "expected"),
        [
            ("2c1f0a6a9b3e4d5f8a7b6c5d4e3f2a1b", b"2c1f0a6a9b3e4d5f8a7b6c5d4e3f2a1b"),  # requests-toolbelt uuid4().hex
            ('"0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"', b"0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"),  # dicomweb-client
            ("----=_Part_0_123.456", b"----=_Part_0_123.456"),  # JavaMail (dcm4che's stowrs)
            ('"----=_Part_0_123.456"', b"----=_Part_0_123.456"),
            ("------------------------d74496d66958873e", b"------------------------d74496d66958873e"),  # curl
            ('"DCMTK boundary 1"', b"DCMTK boundary 1"),  # quoted, with spaces
            ('"\'()+_,-./:=? end"', b"'()+_,-./:=? end"),  # every bchars character of RFC 2046 §5.1.1
            ('"a;b"', b"a;b"),  # a separator inside quotes is part of the value
        ],
    )
    def test_boundaries_real_clients_send(self, boundary: str, expected: bytes) -> None:
        """The boundary comes back exactly as the client will write it between parts."""
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        assert stow_body(content_type).boundary == expected

    def test_70_character_boundary_is_the_limit(self) -> None:
        """RFC 2046 allows 70 characters; 71 is a 400, not a 415."""
        ok = "b" * 70
        assert stow_body(f'multipart/related; type="application/dicom"; boundary={ok}').boundary == ok.encode()
        with pytest.raises(BadRequest):
            stow_body(f'multipart/related; type="application/dicom"; boundary={ok}b')

    @pytest.mark.parametrize(
        "content_type",
        [
            'multipart/related; type="application/dicom"',
            'multipart/related; type="application/dicom"; boundary=""',
            "multipart/related",
        ],
    )
    def test_missing_boundary_is_bad_request(self, content_type: str) -> None:
        """The media type is right but the body cannot be framed: 400 that says the boundary is missing."""
        with pytest.raises(BadRequest) as caught:
            stow_body(content_type)
        assert caught.value.status == 400
        assert "boundary" in caught.value.detail

    def test_missing_type_parameter_is_tolerated(self) -> None:
        """RFC 2387 requires type=, but clients omit it; each part's own Content-Type is checked instead."""
        assert stow_body("multipart/related; boundary=abc").boundary == b"abc"

    @pytest.mark.parametrize(
        "part_type", ["application/dicom+json", "application/dicom+xml", "application/octet-stream"]
    )
    def test_wrong_type_parameter_is_unsupported(self, part_type: str) -> None:
        """Only PS3.10 instances are stored: other part types are a 415 naming the type sent."""
        with pytest.raises(UnsupportedMediaType) as caught:
            stow_body(f'multipart/related; type="{part_type}"; boundary=abc')
        assert caught.value.status == 415
        assert part_type in caught.value.detail

    def test_wrong_type_is_reported_before_missing_boundary(self) -> None:
        """An unsupported type is a 415 even when the boundary is missing too."""
        with pytest.raises(UnsupportedMediaType):
            stow_body('multipart/related; type="application/dicom+json"')

    @pytest.mark.parametrize(
        "content_type",
        ["application/dicom", "Application/DICOM", "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"],
    )
    def test_single_dicom_file(self, content_type: str) -> None:
        """A body that is one application/dicom file has no boundary."""
        assert stow_body(content_type).boundary is None

    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/json",
            DICOM_JSON,
            "multipart/form-data; boundary=abc",
            "multipart/mixed; boundary=a",
        ],
    )
    def test_other_media_types_are_unsupported(self, content_type: str) -> None:
        """Anything but multipart/related or application/dicom is a 415 that names what was sent."""
        with pytest.raises(UnsupportedMediaType) as caught:
            stow_body(content_type)
        assert caught.value.status == 415
        assert content_type.split(";")[0] in caught.value.detail

    @pytest.mark.parametrize("content_type", [None, ""])
    def test_missing_content_type_is_unsupported(self, content_type: str | None) -> None:
        """No Content-Type at all is a 415 that says what to send."""
        with pytest.raises(UnsupportedMediaType) as caught:
            stow_body(content_type)
        assert caught.value.status == 415
        assert DICOM in caught.value.detail


class TestCheckPartType:
    """Which parts of a multipart body may hold an instance."""

    @pytest.mark.parametrize("content_type", [None, "application/dicom", "Application/DICOM; transfer-syntax=1.2"])
    def test_dicom_parts(self, content_type: str | None) -> None:
        """application/dicom, in any case, or no Content-Type (the request's type applies)."""
        assert check_part_type(content_type)

    @pytest.mark.parametrize("content_type", ["application/dicom+json", "text/plain", "application/octet-stream"])
    def test_other_parts(self, content_type: str) -> None:
        """Any other part type is refused."""
        assert not check_part_type(content_type)


class TestMediaType:
    """Parsing of one media type or Accept range."""

    def test_parse(self) -> None:
        """Type and parameter names are lower-cased, values unquoted, q taken out of the parameters."""
        media = MediaType.parse('Multipart/Related; Type="application/dicom"; transfer-syntax=*; q=0.5')
        assert media.type == "multipart/related"
        assert media.params == {"type": "application/dicom", "transfer-syntax": "*"}
        assert media.quality == 0.5

    def test_unparsable_quality_is_zero(self) -> None:
        """A q that is not a number counts as not acceptable, not as q=1."""
        assert MediaType.parse("application/json; q=high").quality == 0.0


class TestNegotiate:
    """negotiate picks the first offered type the Accept header allows, best quality first, else 406."""

    @pytest.mark.parametrize("accept", [None, ""])
    def test_no_accept_gets_the_default(self, accept: str | None) -> None:
        """Without Accept the first offered type (the resource's default) is served."""
        assert negotiate(accept, JSON_TYPES) == DICOM_JSON

    @pytest.mark.parametrize("accept", ["*/*", "*", "application/*", "*/*; q=0.1"])
    def test_wildcards(self, accept: str) -> None:
        """*/*, a bare * (Java's default Accept), and application/* take the first offered type."""
        assert negotiate(accept, JSON_TYPES) == DICOM_JSON

    def test_exact_type(self) -> None:
        """A type named exactly is chosen even when it is not the default."""
        assert negotiate("application/json", JSON_TYPES) == JSON
        assert negotiate("APPLICATION/JSON", JSON_TYPES) == JSON

    def test_other_type_wildcard_does_not_match(self) -> None:
        """image/* does not cover application/json: 406."""
        with pytest.raises(NotAcceptable):
            negotiate("image/*", JSON_TYPES)

    def test_higher_quality_wins(self) -> None:
        """Quality decides, not the order in the header."""
        assert negotiate("application/dicom+json; q=0.5, application/json", JSON_TYPES) == JSON
        assert negotiate("application/json; q=0.4, application/dicom+json; q=0.9", JSON_TYPES) == DICOM_JSON

    def test_combined_list_from_a_browser(self) -> None:
        """A browser's Accept with unrelated types and a low-quality */* still gets the default."""
        accept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
        assert negotiate(accept, JSON_TYPES) == DICOM_JSON

    def test_combined_list_skips_unknown_types(self) -> None:
        """Types that are not offered are skipped in favour of one that is."""
        assert negotiate("text/html, application/xml, application/json;q=0.1", JSON_TYPES) == JSON

    def test_q_zero_is_not_acceptable(self) -> None:
        """q=0 refuses a type (RFC 9110 §12.4.2): the other offered type is served instead."""
        assert negotiate("application/dicom+json; q=0, application/json", JSON_TYPES) == JSON

    def test_only_q_zero_is_406(self) -> None:
        """When every acceptable type has q=0 nothing can be served."""
        with pytest.raises(NotAcceptable):
            negotiate("application/json; q=0, application/dicom+json; q=0", JSON_TYPES)

    def test_q_zero_beats_a_wildcard(self) -> None:
        """RFC 9110 §12.5.1: the most specific range decides, so "dicom+json;q=0, */*" must not get dicom+json."""
        assert negotiate("application/dicom+json; q=0, */*", JSON_TYPES) == JSON

    def test_type_wildcard_refusal_beats_a_full_wildcard(self) -> None:
        """application/* with q=0 is more specific than */*: both JSON types are refused, so 406."""
        with pytest.raises(NotAcceptable):
            negotiate("application/*; q=0, */*", JSON_TYPES)

    def test_exact_type_beats_a_refusing_type_wildcard(self) -> None:
        """An exact range outranks application/*;q=0 for its own type only."""
        assert negotiate("application/*; q=0, application/json", JSON_TYPES) == JSON

    def test_wildcard_quality_applies_to_types_not_named(self) -> None:
        """application/json;q=0.5 caps JSON, while */*;q=0.9 still covers DICOM JSON, which wins."""
        assert negotiate("application/json; q=0.5, */*; q=0.9", JSON_TYPES) == DICOM_JSON

    def test_equal_quality_goes_to_the_resource_preference(self) -> None:
        """With equal q the earlier offered type wins, whatever the order in the header."""
        assert negotiate("application/json, application/dicom+json", JSON_TYPES) == DICOM_JSON

    @pytest.mark.parametrize("accept", ["text/plain", "application/xml, image/jpeg", "multipart/related"])
    def test_nothing_fits_is_406(self, accept: str) -> None:
        """A 406 whose detail lists what the resource offers and what was asked."""
        with pytest.raises(NotAcceptable) as caught:
            negotiate(accept, JSON_TYPES)
        assert caught.value.status == 406
        assert DICOM_JSON in caught.value.detail
        assert accept in caught.value.detail
