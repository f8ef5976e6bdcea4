"""QIDO-RS (PS3.18 §10.6) against a real server over HTTP, on a small archive of known studies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from dicomweb.attributes import Level
from dicomweb.services import search

from .conftest import LiveServer, shared_server
from .data import CHARSET_FILES, ct_instance, multipart, stow_headers


@dataclass
class Archive:
    """The known content: UIDs by name."""

    server: LiveServer
    studies: dict[str, str]
    series: dict[str, str]
    instances: dict[str, list[str]]

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.server.dicomweb + path, params=params, timeout=30)

    def studies_of(self, response: httpx.Response) -> list[str]:
        """The names of the studies in a response, in response order."""
        names = {uid: name for name, uid in self.studies.items()}
        assert response.status_code == 200, response.text
        return [names.get(r["0020000D"]["Value"][0], "?") for r in response.json()]


STUDIES: dict[str, dict[str, Any]] = {
    # name: study attributes; series: list of (modality, series number, instance count, extra attributes)
    "A": {"PatientName": "Müller^Hans", "PatientID": "P001", "StudyDate": "20240315", "StudyTime": "101500",
          "AccessionNumber": "ACC-A", "StudyDescription": "CT Chest", "ReferringPhysicianName": "Smith^John",
          "series": [("CT", 1, 3, {"InstitutionName": "Hôpital Nord"}), ("MR", 2, 2, {})]},
    "B": {"PatientName": "Mueller^Anna", "PatientID": "P002", "StudyDate": "20240101", "StudyTime": "235900",
          "AccessionNumber": "ACC_B%", "StudyDescription": "O'Brien 100% _test_", "series": [("CR", 1, 1, {})]},
    "C": {"PatientName": "Dvořák^Antonín", "PatientID": "P003", "StudyDate": "20231231", "StudyTime": "080000",
          "AccessionNumber": "ACC-C", "StudyDescription": "Abdomen", "series": [("US", 1, 1, {})]},
    "D": {"PatientName": "Müller^Hans", "PatientID": "P001", "StudyDate": "20200607", "StudyTime": "090000",
          "AccessionNumber": "ACC-D", "StudyDescription": "CT Head", "series": [("CT", 3, 1, {})]},
    "F": {"PatientName": "Anonymous", "PatientID": None, "StudyDate": None, "StudyTime": None,
          "AccessionNumber": "ACC-F", "StudyDescription": "No date", "series": [("OT", None, 1, {})]},
}  # fmt: skip


@pytest.fixture(scope="module")
def archive(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    with shared_server(postgres_url, tmp_path_factory.mktemp("qido")) as server:
        studies: dict[str, str] = {}
        series: dict[str, str] = {}
        instances: dict[str, list[str]] = {}
        for study_name, spec in STUDIES.items():
            study = studies[study_name] = str(generate_uid())
            attributes = {k: v for k, v in spec.items() if k != "series"}
            parts = []
            for modality, number, count, extra in spec["series"]:
                series_name = f"{study_name}{number or 0}"
                series_uid = series[series_name] = str(generate_uid())
                instances[series_name] = []
                for index in range(count):
                    sop = str(generate_uid())
                    instances[series_name].append(sop)
                    parts.append(
                        ct_instance(study, series_uid, sop_instance_uid=sop, Modality=modality, SeriesNumber=number,
                                    InstanceNumber=count - index, **{**attributes, **extra})
                    )  # fmt: skip
            response = httpx.post(server.dicomweb + "/studies", content=multipart(parts), headers=stow_headers())
            assert response.status_code == 200, response.text
        charset = [(CHARSET_FILES / n).read_bytes() for n in ("chrX1.dcm", "chrH31.dcm", "chrGerm.dcm")]
        assert httpx.post(server.dicomweb + "/studies", content=multipart(charset), headers=stow_headers()).is_success
        yield Archive(server, studies, series, instances)


def values(result: dict[str, Any], tag: str) -> list[Any]:
    return list(result.get(tag, {}).get("Value", []))


class TestStudies:
    """GET /studies: attributes, order and counts."""

    def test_required_attributes_and_counts(self, archive: Archive) -> None:
        """Each result has the PS3.18 Table 10.6.3-3 attributes, computed counts and an absolute RetrieveURL."""
        response = archive.get("/studies", StudyInstanceUID=archive.studies["A"])
        assert response.headers["content-type"] == "application/dicom+json"
        [study] = response.json()
        for tag in ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190", "00100010",
                    "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208"):  # fmt: skip
            assert tag in study, tag
        assert values(study, "00080061") == ["CT", "MR"]
        assert values(study, "00201206") == [2]
        assert values(study, "00201208") == [5]
        assert values(study, "00100010") == [{"Alphabetic": "Müller^Hans"}]
        assert values(study, "00080020") == ["20240315"] and values(study, "00080030") == ["101500"]
        assert values(study, "00081190") == [f"{archive.server.dicomweb}/studies/{archive.studies['A']}"]
        assert values(study, "00080056") == ["ONLINE"]
        assert study["00200010"] == {"vr": "SH"}  # Type 2: present without a value

    def test_newest_first(self, archive: Archive) -> None:
        """Newest study first, studies without a date last."""
        order = archive.studies_of(archive.get("/studies", AccessionNumber="ACC*"))
        assert order == ["A", "B", "C", "D", "F"]

    def test_no_match_is_an_empty_list(self, archive: Archive) -> None:
        """No match: 200 with [] (PS3.18 Table 11.9.3-1)."""
        response = archive.get("/studies", PatientID="nobody")
        assert response.status_code == 200 and response.json() == []


class TestPersonNames:
    """PN matching: case- and accent-insensitive; fuzzy matching by component prefix."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("muller*", ["A", "D"]),
            ("*MÜLLER*", ["A", "D"]),
            ("m?ller^h*", ["A", "D"]),
            ("Müller^Hans", ["A", "D"]),
            ("muller^hans", ["A", "D"]),
            ("mueller*", ["B"]),
            ("dvorak*", ["C"]),
            ("*ANTONIN", ["C"]),
            ("müller", []),
        ],
    )
    def test_wildcard_and_single(self, archive: Archive, value: str, expected: list[str]) -> None:
        """Users type without accents or case; a single value matches the whole name only (PS3.4 C.2.2.2.1)."""
        assert archive.studies_of(archive.get("/studies", PatientName=value)) == expected

    @pytest.mark.parametrize(
        ("value", "expected"), [("hans", ["A", "D"]), ("HANS mul", ["A", "D"]), ("ann mue", ["B"]), ("ans", [])]
    )
    def test_fuzzy(self, archive: Archive, value: str, expected: list[str]) -> None:
        """fuzzymatching=true: every word starts a name component, in any order."""
        response = archive.get("/studies", PatientName=value, fuzzymatching="true")
        assert archive.studies_of(response) == expected

    def test_fuzzymatching_false_accepted(self, archive: Archive) -> None:
        """OHIF sends fuzzymatching=false explicitly."""
        assert archive.studies_of(archive.get("/studies", PatientName="dvo*", fuzzymatching="false")) == ["C"]

    def test_non_ascii_names(self, archive: Archive) -> None:
        """Ideographic and phonetic groups from ISO 2022 and UTF-8 data match too."""
        for value in ("*小東*", "wang*", "*やまだ*", "yamada^tarou", "äneas*", "aneas*"):
            response = archive.get("/studies", PatientName=value)
            assert len(response.json()) == 1, value
        [result] = archive.get("/studies", PatientName="yamada*").json()
        assert values(result, "00100010") == [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ]


