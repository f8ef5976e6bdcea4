"""db/search.py: one compiled statement per query shape, every value a bound parameter, the indexes still usable.

QIDO-RS matching itself is tested over HTTP in tests/test_qido.py; here, what the SQLAlchemy Core building adds.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from dicomweb.attributes import Level
from dicomweb.db import search
from dicomweb.db.pool import ensure_schema
from dicomweb.query import Query, parse

from .conftest import _admin, _with_database, run

Params = list[tuple[str, str]]


def query(params: Params, level: Level = Level.STUDY) -> Query:
    return parse(params, level)


def placeholders(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"\$(\d+)", text)}


# One query of each matching (PS3.4 §C.2.2.2) and level: (parameters, level, a value that must not be in the SQL).
SHAPES: list[tuple[Params, Level, str]] = [
    ([("PatientID", "P-0017")], Level.STUDY, "P-0017"),
    ([("PatientName", "müller^hans")], Level.STUDY, "muller"),
    ([("PatientName", "mül*")], Level.STUDY, "mul"),
    ([("PatientName", "*ülle?*")], Level.STUDY, "ulle"),
    ([("PatientName", "hans mül"), ("fuzzymatching", "true")], Level.STUDY, "hans"),
    ([("PatientName", "x" * 40), ("fuzzymatching", "true")], Level.STUDY, "xxxx"),
    ([("ReferringPhysicianName", "hou greg"), ("fuzzymatching", "true")], Level.STUDY, "greg"),
    ([("StudyInstanceUID", "1.2.3.4,1.2.3.5")], Level.STUDY, "1.2.3.4"),
    ([("StudyDate", "20200101-20201231")], Level.STUDY, "2020"),
    ([("StudyDate", "-20201231"), ("StudyTime", "1015-")], Level.STUDY, "2020"),
    ([("ModalitiesInStudy", "MR")], Level.STUDY, "MR"),
    ([("ModalitiesInStudy", "MR\\CT")], Level.STUDY, "MR"),
    ([("ModalitiesInStudy", "M*")], Level.STUDY, "M%"),
    ([("AccessionNumber", "ACC_1%")], Level.STUDY, "ACC"),
    ([("Modality", "SEG"), ("SeriesNumber", "7"), ("offset", "3")], Level.SERIES, "SEG"),
    ([("RequestAttributesSequence.ScheduledProcedureStepID", "SPS-9")], Level.SERIES, "SPS-9"),
    ([("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"), ("InstanceNumber", "12")], Level.INSTANCE, "1.2.840"),
]


class TestShapes:
    """Statements compiled once per query shape; values only ever bound."""

    @pytest.mark.parametrize(("params", "level", "value"), SHAPES)
    def test_values_are_parameters(self, params: Params, level: Level, value: str) -> None:
        """No value is written into the SQL; each $n has its argument."""
        for text, arguments in (
            search.search_statement(query(params, level), 101, with_metadata=True),
            search.count_statement(query(params, level), 1000),
        ):
            assert value not in text
            assert placeholders(text) == set(range(1, len(arguments) + 1))

    def test_same_shape_compiled_once(self) -> None:
        """Two queries that differ only in their values share one compiled text, with their own arguments."""
        first = search.search_statement(query([("PatientName", "*mül*"), ("StudyDate", "20200101-")]), 101, False)
        second = search.search_statement(query([("PatientName", "*dvo*"), ("StudyDate", "19990101-")]), 5, False)
        assert first[0] is second[0]
        assert first[1] != second[1]

    def test_list_length_is_not_shape(self) -> None:
        """A UID or value list is one array parameter, whatever its length (PS3.4 §C.2.2.2.2)."""
        two = search.search_statement(query([("ModalitiesInStudy", "CT\\MR")]), 101, False)
        three = search.search_statement(query([("ModalitiesInStudy", "CT\\MR\\US")]), 101, False)
        assert two[0] is three[0]
        assert three[1][-2:] == [["CT", "MR", "US"], 101]

    @pytest.mark.parametrize(
        ("one", "other"),
        [
            ([("PatientName", "mül*")], [("PatientName", "*mül")]),  # a leading wildcard adds the suffix table
            ([("StudyDate", "20200101-")], [("StudyDate", "20200101-20211231")]),  # which range ends are given
            ([("PatientName", "a b"), ("fuzzymatching", "true")], [("PatientName", "a"), ("fuzzymatching", "true")]),
            ([("offset", "0")], [("offset", "10")]),
        ],
    )
    def test_shapes_differ(self, one: Params, other: Params) -> None:
        """What changes the SQL is part of the shape."""
        assert (
            search.search_statement(query(one), 101, False)[0] != search.search_statement(query(other), 101, False)[0]
        )

    def test_cache_is_bounded(self) -> None:
        """Shapes come from the request, so the cache of compiled statements has a size limit."""
        assert search._compiled_search.cache_info().maxsize == search.SHAPES_CACHED
        assert search._compiled_count.cache_info().maxsize == search.SHAPES_CACHED


PATIENTS = "INSERT INTO patient (patient_id, patient_name, patient_name_folded) VALUES ($1, $2, $3) RETURNING pk"
STUDY = """INSERT INTO study (patient_pk, study_instance_uid, study_date, study_time, accession_number,
    modalities_in_study) VALUES ($1, $2, $3::text::date, $4::text::time, $5, $6) RETURNING pk"""
SERIES = (
    "INSERT INTO series (study_pk, series_instance_uid, modality, series_number) VALUES ($1, $2, $3, 1) RETURNING pk"
)
INSTANCE = """INSERT INTO instance (series_pk, sop_instance_uid, sop_class_uid, instance_number, transfer_syntax_uid,
    file_path, file_size, file_sha256, metadata) VALUES ($1, $2, '1.2.840.10008.5.1.4.1.1.2', 1, '1.2.840.10008.1.2.1',
    'f', 1, '', $3::jsonb)"""
# (PatientID, PatientName, folded name, StudyInstanceUID, StudyDate, StudyTime, AccessionNumber, Modality)
ROWS = [
    ("P1", "Müller^Hans", "muller^hans", "1.1", "2020-03-15", "10:00", "ACC1", "CT"),
    ("P2", "Dvořák^Antonín", "dvorak^antonin", "1.2", "2010-06-01", None, "ACC2", "MR"),
    ("P3", "Mueller^Anna", "mueller^anna", "1.3", "2021-01-01", "23:00", "ACC3", "CT"),
]

# Other patients and studies around them (none matches a test's keys), so that the planner weighs an index against
# a scan as it would in an archive.
FILLER = """
WITH p AS (
    INSERT INTO patient (patient_id, patient_name, patient_name_folded)
    SELECT 'F' || n, 'Filler' || n || '^Other', 'filler' || n || '^other' FROM generate_series(1, 2000) AS n
    RETURNING pk, patient_id)
