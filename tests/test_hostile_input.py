"""Hostile input on every DICOMweb route family, over a raw socket so that nothing normalises the request first:
path traversal in UIDs, SQL metacharacters in every QIDO-RS and WADO-URI parameter. Each answer is 400 (or 404
where no route matches, or an empty search result), never 500, in the one error shape; and the archive is
unharmed afterwards. Hostile tokens (malformed, oversized, alg=none, expired, foreign, unknown roles) are in
tests/test_auth.py, the STOW-RS body limits in tests/test_multipart.py and tests/test_stow.py."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from pydicom.uid import generate_uid

from dicomweb.app import all_routes
from dicomweb.attributes import SEQUENCE_PARENT, Level
from dicomweb.query import QUERYABLE
from dicomweb.routing import Route, leaves

from .conftest import LiveServer, shared_server, store
from .data import ct_instance, stow_headers

ARCHIVE_TABLES = ("patient", "study", "series", "instance")
PATIENT_NAME = "O'Brien^Róisín"  # a quote in a real value: it must match literally, not break the query

# Path segments standing in for a UID; each is sent byte for byte as written here.
TRAVERSALS = {
    "dotdot": "..",
    "dot": ".",
    "dotdot-path": "../../../../etc/passwd",
    "uid-then-dotdot": "1.2.3/../../../../etc/passwd",
    "encoded-dotdot": "%2e%2e",
    "encoded-path": "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "double-encoded": "%252e%252e%252f%252e%252e%252fetc",
    "backslashes": "..\\..\\..\\windows\\win.ini",
    "encoded-backslashes": "..%5c..%5c..%5cwindows%5cwin.ini",
    "absolute": "/etc/passwd",
    "encoded-absolute": "%2fetc%2fpasswd",
    "nul": "1.2.3%00.dcm",
    "tilde": "~root",
    "overlong-utf8-dot": "%c0%ae%c0%ae%c0%af",
}

# Query values (as they are decoded by the server); sent percent-encoded, except those in RAW_VALUES.
SQL = {
    "quote": "'",
    "or-true": "' OR '1'='1",
    "drop": "x'; DROP TABLE study; --",
    "comment": "--",
    "semicolon": ";",
    "nul": "\x00",
    "backslash": "\\",
    "backslashes": "\\\\\\",
    "percent": "%",
    "underscore": "_",
    "like-escape": "\\%",
    "wildcard-or": "*' OR 1=1 --",
    "double-quote": '"',
    "sleep": "1'; SELECT pg_sleep(10); --",
    "dollar-quote": "$$ OR 1=1 $$",
    "placeholder": "$1",
    "parentheses": "') OR ('a'='a",
    "unicode-quote": "Ü' OR 'ü'='ü",
    "regex": ".*",
    "long": "'" * 2000,
    "newline": "a\r\nSet-Cookie: x=1",
}
RAW_VALUES = {"invalid-utf8": "%FF%FE%27", "bare-percent": "%", "half-escape": "%2"}
VALUES = {**{name: quote(value, safe="") for name, value in SQL.items()}, **RAW_VALUES}
NOT_LATIN1 = ("invalid-utf8",)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Archive:
    """The module's server and the one instance stored in it."""

    server: LiveServer
    study: str
    series: str
    sop: str

    def request(self, method: str, target: str, headers: dict[str, str] | None = None) -> Answer:
        """One request with ``target`` sent exactly as given (http.client does not normalise it)."""
        connection = http.client.HTTPConnection(self.server.url.removeprefix("http://"), timeout=60)
        try:
            connection.request(method, target, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def counts(self) -> tuple[Any, ...]:
        """Rows per archive table and the tables there are: what an injection would change."""
        tables = self.server.db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        names = tuple(row[0] for row in tables)
        rows = tuple(self.server.db.value(f"SELECT count(*) FROM {name}") for name in ARCHIVE_TABLES)
        return names, rows

    def assert_unharmed(self, before: tuple[Any, ...]) -> None:
        assert self.counts() == before
        found = self.request("GET", f"/dicomweb/studies?PatientName={quote(PATIENT_NAME)}")
        assert found.status == 200 and len(found.json()) == 1
        assert len(list((self.server.data_dir / "files").rglob("*.dcm"))) == 1


@pytest.fixture(scope="module")
def archive(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    with shared_server(postgres_url, tmp_path_factory.mktemp("hostile")) as server:
        study, series, sop = str(generate_uid()), str(generate_uid()), str(generate_uid())
        store(server, [ct_instance(study, series, sop_instance_uid=sop, patient_name=PATIENT_NAME)])
        yield Archive(server, study, series, sop)


def assert_error_shape(answer: Answer, context: object) -> None:
    assert answer.headers["content-type"] == "application/json", context
    body = answer.json()
    assert set(body) == {"status", "error", "detail"} and body["status"] == answer.status, (context, body)
    assert isinstance(body["detail"], str) and body["detail"], context


def routes_with_uids() -> list[tuple[str, str]]:
    """Every DICOMweb route whose path carries a UID (or a frame list or bulk data path)."""
    return sorted(
        (route.method, template)
        for template, route in leaves(all_routes())
        if isinstance(route, Route) and "{StudyInstanceUID}" in template
    )


PLACEHOLDERS = re.compile(r"\{(StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID|frames|path:path)\}")


def fill(template: str, values: dict[str, str]) -> str:
    return PLACEHOLDERS.sub(lambda match: values[match.group(1)], template)


class TestPathTraversal:
    """A UID segment of every route, replaced by a traversal attempt: 400 or 404, never a file, never 500."""

    @pytest.mark.parametrize(("method", "template"), routes_with_uids())
    def test_route(self, archive: Archive, method: str, template: str) -> None:
        """Each placeholder of the route in turn, every traversal; the others are the stored instance's."""
        before = archive.counts()
        valid = {
            "StudyInstanceUID": archive.study,
            "SeriesInstanceUID": archive.series,
            "SOPInstanceUID": archive.sop,
            "frames": "1",
            "path:path": "7FE00010",
        }
        headers = stow_headers() if method == "POST" else {}
        for position in PLACEHOLDERS.findall(template):
            for name, traversal in TRAVERSALS.items():
                target = fill(template, {**valid, position: traversal})
                answer = archive.request(method, target, headers)
                context = (method, target, name, answer.body[:200])
                assert answer.status in (400, 404, 405), context
                assert_error_shape(answer, context)
        archive.assert_unharmed(before)

    @pytest.mark.parametrize("parameter", ["studyUID", "seriesUID", "objectUID", "transferSyntax"])
    def test_wado_uri(self, archive: Archive, parameter: str) -> None:
        """WADO-URI's UID parameters: 400 naming the parameter."""
        before = archive.counts()
        for name, traversal in TRAVERSALS.items():
            params = {"studyUID": archive.study, "seriesUID": archive.series, "objectUID": archive.sop}
            query = "&".join(f"{k}={v}" for k, v in params.items() if k != parameter)
            target = f"/wado?requestType=WADO&contentType=application/dicom&{query}&{parameter}={traversal}"
            answer = archive.request("GET", target)
            context = (target, name, answer.body[:200])
            assert answer.status == 400, context
            assert_error_shape(answer, context)
            assert parameter in answer.json()["detail"], context
        archive.assert_unharmed(before)


def search_parameters() -> list[tuple[str, str]]:
    """(search route, parameter) for every attribute QIDO-RS matches, at its own level, and the reserved ones."""
    route_of = {Level.PATIENT: "studies", Level.STUDY: "studies", Level.SERIES: "series", Level.INSTANCE: "instances"}
    pairs = []
    for keyword, attribute in sorted(QUERYABLE.items()):
        name = f"{SEQUENCE_PARENT[keyword]}.{keyword}" if keyword in SEQUENCE_PARENT else keyword
        pairs.append((route_of[attribute.level], name))
    pairs += [("studies", "00100010"), ("series", "0020000E")]  # by tag
    pairs += [(route, reserved) for route in ("studies", "instances") for reserved in RESERVED]
    return pairs


RESERVED = ("limit", "offset", "fuzzymatching", "includefield")


class TestSQLMetacharacters:
    """SQL metacharacters in every QIDO-RS and WADO-URI parameter: 400 or no match, never 500; nothing changes."""

    @pytest.mark.parametrize("payload", VALUES)
    def test_qido_values(self, archive: Archive, payload: str) -> None:
        """The payload as the value of every search parameter, at every level, also within the stored study."""
        before = archive.counts()
        for route, parameter in search_parameters():
            for base in (f"/dicomweb/{route}", f"/dicomweb/studies/{archive.study}/{route}"):
                if base.endswith("/studies"):
                    continue  # a study-scoped study search is a retrieve, not a search
                target = f"{base}?{parameter}={VALUES[payload]}"
                answer = archive.request("GET", target)
                context = (target, answer.status, answer.body[:300])
                assert answer.status in (200, 400), context
                if answer.status == 200:
                    assert answer.json() == [] or parameter in RESERVED, context
                else:
                    assert_error_shape(answer, context)
        archive.assert_unharmed(before)

    @pytest.mark.parametrize("payload", VALUES)
    def test_qido_names(self, archive: Archive, payload: str) -> None:
        """The payload as a parameter name, alone and after a keyword: 400 (unknown attribute)."""
        for name in (VALUES[payload], "PatientName." + VALUES[payload], VALUES[payload] + ".PatientID"):
            answer = archive.request("GET", f"/dicomweb/studies?{name}=x")
            assert answer.status == 400, (name, answer.body[:200])
            assert_error_shape(answer, name)

    @pytest.mark.parametrize("payload", VALUES)
    def test_wado_uri(self, archive: Archive, payload: str) -> None:
        """The payload in every WADO-URI parameter of a request for the stored instance."""
        before = archive.counts()
        valid = {
            "requestType": "WADO",
            "studyUID": archive.study,
            "seriesUID": archive.series,
            "objectUID": archive.sop,
        }
        for parameter in [*valid, *WADO_URI_OPTIONS]:
            query = "&".join(f"{k}={v}" for k, v in valid.items() if k != parameter)
            target = f"/wado?{query}&{parameter}={VALUES[payload]}"
            answer = archive.request("GET", target)
            context = (target, answer.status, answer.body[:300])
            if parameter in WADO_URI_IGNORED and payload != "nul":
                assert answer.status == 200 and answer.headers["content-type"] == "image/jpeg", context
                continue
            if parameter == "contentType" and payload in NOT_LATIN1:
                continue  # test_media_type_outside_latin1
            assert answer.status in (400, 406), context
            assert_error_shape(answer, context)
        archive.assert_unharmed(before)

    @pytest.mark.parametrize("parameter", ["contentType", "accept"])
    def test_media_type_outside_latin1(self, archive: Archive, parameter: str) -> None:
        """A media type parameter that is not latin-1 (invalid UTF-8 decodes to U+FFFD): 400 or 406."""
        uids = f"studyUID={archive.study}&seriesUID={archive.series}&objectUID={archive.sop}"
        answer = archive.request("GET", f"/wado?requestType=WADO&{uids}&{parameter}={RAW_VALUES['invalid-utf8']}")
        assert answer.status in (400, 406), answer.body[:200]
        assert_error_shape(answer, parameter)

    def test_quotes_match_literally(self, archive: Archive) -> None:
        """A quote in a value is an ordinary character: O'Brien* finds O'Brien^Róisín."""
        for value in ("O'Brien*", "o'brien^róisín", "*'Brien*"):
            answer = archive.request("GET", f"/dicomweb/studies?PatientName={quote(value)}")
            assert answer.status == 200 and len(answer.json()) == 1, value


# PS3.18 Table 9.1.2-1 and §9.5.1.2: the optional parameters of WADO-URI.
WADO_URI_OPTIONS = (
    "contentType", "charset", "anonymize", "annotation", "rows", "columns", "region", "windowCenter", "windowWidth",
    "frameNumber", "imageQuality", "presentationUID", "presentationSeriesUID", "transferSyntax",
)  # fmt: skip
WADO_URI_IGNORED = ("charset", "annotation", "presentationUID", "presentationSeriesUID", "transferSyntax")