class TestMatching:
    """Single value, list, wildcard, range and combined date-time matching (PS3.4 C.2.2.2)."""

    def test_patient_id_by_tag(self, archive: Archive) -> None:
        """00100020= as OHIF sends it."""
        assert archive.studies_of(archive.get("/studies", **{"00100020": "P001"})) == ["A", "D"]

    def test_uid_lists(self, archive: Archive) -> None:
        """UID lists separated by backslash or comma."""
        a, c = archive.studies["A"], archive.studies["C"]
        assert archive.studies_of(archive.get("/studies", StudyInstanceUID=f"{a}\\{c}")) == ["A", "C"]
        assert archive.studies_of(archive.get("/studies", StudyInstanceUID=f"{c},{a}")) == ["A", "C"]

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("20240101-20240331", ["A", "B"]),
            ("-20231231", ["C", "D"]),
            ("20240101-", ["A", "B"]),
            ("20231231", ["C"]),
        ],
    )
    def test_study_date_ranges(self, archive: Archive, value: str, expected: list[str]) -> None:
        """Closed and open date ranges."""
        assert archive.studies_of(archive.get("/studies", StudyDate=value)) == expected

    def test_combined_date_time_range(self, archive: Archive) -> None:
        """StudyDate and StudyTime ranges together are one date-time range (PS3.4 C.2.2.2.5.1)."""
        response = archive.get("/studies", StudyDate="20240101-20240315", StudyTime="235000-101000")
        assert archive.studies_of(response) == ["B"]  # Jan 1 23:59 is in; Mar 15 10:15 is after 10:10

    def test_time_range_alone(self, archive: Archive) -> None:
        """A StudyTime range on its own matches the time of day."""
        assert archive.studies_of(archive.get("/studies", StudyTime="0800-0930")) == ["C", "D"]

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("MR", ["A"]), ("CT\\MR", ["A", "D"]), ("CT,US", ["A", "C", "D"]), ("C*", ["A", "B", "D"])],
    )
    def test_modalities_in_study(self, archive: Archive, value: str, expected: list[str]) -> None:
        """ModalitiesInStudy: single, list, wildcard."""
        assert archive.studies_of(archive.get("/studies", ModalitiesInStudy=value)) == expected

    def test_like_characters_are_literals(self, archive: Archive) -> None:
        """% and _ in a value are matched literally; only * and ? are wildcards."""
        assert archive.studies_of(archive.get("/studies", AccessionNumber="ACC_B%")) == ["B"]
        assert archive.studies_of(archive.get("/studies", AccessionNumber="ACC_*")) == ["B"]
        assert archive.studies_of(archive.get("/studies", AccessionNumber="ACC%")) == []
        assert archive.studies_of(archive.get("/studies", StudyDescription="O'Brien 100% _test_")) == ["B"]

    def test_referring_physician(self, archive: Archive) -> None:
        """Other PN attributes match the same way."""
        assert archive.studies_of(archive.get("/studies", ReferringPhysicianName="smith*")) == ["A"]

    @pytest.mark.parametrize("value", ["x' OR '1'='1", "\\", "%", "_", "a" * 1000, '"; DROP TABLE study; --'])
    def test_hostile_values(self, archive: Archive, value: str) -> None:
        """Quotes, backslashes, LIKE characters and long values are data, never SQL."""
        for name in ("PatientName", "PatientID", "StudyDescription", "AccessionNumber"):
            response = archive.get("/studies", **{name: value})
            assert response.status_code == 200 and response.json() == [], (name, value)
        assert len(archive.get("/studies").json()) == 8

    def test_nul_byte(self, archive: Archive) -> None:
        """A NUL byte in a value is refused."""
        response = archive.get("/studies", PatientID="P001\x00")
        assert response.status_code == 400 and "PatientID" in response.json()["detail"]