INSERT INTO study (patient_pk, study_instance_uid, study_date, accession_number, modalities_in_study)
SELECT pk, '2.' || substr(patient_id, 2), date '1990-01-01' + substr(patient_id, 2)::int, patient_id, '{OT}' FROM p"""


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    """A database made by schema.sql holding the three studies of ROWS, among 2,000 others."""

    async def fill(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await ensure_schema(conn)
            for patient_id, name, folded, study_uid, date, time, accession, modality in ROWS:
                patient_pk = await conn.fetchval(PATIENTS, patient_id, name, folded)
                study_pk = await conn.fetchval(STUDY, patient_pk, study_uid, date, time, accession, [modality])
                series_pk = await conn.fetchval(SERIES, study_pk, study_uid + ".1", modality)
                metadata = {"00080050": {"vr": "SH", "Value": [accession]}}
                await conn.execute(INSTANCE, series_pk, study_uid + ".1.1", json.dumps(metadata))
            await conn.execute(FILLER)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    name = f"test_{uuid.uuid4().hex[:12]}"
    run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        url = _with_database(postgres_url, name)
        run(fill(url))
        yield url
    finally:
        run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _search(url: str, queries: list[Query], with_metadata: bool) -> list[list[dict[str, Any]]]:
    conn = await asyncpg.connect(url, server_settings={"plan_cache_mode": "force_custom_plan"})
    try:
        return [[dict(r) for r in await search.search(conn, q, 101, with_metadata)] for q in queries]
    finally:
        await conn.close()


class TestSearch:
    """search() and count() on a real database: the arguments land on their own $n."""

    def test_each_request_binds_its_own_values(self, database: str) -> None:
        """Queries of one shape, run one after another on one connection, each find their own study; the metadata
        subquery's constant (its LIMIT 1) comes before the values in the SQL and does not shift them."""
        queries = [
            query([("PatientName", "*ller*"), ("StudyDate", "20200101-20201231"), ("AccessionNumber", "ACC*")]),
            query([("PatientName", "*vor*"), ("StudyDate", "20100101-20101231"), ("AccessionNumber", "ACC*")]),
            query([("PatientName", "*ller*"), ("StudyDate", "20210101-20211231"), ("AccessionNumber", "ACC*")]),
        ]
        results = run(_search(database, queries, with_metadata=True))
        assert [[r["study_instance_uid"] for r in rows] for rows in results] == [["1.1"], ["1.2"], ["1.3"]]
        assert [json.loads(rows[0]["metadata"])["00080050"]["Value"] for rows in results] == [
            ["ACC1"],
            ["ACC2"],
            ["ACC3"],
        ]

    def test_combined_date_time(self, database: str) -> None:
        """StudyDate + StudyTime ranges match as one date-time range (PS3.4 §C.2.2.2.5.1): from 22:00 on the first
        day to 09:00 on the last, so 10:00 on a day between matches."""
        combined = [("StudyDate", "20200101-20210101"), ("StudyTime", "2200-0900")]
        [rows] = run(_search(database, [query(combined)], False))
        assert [r["study_instance_uid"] for r in rows] == ["1.1"]

    def test_order_and_offset(self, database: str) -> None:
        """Newest study first, the study without a time after those of later dates; an offset skips."""
        ours = [("AccessionNumber", "ACC*")]
        results = run(_search(database, [query(ours), query([*ours, ("offset", "1")])], False))
        assert [[r["study_instance_uid"] for r in rows] for rows in results] == [["1.3", "1.1", "1.2"], ["1.1", "1.2"]]

    def test_count(self, database: str) -> None:
        """count() binds its bound after the conditions' values."""

        async def counts() -> list[int]:
            conn = await asyncpg.connect(database)
            try:
                return [
                    await search.count(conn, query([("ModalitiesInStudy", "CT")]), 1000),
                    await search.count(conn, query([("ModalitiesInStudy", "CT")]), 1),
                    await search.count(conn, query([("ModalitiesInStudy", "US\\MR")]), 1000),
                ]
            finally:
                await conn.close()

        assert run(counts()) == [2, 1, 1]


