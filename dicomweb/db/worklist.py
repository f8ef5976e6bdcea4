"""The Modality Worklist's query (PS3.4 Annex K): the scheduled procedure steps of the orders the reporting API
schedules (``radiology_study``, one step per order), matched by the same engine as QIDO-RS and C-FIND: ``query.py``
parses each key's value and ``db/search.py`` builds its condition, here on the order's columns instead of the
archive's tables. Like a search, the SQL depends on the query's shape only and is compiled once per shape.

Only orders that are ``scheduled`` (step status SCHEDULED) or ``in_progress`` (STARTED) are listed. Their start is
``scheduled_at`` as a date and time in ``DICOMWEB_TIMEZONE``; an order without one is matched by no date or time
range, and listed when none is asked.
"""

from __future__ import annotations

import functools
from typing import Any

import asyncpg
from sqlalchemy import ColumnElement, Date, Text, Time, cast, column, func, literal, or_, select, table
from sqlalchemy.dialects.postgresql import TIMESTAMP

from ..attributes import Attribute, Level
from ..query import MatchKey
from .pool import Compiled, compile_statement
from .search import SHAPES_CACHED, Binds, Shape, clause, term

# The worklist's matching keys (PS3.4 Table K.6-1, those with matching "R" or "*"), and where each one's values are.
ATTRIBUTES: dict[str, Attribute] = {
    a.keyword: a
    for a in (
        Attribute("ScheduledStationAETitle", Level.STUDY, "scheduled_station_ae_title", "text"),
        Attribute("ScheduledProcedureStepStartDate", Level.STUDY, "scheduled_date", "date"),
        Attribute("ScheduledProcedureStepStartTime", Level.STUDY, "scheduled_time", "time"),
        Attribute("Modality", Level.STUDY, "modality", "text"),
        Attribute("ScheduledPerformingPhysicianName", Level.STUDY, "scheduled_performing_physician", "pn"),
        Attribute("ScheduledProcedureStepID", Level.STUDY, "scheduled_procedure_step_id", "text"),
        Attribute("PatientName", Level.STUDY, "patient_name", "pn"),
        Attribute("PatientID", Level.STUDY, "patient_id", "text"),
        Attribute("AccessionNumber", Level.STUDY, "accession_number", "text"),
        Attribute("RequestedProcedureID", Level.STUDY, "requested_procedure_id", "text"),
        Attribute("ReferringPhysicianName", Level.STUDY, "referring_physician", "pn"),
        Attribute("StudyInstanceUID", Level.STUDY, "study_instance_uid", "uid"),
    )
}

RETURNED = (
    "study_instance_uid",
    "accession_number",
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "modality",
    "study_description",
    "referring_physician",
    "scheduled_station_ae_title",
    "scheduled_station_name",
    "scheduled_performing_physician",
    "requested_procedure_id",
    "requested_procedure_description",
    "requested_procedure_code_value",
    "requested_procedure_coding_scheme",
    "requested_procedure_code_meaning",
    "scheduled_procedure_step_id",
    "scheduled_procedure_step_description",
    "priority",
    "status",
)
# The person names matched folded (case- and accent-insensitive): the order keeps each also as ``{name}_folded``,
# written when it is scheduled (reporting/db/studies.py).
FOLDED = ("patient_name", "referring_physician", "scheduled_performing_physician")

order = table(
    "radiology_study",
    *(column(name, Text) for name in RETURNED),
    *(column(f"{name}_folded", Text) for name in FOLDED),
    column("scheduled_at", TIMESTAMP(timezone=True)),
    column("id"),
)


def _start(time_zone: str) -> ColumnElement[Any]:
    return func.timezone(literal(time_zone, Text), order.c.scheduled_at)


@functools.lru_cache(maxsize=SHAPES_CACHED)
def _compiled(shapes: tuple[Shape, ...], time_zone: str) -> Compiled:
    start = _start(time_zone)
    computed: dict[str, ColumnElement[Any]] = {
        "scheduled_date": cast(start, Date),
        "scheduled_time": cast(start, Time),
    }

    def column_for(attribute: Attribute) -> ColumnElement[Any]:
        if attribute.column in computed:
            return computed[attribute.column]
        return order.c[attribute.column + ("_folded" if attribute.kind == "pn" else "")]

    bind = Binds()
    statement = (
        select(
            *(order.c[name] for name in RETURNED),
            computed["scheduled_date"].label("scheduled_date"),
            computed["scheduled_time"].label("scheduled_time"),
        )
        .where(or_(order.c.status == "scheduled", order.c.status == "in_progress"))
        .where(*(clause(shape, bind, ATTRIBUTES, column_for) for shape in shapes))
        .order_by(order.c.scheduled_at.nulls_last(), order.c.accession_number)
        .limit(bind())
        .offset(bind())
    )
    return compile_statement(statement, bind.names)


async def find(
    conn: asyncpg.Connection, keys: list[MatchKey], time_zone: str, limit: int, offset: int
) -> list[asyncpg.Record]:
    """One page of the scheduled procedure steps matching every key, earliest start first."""
    terms = [term(key, suffixes=False) for key in keys]
    compiled = _compiled(tuple(t.shape for t in terms), time_zone)
    values = [v for t in terms for v in t.values] + [limit, offset]
    return list(await conn.fetch(compiled.text, *compiled.arguments(values)))