class TestSeriesAndInstances:
    """Series and instance searches, scoped and not."""

    def test_series_of_a_study(self, archive: Archive) -> None:
        """Ordered by SeriesNumber, with NumberOfSeriesRelatedInstances and the study UID."""
        results = archive.get(f"/studies/{archive.studies['A']}/series").json()
        assert [values(r, "0020000E")[0] for r in results] == [archive.series["A1"], archive.series["A2"]]
        assert [values(r, "00201209") for r in results] == [[3], [2]]
        assert [values(r, "00080060") for r in results] == [["CT"], ["MR"]]
        assert all(values(r, "0020000D") == [archive.studies["A"]] for r in results)
        assert "00100010" not in results[0]  # scoped to a study: no study attributes
        url = values(results[0], "00081190")[0]
        assert url.endswith(f"/studies/{archive.studies['A']}/series/{archive.series['A1']}")

    def test_series_filter_on_study_attribute(self, archive: Archive) -> None:
        """/series with a patient key returns the series of all that patient's studies, with study attributes."""
        results = archive.get("/series", PatientID="P001").json()
        assert sorted(values(r, "0020000E")[0] for r in results) == sorted(
            [archive.series["A1"], archive.series["A2"], archive.series["D3"]]
        )
        assert values(results[0], "00100010") == [{"Alphabetic": "Müller^Hans"}]

    def test_series_modality(self, archive: Archive) -> None:
        """Modality matches at series level."""
        results = archive.get(f"/studies/{archive.studies['A']}/series", Modality="MR").json()
        assert [values(r, "0020000E")[0] for r in results] == [archive.series["A2"]]

    def test_instances_of_a_series(self, archive: Archive) -> None:
        """Ordered by InstanceNumber; RetrieveURL names the instance."""
        study, series = archive.studies["A"], archive.series["A1"]
        results = archive.get(f"/studies/{study}/series/{series}/instances").json()
        assert [values(r, "00200013")[0] for r in results] == [1, 2, 3]
        assert sorted(values(r, "00080018")[0] for r in results) == sorted(archive.instances["A1"])
        assert values(results[0], "00280010") == [64]
        assert values(results[0], "00081190")[0].startswith(f"{archive.server.dicomweb}/studies/{study}/series/")

    def test_instances_of_a_study_and_all(self, archive: Archive) -> None:
        """/studies/{S}/instances and /instances?SOPInstanceUID=."""
        assert len(archive.get(f"/studies/{archive.studies['A']}/instances").json()) == 5
        sop = archive.instances["C1"][0]
        [result] = archive.get("/instances", SOPInstanceUID=sop).json()
        assert values(result, "0020000D") == [archive.studies["C"]]
        assert values(result, "00100020") == ["P003"]  # not scoped: study attributes too

    def test_unknown_study_scope(self, archive: Archive) -> None:
        """A study that does not exist has no series: 200 []."""
        assert archive.get(f"/studies/{generate_uid()}/series").json() == []

    def test_invalid_uid_in_path(self, archive: Archive) -> None:
        """A path UID that is not a UID: 400 naming it."""
        response = archive.get("/studies/1.2.x/series")
        assert response.status_code == 400 and "StudyInstanceUID" in response.json()["detail"]