def _index_conditions(plan: dict[str, Any], found: dict[str, bool]) -> dict[str, bool]:
    """Each index of a plan, and whether it is searched by a condition (not only walked for order)."""
    if "Index Name" in plan:
        found[plan["Index Name"]] = found.get(plan["Index Name"], False) or "Index Cond" in plan
    for child in plan.get("Plans", []):
        _index_conditions(child, found)
    return found


class TestIndexes:
    """The statements leave PostgreSQL its indexes (schema.sql): among 2,000 other studies, each typical query of
    benchmarks/qido.py searches the index meant for it (the LIKE prefix on the folded name, the suffix table, the
    GIN on the array, the date order index)."""

    @pytest.mark.parametrize(
        ("params", "index"),
        [
            ([("PatientName", "mul*")], "patient_name_folded"),
            ([("PatientName", "*ull*")], "patient_name_suffix_prefix"),
            ([("PatientName", "hans mul"), ("fuzzymatching", "true")], "patient_name_suffix_prefix"),
            ([("PatientID", "P1")], "patient_id_pattern|patient_identity"),  # either btree on patient_id
            ([("StudyDate", "20200101-20201231")], "study_date_order"),
            ([("StudyDate", "20200101-20201231"), ("StudyTime", "0900-")], "study_date_order"),
            ([("ModalitiesInStudy", "MR")], "study_modalities"),
            ([("ModalitiesInStudy", "MR,CT")], "study_modalities"),
            ([("AccessionNumber", "ACC1")], "study_accession_number"),
            ([("StudyInstanceUID", "1.1")], "study_study_instance_uid_key"),
        ],
    )
    def test_index_searched(self, database: str, params: Params, index: str) -> None:
        """The index has an index condition in the plan of the search and of the count."""

        async def plans() -> list[dict[str, Any]]:
            settings = {"plan_cache_mode": "force_custom_plan"}
            conn = await asyncpg.connect(database, server_settings=settings)
            try:
                found = []
                for text, arguments in (
                    search.search_statement(query(params), 101, with_metadata=False),
                    search.count_statement(query(params), 1000),
                ):
                    found.append(json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + text, *arguments))[0])
                return found
            finally:
                await conn.close()

        for plan in run(plans()):
            searched = _index_conditions(plan["Plan"], {})
            assert any(searched.get(name) for name in index.split("|")), plan
