"""Read side of the archive index: QIDO-RS SELECTs built from a ``query.Query``.

Every value reaches PostgreSQL as a bound parameter; LIKE patterns come escaped from ``query.like_pattern``.
Results come in one stable order, newest study first: StudyDate and StudyTime descending (unknown last), then
StudyInstanceUID; within a study, SeriesNumber then SeriesInstanceUID; within a series, InstanceNumber then
SOPInstanceUID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ..attributes import AGGREGATES, ATTRIBUTES, Attribute, Level
from ..query import LEVEL_ORDER, Matching, MatchKey, Query, like_escape, like_literals, like_pattern

SUFFIX_LENGTH = 32  # characters of each name suffix kept in patient_name_suffix (schema.sql)
ALIAS = {Level.PATIENT: "p", Level.STUDY: "st", Level.SERIES: "se", Level.INSTANCE: "i"}
FROM = {
    Level.STUDY: "study st JOIN patient p ON p.pk = st.patient_pk",
    Level.SERIES: "series se JOIN study st ON st.pk = se.study_pk JOIN patient p ON p.pk = st.patient_pk",
    Level.INSTANCE: (
        "instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk "
        "JOIN patient p ON p.pk = st.patient_pk"
    ),
}
_STUDY_ORDER = "st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.study_instance_uid"
_SERIES_ORDER = _STUDY_ORDER + ", se.series_number NULLS LAST, se.series_instance_uid"
ORDER = {
    Level.STUDY: _STUDY_ORDER,
    Level.SERIES: _SERIES_ORDER,
    Level.INSTANCE: _SERIES_ORDER + ", i.instance_number NULLS LAST, i.sop_instance_uid",
}
# One instance's metadata stands for its series or study, for returning attributes that are not indexed.
METADATA = {
    Level.STUDY: (
        "(SELECT i.metadata FROM series s2 JOIN instance i ON i.series_pk = s2.pk "
        "WHERE s2.study_pk = st.pk ORDER BY s2.series_number NULLS LAST, i.instance_number NULLS LAST LIMIT 1)"
    ),
    Level.SERIES: (
        "(SELECT i.metadata FROM instance i WHERE i.series_pk = se.pk ORDER BY i.instance_number NULLS LAST LIMIT 1)"
    ),
    Level.INSTANCE: "i.metadata",
}


@dataclass
class _Sql:
    params: list[Any]

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"


def column(attribute: Attribute) -> str:
    return f"{ALIAS[attribute.level]}.{attribute.column}"


def returned_attributes(level: Level) -> list[Attribute]:
    """The indexed and computed attributes a search at ``level`` can return from columns."""
    depth = LEVEL_ORDER.index(level)
    return [a for a in (*ATTRIBUTES, *AGGREGATES) if LEVEL_ORDER.index(a.level) <= depth]


def _condition(key: MatchKey, sql: _Sql) -> str:
    attribute = key.attribute
    col = column(attribute) + ("_folded" if attribute.kind == "pn" else "")
    values = key.values
    if key.matching is Matching.SINGLE:
        if attribute.kind == "text_list":  # @> and && can use the GIN index on the array column
            return f"{col} @> ARRAY[{sql.bind(values[0])}]::text[]"
        if attribute.kind == "pn":
            # The whole name, or its alphabetic group when the stored name has ideographic/phonetic groups.
            whole, first_group = sql.bind(values[0]), sql.bind(like_pattern(values[0]) + "=%")
            return f"({col} = {whole} OR {col} LIKE {first_group})"
        return f"{col} = {sql.bind(values[0])}"
    if key.matching is Matching.LIST:
        if attribute.kind == "text_list":
            return f"{col} && {sql.bind(list(values))}::text[]"
        return f"{col} = ANY({sql.bind(list(values))}::text[])"
    if key.matching is Matching.WILDCARD:
        if attribute.kind == "text_list":
            return f"EXISTS (SELECT 1 FROM unnest({col}) AS v(x) WHERE v.x LIKE {sql.bind(values[0])})"
        condition = f"{col} LIKE {sql.bind(values[0])}"
        literals = like_literals(values[0])
        if attribute.keyword == "PatientName" and literals and values[0][:1] in ("%", "_"):
            # A leading wildcard defeats the btree on the name; find candidates by the longest literal run
            # through the suffix table, and keep the LIKE as the exact check.
            condition += " AND " + _by_suffix(max(literals, key=len), word_start=False, sql=sql)
        return condition
    if key.matching is Matching.FUZZY:
        # Every query word starts a component of the name (after ^, =, space or -), in any order.
        if attribute.keyword == "PatientName":
            conditions = [_by_suffix(word, word_start=True, sql=sql) for word in values]
            long_words = [word for word in values if len(word) > SUFFIX_LENGTH]
        else:
            conditions, long_words = [], list(values)
        conditions += [f"{col} ~ {sql.bind('(^|[ ^=-])' + _regex_literal(word))}" for word in long_words]
        return " AND ".join(conditions)
    low, high = values
    parts = []
    if low is not None:
        parts.append(f"{col} >= {sql.bind(low)}")
    if high is not None:
        parts.append(f"{col} <= {sql.bind(high)}")
    return " AND ".join(parts)


def _by_suffix(text: str, word_start: bool, sql: _Sql) -> str:
    """Patients whose folded name has a suffix starting with ``text`` (schema.sql: patient_name_suffix)."""
    prefix = sql.bind(like_escape(text[:SUFFIX_LENGTH]) + "%")
    start = " AND word_start" if word_start else ""
    return f"p.pk IN (SELECT patient_pk FROM patient_name_suffix WHERE suffix LIKE {prefix}{start})"


def _regex_literal(word: str) -> str:
    """``word`` as a literal inside a PostgreSQL regular expression."""
    return "".join(f"\\{c}" if not c.isalnum() else c for c in word)


def _combined_datetime(keys: list[MatchKey], sql: _Sql) -> str | None:
    """StudyDate and StudyTime ranges together match as one date-time range (PS3.4 §C.2.2.2.5.1)."""
    by_keyword = {k.attribute.keyword: k for k in keys}
    date, time = by_keyword.get("StudyDate"), by_keyword.get("StudyTime")
    if date is None or time is None or date.matching is not Matching.RANGE or time.matching is not Matching.RANGE:
        return None
    keys.remove(date)
    keys.remove(time)
    parts = []
    (date_low, date_high), (time_low, time_high) = date.values, time.values
    stamp = "(st.study_date, coalesce(st.study_time, time '00:00'))"
    for date_bound, time_bound, operator in ((date_low, time_low, ">="), (date_high, time_high, "<=")):
        if date_bound is None:
            continue
        if time_bound is None:
            parts.append(f"st.study_date {operator} {sql.bind(date_bound)}")
        else:
            parts.append(f"{stamp} {operator} ({sql.bind(date_bound)}, {sql.bind(time_bound)})")
    return " AND ".join(parts) if parts else "TRUE"


def _where(query: Query, sql: _Sql) -> str:
    keys = list(query.keys)
    conditions = []
    combined = _combined_datetime(keys, sql)
    if combined:
        conditions.append(combined)
    conditions.extend(_condition(key, sql) for key in keys)
    return " AND ".join(f"({c})" for c in conditions) or "TRUE"


async def search(conn: asyncpg.Connection, query: Query, limit: int, with_metadata: bool) -> list[asyncpg.Record]:
    """The matching rows at ``query.level``: every returnable column, and one instance's metadata if asked."""
    sql = _Sql([])
    where = _where(query, sql)
    selected = [f"{column(a)} AS {a.column}" for a in returned_attributes(query.level)]
    if with_metadata:
        selected.append(f"{METADATA[query.level]} AS metadata")
    text = (
        f"SELECT {', '.join(selected)} FROM {FROM[query.level]} WHERE {where} "
        f"ORDER BY {ORDER[query.level]} LIMIT {sql.bind(limit)} OFFSET {sql.bind(query.offset)}"
    )
    return list(await conn.fetch(text, *sql.params))


async def count(conn: asyncpg.Connection, query: Query, bound: int) -> int:
    """How many rows match, counting no further than ``bound`` (to say how many a capped answer left out)."""
    sql = _Sql([])
    where = _where(query, sql)
    text = f"SELECT count(*) FROM (SELECT 1 FROM {FROM[query.level]} WHERE {where} LIMIT {sql.bind(bound)}) AS matches"
    return int(await conn.fetchval(text, *sql.params))