class TestIncludefield:
    """includefield: keywords, tags, comma lists, all, and attributes from the stored metadata."""

    def test_comma_separated_tags(self, archive: Archive) -> None:
        """OHIF's percent-encoded comma list; a series attribute is not returned on a study search."""
        url = (
            archive.server.dicomweb
            + f"/studies?includefield=00081030%2C00080060&StudyInstanceUID={archive.studies['A']}"
        )
        [study] = httpx.get(url).json()
        assert values(study, "00081030") == ["CT Chest"]
        assert "00080060" not in study

    def test_not_indexed_attribute_from_metadata(self, archive: Archive) -> None:
        """InstitutionName is not a column: it comes from the stored metadata."""
        [study] = archive.get("/studies", StudyInstanceUID=archive.studies["A"], includefield="InstitutionName").json()
        assert values(study, "00080080") == ["Hôpital Nord"]
        [series] = archive.get(f"/studies/{archive.studies['A']}/series", Modality="CT", includefield="00080080").json()
        assert values(series, "00080080") == ["Hôpital Nord"]

    def test_all_at_instance_level(self, archive: Archive) -> None:
        """includefield=all on instances returns the whole metadata, BulkDataURIs absolute."""
        sop = archive.instances["C1"][0]
        [result] = archive.get("/instances", SOPInstanceUID=sop, includefield="all").json()
        assert values(result, "00280100") == [16]
        bulk = result["7FE00010"]["BulkDataURI"]
        assert bulk.startswith(archive.server.dicomweb + "/studies/") and bulk.endswith(
            f"/instances/{sop}/bulk/7FE00010"
        )

    def test_unknown_includefield(self, archive: Archive) -> None:
        """An unknown keyword in includefield: 400 naming includefield."""
        response = archive.get("/studies", includefield="NotAKeyword")
        assert response.status_code == 400 and "includefield" in response.json()["detail"]


