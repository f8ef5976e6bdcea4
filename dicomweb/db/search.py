"""Read side of the archive index: QIDO-RS SELECTs built from a ``query.Query`` with SQLAlchemy Core.

The SQL of a search depends on the *shape* of its query only (level, each key's attribute and matching and which
of its parts are present, the metadata column, whether there is an offset), never on its values. ``_terms`` splits
a query into its shape and its values; each shape is built from the tables (db/tables.py) and compiled for asyncpg
once (``_compiled_search`` and ``_compiled_count``, LRU caches); a request then costs computing its shape and its
list of values, which asyncpg binds to the $n parameters. LIKE patterns come escaped from ``query.like_pattern``.

Results come in one stable order, newest study first: StudyDate and StudyTime descending (unknown last), then
StudyInstanceUID; within a study, SeriesNumber then SeriesInstanceUID; within a series, InstanceNumber then
SOPInstanceUID.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    FromClause,
    Select,
    Text,
    and_,
    any_,
    bindparam,
    column,
    func,
    literal_column,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from ..attributes import AGGREGATES, ATTRIBUTES, Attribute, Level
from ..query import LEVEL_ORDER, QUERYABLE, Matching, MatchKey, Query, like_escape, like_literals, like_pattern
from .pool import Compiled, compile_statement
from .tables import instance, patient, patient_name_suffix, series, study

SUFFIX_LENGTH = 32  # characters of each name suffix kept in patient_name_suffix (schema.sql)
SHAPES_CACHED = 1024  # compiled statements kept (a few KB each); an older shape is compiled again when it returns

TABLE = {Level.PATIENT: patient, Level.STUDY: study, Level.SERIES: series, Level.INSTANCE: instance}
FROM: dict[Level, FromClause] = {
    Level.STUDY: study.join(patient, patient.c.pk == study.c.patient_pk),
    Level.SERIES: series.join(study, study.c.pk == series.c.study_pk).join(patient, patient.c.pk == study.c.patient_pk),
    Level.INSTANCE: instance.join(series, series.c.pk == instance.c.series_pk)
    .join(study, study.c.pk == series.c.study_pk)
    .join(patient, patient.c.pk == study.c.patient_pk),
}
_STUDY_ORDER = (
    study.c.study_date.desc().nulls_last(),
    study.c.study_time.desc().nulls_last(),
    study.c.study_instance_uid,
)
_SERIES_ORDER = (*_STUDY_ORDER, series.c.series_number.nulls_last(), series.c.series_instance_uid)
ORDER = {
    Level.STUDY: _STUDY_ORDER,
    Level.SERIES: _SERIES_ORDER,
    Level.INSTANCE: (*_SERIES_ORDER, instance.c.instance_number.nulls_last(), instance.c.sop_instance_uid),
}
# One instance's metadata stands for its series or study, for returning attributes that are not indexed.
METADATA: dict[Level, ColumnElement[Any]] = {
    Level.STUDY: select(instance.c["metadata"])
    .select_from(series.join(instance, instance.c.series_pk == series.c.pk))
    .where(series.c.study_pk == study.c.pk)
    .order_by(series.c.series_number.nulls_last(), instance.c.instance_number.nulls_last())
    .limit(1)
    .scalar_subquery(),
    Level.SERIES: select(instance.c["metadata"])
    .where(instance.c.series_pk == series.c.pk)
    .order_by(instance.c.instance_number.nulls_last())
    .limit(1)
    .scalar_subquery(),
    Level.INSTANCE: instance.c["metadata"],
}

# What the SQL of one condition depends on: the attribute's keyword, its matching, and details of the values that
# change the SQL (which range ends are given, how many fuzzy words...), never the values themselves.
Shape = tuple[Any, ...]  # hashable: a cache key
_DATE_TIME = "StudyDate+StudyTime"  # the first item of the shape of a combined date-time range
Bind = Callable[..., BindParameter[Any]]  # the next bind parameter, optionally typed


@dataclass(frozen=True, slots=True)
class Term:
    """One condition of a search: its shape, and its values in the order its SQL binds them (``clause``)."""

    shape: Shape
    values: tuple[Any, ...]


def column_of(attribute: Attribute) -> ColumnElement[Any]:
    """The column an attribute matches against (the folded one for a person name)."""
    return TABLE[attribute.level].c[attribute.column + ("_folded" if attribute.kind == "pn" else "")]


def returned_attributes(level: Level) -> list[Attribute]:
    """The indexed and computed attributes a search at ``level`` can return from columns."""
    depth = LEVEL_ORDER.index(level)
    return [a for a in (*ATTRIBUTES, *AGGREGATES) if LEVEL_ORDER.index(a.level) <= depth]


# ------------------------------------------------------------------------------- a query -> its shape and values


def _terms(query: Query) -> list[Term]:
    """The conditions of ``query`` (PS3.4 §C.2.2.2), each as a shape and its values."""
    keys = list(query.keys)
    terms = []
    combined = _combined_datetime(keys)
    if combined is not None:
        terms.append(combined)
    terms.extend(term(key) for key in keys)
    return terms


def term(key: MatchKey, suffixes: bool = True) -> Term:
    """One key's condition as its shape and values; ``suffixes``: a PatientName is matched through the archive's
    name suffix table (a worklist's names have none)."""
    attribute, matching, values = key.attribute, key.matching, key.values
    keyword = attribute.keyword
    if matching is Matching.SINGLE:
        if attribute.kind == "text_list":
            return Term((keyword, matching), ([values[0]],))
        if attribute.kind == "pn":  # the whole name, or its alphabetic group (then "=" and the other groups)
            return Term((keyword, matching), (values[0], like_pattern(values[0]) + "=%"))
        return Term((keyword, matching), (values[0],))
    if matching is Matching.LIST:  # one array parameter, whatever the number of values (C.2.2.2.2)
        return Term((keyword, matching), (list(values),))
    if matching is Matching.WILDCARD:  # C.2.2.2.4
        pattern = values[0]
        literals = like_literals(pattern)
        if keyword == "PatientName" and suffixes and literals and pattern[:1] in ("%", "_"):
            # A leading wildcard defeats the btree on the name: candidates come from the suffix table by the
            # longest literal run, and the LIKE stays the exact check.
            prefix = like_escape(max(literals, key=len)[:SUFFIX_LENGTH]) + "%"
            return Term((keyword, matching, True), (pattern, prefix))
        return Term((keyword, matching, False), (pattern,))
    if matching is Matching.FUZZY:
        # Every query word starts a component of the name (after ^, =, space or -), in any order (PS3.18 §8.3.4.6).
        if keyword == "PatientName" and suffixes:
            by_suffix = [like_escape(word[:SUFFIX_LENGTH]) + "%" for word in values]
            long_words = [word for word in values if len(word) > SUFFIX_LENGTH]
        else:
            by_suffix, long_words = [], list(values)
        regexes = ["(^|[ ^=-])" + _regex_literal(word) for word in long_words]
        return Term((keyword, matching, len(by_suffix), len(regexes)), (*by_suffix, *regexes))
    low, high = values  # C.2.2.2.5: a range, open at one end or neither
    return Term((keyword, matching, low is not None, high is not None), tuple(v for v in values if v is not None))


def _combined_datetime(keys: list[MatchKey]) -> Term | None:
    """StudyDate and StudyTime ranges together match as one date-time range (PS3.4 §C.2.2.2.5.1); removes both
    keys from ``keys``."""
    by_keyword = {k.attribute.keyword: k for k in keys}
    date, time = by_keyword.get("StudyDate"), by_keyword.get("StudyTime")
    if date is None or time is None or date.matching is not Matching.RANGE or time.matching is not Matching.RANGE:
        return None
    keys.remove(date)
    keys.remove(time)
    shape: list[Any] = [_DATE_TIME]
    values: list[Any] = []
    for date_bound, time_bound in zip(date.values, time.values, strict=True):  # low ends, then high ends
        shape.append((date_bound is not None, time_bound is not None))
        if date_bound is not None:
            values.append(date_bound)
            if time_bound is not None:
                values.append(time_bound)
    return Term(tuple(shape), tuple(values))


def _regex_literal(word: str) -> str:
    """``word`` as a literal inside a PostgreSQL regular expression."""
    return "".join(f"\\{c}" if not c.isalnum() else c for c in word)


# ------------------------------------------------------------------------------------ a shape -> SQLAlchemy Core


def clause(
    shape: Shape,
    bind: Bind,
    attributes: dict[str, Attribute] = QUERYABLE,
    column_for: Callable[[Attribute], ColumnElement[Any]] = column_of,
) -> ColumnElement[bool]:
    """The condition of one term, binding its values in ``term``'s order; ``attributes`` and ``column_for`` say
    where a keyword's values are (the archive's tables, or the worklist's: db/worklist.py)."""
    if shape[0] == _DATE_TIME:
        return _combined_clause(shape, bind)
    keyword, matching = shape[0], shape[1]
    attribute = attributes[keyword]
    col = column_for(attribute)
    if matching is Matching.SINGLE:
        if attribute.kind == "text_list":  # @> can use the GIN index on the array column
            return col.contains(bind(col.type))
        if attribute.kind == "pn":
            return or_(col == bind(), col.like(bind()))
        return col == bind()
    if matching is Matching.LIST:
        if attribute.kind == "text_list":
            overlap: ColumnElement[bool] = col.overlap(bind(col.type))  # &&, also through the GIN index
            return overlap
        return col == any_(bind(ARRAY(col.type)))
    if matching is Matching.WILDCARD:
        if attribute.kind == "text_list":
            item = func.unnest(col).table_valued(column("x", Text)).render_derived(name="v")
            return select(literal_column("1")).select_from(item).where(item.c.x.like(bind())).exists()
        condition = col.like(bind())
        return and_(condition, _by_suffix(bind(), word_start=False)) if shape[2] else condition
    if matching is Matching.FUZZY:
        by_suffix, regexes = shape[2], shape[3]
        conditions = [_by_suffix(bind(), word_start=True) for _ in range(by_suffix)]
        conditions += [col.regexp_match(bind()) for _ in range(regexes)]
        return and_(*conditions)
    low, high = shape[2], shape[3]
    parts = []
    if low:
        parts.append(col >= bind())
    if high:
        parts.append(col <= bind())
    return and_(*parts)


def _combined_clause(shape: Shape, bind: Bind) -> ColumnElement[bool]:
    """(StudyDate, StudyTime) compared as one value with each given end; a study without a time counts as 00:00."""
    date, time = study.c.study_date, study.c.study_time
    stamp = tuple_(date, func.coalesce(time, literal_column("time '00:00'")))
    parts = []
    for (has_date, has_time), low in zip(shape[1:], (True, False), strict=True):
        if not has_date:
            continue
        if has_time:
            bounds = tuple_(bind(date.type), bind(time.type))
            parts.append(stamp >= bounds if low else stamp <= bounds)
        else:
            parts.append(date >= bind() if low else date <= bind())
    return and_(*parts) if parts else true()


def _by_suffix(prefix: BindParameter[Any], word_start: bool) -> ColumnElement[bool]:
    """Patients whose folded name has a suffix starting with ``prefix`` (schema.sql: patient_name_suffix)."""
    suffixes = select(patient_name_suffix.c.patient_pk).where(patient_name_suffix.c.suffix.like(prefix))
    if word_start:
        suffixes = suffixes.where(patient_name_suffix.c.word_start)
    return patient.c.pk.in_(suffixes)


class Binds:
    """Bind parameters named v0, v1, ... in the order a statement's values come."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, type_: TypeEngine[Any] | None = None) -> BindParameter[Any]:
        self.names.append(f"v{len(self.names)}")
        return bindparam(self.names[-1], type_=type_)


def _where(statement: Select[Any], shapes: tuple[Shape, ...], bind: Binds) -> Select[Any]:
    return statement.where(*(clause(shape, bind) for shape in shapes))


@functools.lru_cache(maxsize=SHAPES_CACHED)
def _compiled_search(level: Level, shapes: tuple[Shape, ...], with_metadata: bool, offset: bool) -> Compiled:
    bind = Binds()
    selected: list[ColumnElement[Any]] = [
        TABLE[a.level].c[a.column].label(a.column) for a in returned_attributes(level)
    ]
    if with_metadata:
        selected.append(METADATA[level].label("metadata"))
    statement = _where(select(*selected).select_from(FROM[level]), shapes, bind).order_by(*ORDER[level])
    statement = statement.limit(bind())
    if offset:
        statement = statement.offset(bind())
    return compile_statement(statement, bind.names)


@functools.lru_cache(maxsize=SHAPES_CACHED)
def _compiled_count(level: Level, shapes: tuple[Shape, ...]) -> Compiled:
    bind = Binds()
    matches = _where(select(literal_column("1")).select_from(FROM[level]), shapes, bind).limit(bind())
    return compile_statement(select(func.count()).select_from(matches.subquery("matches")), bind.names)


# ---------------------------------------------------------------------------------------------------- the queries


def search_statement(query: Query, limit: int, with_metadata: bool) -> tuple[str, list[Any]]:
    """The SQL text and arguments ``search`` runs: the text is compiled once per shape, the arguments are new."""
    terms = _terms(query)
    offset = query.offset > 0
    compiled = _compiled_search(query.level, tuple(t.shape for t in terms), with_metadata, offset)
    values = [v for t in terms for v in t.values] + [limit] + ([query.offset] if offset else [])
    return compiled.text, compiled.arguments(values)


def count_statement(query: Query, bound: int) -> tuple[str, list[Any]]:
    """The SQL text and arguments ``count`` runs."""
    terms = _terms(query)
    compiled = _compiled_count(query.level, tuple(t.shape for t in terms))
    return compiled.text, compiled.arguments([v for t in terms for v in t.values] + [bound])


async def search(conn: asyncpg.Connection, query: Query, limit: int, with_metadata: bool) -> list[asyncpg.Record]:
    """The matching rows at ``query.level``: every returnable column, and one instance's metadata if asked."""
    text, arguments = search_statement(query, limit, with_metadata)
    return list(await conn.fetch(text, *arguments))


async def count(conn: asyncpg.Connection, query: Query, bound: int) -> int:
    """How many rows match, counting no further than ``bound`` (to say how many a capped answer left out)."""
    text, arguments = count_statement(query, bound)
    return int(await conn.fetchval(text, *arguments))