class TestPaging:
    """limit, offset, server cap."""

    def test_limit_and_offset(self, archive: Archive) -> None:
        """Pages follow the documented order without gaps or repeats."""
        everything = archive.studies_of(archive.get("/studies"))
        pages = [archive.studies_of(archive.get("/studies", limit=3, offset=o)) for o in (0, 3, 6)]
        assert sum(pages, []) == everything and len(everything) == 8

    def test_server_cap_warning(self, archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
        """A result cut by the server's cap says how many more there are."""
        monkeypatch.setitem(search.MAX_RESULTS, Level.STUDY, 3)
        response = archive.get("/studies")
        assert len(response.json()) == 3
        assert "There are 5 additional results that can be requested" in response.headers["warning"]
        assert "warning" not in archive.get("/studies", limit=2).headers

    @pytest.mark.parametrize(("name", "value"), [("limit", "-1"), ("offset", "x"), ("limit", "1.5")])
    def test_bad_paging(self, archive: Archive, name: str, value: str) -> None:
        """400 naming the parameter."""
        response = archive.get("/studies", **{name: value})
        assert response.status_code == 400 and name in response.json()["detail"]


class TestErrorsAndWarnings:
    """Bad queries get 400 naming the parameter; keys the archive cannot match get a Warning."""

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({"PatientNam": "x"}, "PatientNam"),
            ({"0010001G": "x"}, "0010001G"),
            ({"StudyDate": "20240230"}, "StudyDate"),
            ({"StudyDate": "2024-01-01"}, "StudyDate"),
            ({"StudyInstanceUID": "1.2.*"}, "StudyInstanceUID"),
            ({"fuzzymatching": "yes"}, "fuzzymatching"),
        ],
    )
    def test_bad_request(self, archive: Archive, params: dict[str, str], named: str) -> None:
        """The body names the offending parameter."""
        response = archive.get("/studies", **params)
        assert response.status_code == 400
        assert named in response.json()["detail"]

    def test_ignored_key_warns(self, archive: Archive) -> None:
        """A valid attribute that is not indexed is ignored with a Warning naming it, never silently."""
        response = archive.get("/studies", InstitutionName="X", PatientID="P003")
        assert archive.studies_of(response) == ["C"]
        assert "InstitutionName" in response.headers["warning"]

    @pytest.mark.parametrize(("accept", "status"), [("application/xml", 406), ("*/*", 200), ("application/json", 200)])
    def test_accept(self, archive: Archive, accept: str, status: int) -> None:
        """dicom+json, json and */* are served; others are 406."""
        response = httpx.get(archive.server.dicomweb + "/studies", headers={"Accept": accept})
        assert response.status_code == status


class TestClients:
    """Real clients' requests."""

    def test_ohif_study_list(self, archive: Archive) -> None:
        """The exact study-list request OHIF v3 sends."""
        query = (
            "limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060%2C00080090%2C00100030"
            "&PatientName=*m%C3%BCller*&00100020=*P00*&StudyDate=19700102-20261129"
        )
        response = httpx.get(f"{archive.server.dicomweb}/studies?{query}", headers={"Accept": "application/dicom+json"})
        assert archive.studies_of(response) == ["A", "D"]
        assert all(values(r, "00081030") for r in response.json())

    def test_ohif_by_study_uid_list_and_series(self, archive: Archive) -> None:
        """OHIF's StudyInstanceUID backslash list and its series request for the study browser."""
        uids = "\\".join([archive.studies["A"], archive.studies["B"]])
        response = archive.get("/studies", limit=101, offset=0, fuzzymatching="false", StudyInstanceUID=uids)
        assert archive.studies_of(response) == ["A", "B"]
        series = httpx.get(
            f"{archive.server.dicomweb}/studies/{archive.studies['A']}/series?includefield=00080021%2C00080031%2C0008103E%2C00200011"
        )
        assert series.status_code == 200 and len(series.json()) == 2

    def test_dicomweb_client(self, archive: Archive) -> None:
        """dicomweb-client's search methods."""
        client = DICOMwebClient(archive.server.dicomweb)
        found = client.search_for_studies(search_filters={"PatientID": "P002"})
        assert [r["0020000D"]["Value"][0] for r in found] == [archive.studies["B"]]
        assert len(client.search_for_series(archive.studies["A"])) == 2
        assert len(client.search_for_instances(archive.studies["A"], archive.series["A2"])) == 2
