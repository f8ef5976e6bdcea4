"""Write side of the archive index: one instance in, with its patient, study and series, counts kept exact.

Concurrency: the caller holds ``lock_instance`` (an advisory lock on the SOP Instance UID) for the whole
transaction. Patient, study and series rows are created with ``INSERT ... ON CONFLICT DO NOTHING`` (a concurrent
creator makes us wait, then we read its row), and the aggregates are bumped with ``UPDATE ... SET n = n + 1`` on
the series row, then the study row: the row locks serialise concurrent stores into one study, in one order (no
deadlocks), so the counts stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ..attributes import Level, columns
from ..instance import Instance


@dataclass(frozen=True)
class StoredInstance:
    """What the index holds of an instance already stored."""

    pk: int
    file_path: str
    file_sha256: str
    series_instance_uid: str
    study_instance_uid: str


class SeriesElsewhere(Exception):
    """The instance's SeriesInstanceUID is already stored in another study."""


def _column_names(level: Level) -> list[str]:
    names: list[str] = []
    for attribute in columns(level):
        names.append(attribute.column)
        if attribute.kind == "pn":
            names.append(attribute.column + "_folded")
    return names


_PATIENT = _column_names(Level.PATIENT)
_STUDY = _column_names(Level.STUDY)
_SERIES = _column_names(Level.SERIES)
_INSTANCE = _column_names(Level.INSTANCE) + [
    "transfer_syntax_uid",
    "file_path",
    "file_size",
    "file_sha256",
    "metadata",
]


def _insert(table: str, names: list[str], parent: str | None, conflict: str | None) -> str:
    all_names = ([parent] if parent else []) + names
    placeholders = ", ".join(f"${i}" for i in range(1, len(all_names) + 1))
    on_conflict = f" ON CONFLICT {conflict} DO NOTHING" if conflict else ""
    return f"INSERT INTO {table} ({', '.join(all_names)}) VALUES ({placeholders}){on_conflict} RETURNING pk"


INSERT_PATIENT = _insert("patient", _PATIENT, None, "(patient_id, issuer_of_patient_id) WHERE patient_id <> ''")
SELECT_PATIENT = "SELECT pk FROM patient WHERE patient_id = $1 AND issuer_of_patient_id = $2 AND patient_id <> ''"
INSERT_STUDY = _insert("study", _STUDY, "patient_pk", "(study_instance_uid)")
SELECT_STUDY = "SELECT pk FROM study WHERE study_instance_uid = $1"
INSERT_SERIES = _insert("series", _SERIES, "study_pk", "(series_instance_uid)")
SELECT_SERIES = "SELECT pk, study_pk FROM series WHERE series_instance_uid = $1"
INSERT_INSTANCE = _insert("instance", _INSTANCE, "series_pk", None)
COUNT_SERIES = """
UPDATE series SET number_of_series_related_instances = number_of_series_related_instances + $2, updated_at = now()
WHERE pk = $1 RETURNING number_of_series_related_instances"""
COUNT_STUDY = """
UPDATE study SET number_of_study_related_instances = number_of_study_related_instances + $2,
                 number_of_study_related_series = number_of_study_related_series + $3,
                 modalities_in_study = CASE WHEN $3 = 0 THEN modalities_in_study ELSE ARRAY(
                     SELECT DISTINCT modality FROM series WHERE study_pk = $1 AND modality IS NOT NULL
                     ORDER BY modality) END,
                 updated_at = now()
WHERE pk = $1 RETURNING number_of_study_related_instances"""
SELECT_INSTANCE = """
SELECT i.pk, i.file_path, i.file_sha256, se.series_instance_uid, st.study_instance_uid
FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk
WHERE i.sop_instance_uid = $1"""


async def lock_instance(conn: asyncpg.Connection, sop_instance_uid: str) -> StoredInstance | None:
    """Take the transaction's lock on this SOP Instance UID; return the instance if it is stored already."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", sop_instance_uid)
    row = await conn.fetchrow(SELECT_INSTANCE, sop_instance_uid)
    return StoredInstance(**dict(row)) if row else None


async def insert_instance(
    conn: asyncpg.Connection, instance: Instance, file_path: str, file_size: int, file_sha256: str, metadata: str
) -> int:
    """Index one new instance (its patient, study and series created as needed); returns the instance's pk."""
    study_pk = await conn.fetchval(SELECT_STUDY, instance.study_instance_uid)
    if study_pk is None:
        study_pk = await _create_study(conn, instance)
    series = instance.columns[Level.SERIES]
    series_pk = await conn.fetchval(INSERT_SERIES, study_pk, *(series[c] for c in _SERIES))
    new_series = series_pk is not None
    if not new_series:
        row = await conn.fetchrow(SELECT_SERIES, instance.series_instance_uid)
        if row["study_pk"] != study_pk:
            raise SeriesElsewhere(instance.series_instance_uid)
        series_pk = row["pk"]
    values: dict[str, Any] = {
        **instance.columns[Level.INSTANCE],
        "transfer_syntax_uid": instance.transfer_syntax_uid,
        "file_path": file_path,
        "file_size": file_size,
        "file_sha256": file_sha256,
        "metadata": metadata,
    }
    instance_pk: int = await conn.fetchval(INSERT_INSTANCE, series_pk, *(values[c] for c in _INSTANCE))
    await conn.fetchval(COUNT_SERIES, series_pk, 1)
    await conn.fetchval(COUNT_STUDY, study_pk, 1, 1 if new_series else 0)
    return instance_pk


async def delete_instance(conn: asyncpg.Connection, instance_pk: int) -> None:
    """Remove an instance row and keep the aggregates exact; empty series and studies go with it."""
    row = await conn.fetchrow(
        "DELETE FROM instance WHERE pk = $1 RETURNING series_pk, (SELECT study_pk FROM series WHERE pk = series_pk)",
        instance_pk,
    )
    if row is None:
        return
    series_pk, study_pk = row[0], row[1]
    left_in_series = await conn.fetchval(COUNT_SERIES, series_pk, -1)
    removed_series = 0
    if left_in_series == 0:
        await conn.execute("DELETE FROM series WHERE pk = $1", series_pk)
        removed_series = -1
    left_in_study = await conn.fetchval(COUNT_STUDY, study_pk, -1, removed_series)
    if left_in_study == 0:
        patient_pk = await conn.fetchval("DELETE FROM study WHERE pk = $1 RETURNING patient_pk", study_pk)
        await conn.execute(
            "DELETE FROM patient WHERE pk = $1 AND NOT EXISTS (SELECT 1 FROM study WHERE patient_pk = $1)", patient_pk
        )


async def _create_study(conn: asyncpg.Connection, instance: Instance) -> int:
    """Create the study (and its patient, unless the PatientID is known); a concurrent creator may win."""
    patient = {**instance.columns[Level.PATIENT]}
    patient["patient_id"] = patient["patient_id"] or ""
    patient["issuer_of_patient_id"] = patient["issuer_of_patient_id"] or ""
    patient_pk = await _get_or_create(
        conn,
        INSERT_PATIENT,
        [patient[c] for c in _PATIENT],
        SELECT_PATIENT,
        [patient["patient_id"], patient["issuer_of_patient_id"]],
    )
    study = instance.columns[Level.STUDY]
    study_pk = await conn.fetchval(INSERT_STUDY, patient_pk, *(study[c] for c in _STUDY))
    if study_pk is None:  # another transaction created it meanwhile; an anonymous patient row made for it goes
        if not patient["patient_id"]:
            await conn.execute("DELETE FROM patient WHERE pk = $1", patient_pk)
        study_pk = await conn.fetchval(SELECT_STUDY, instance.study_instance_uid)
    assert study_pk is not None
    return int(study_pk)


async def _get_or_create(
    conn: asyncpg.Connection, insert: str, insert_args: list[Any], select: str, select_args: list[Any]
) -> int:
    pk = await conn.fetchval(insert, *insert_args)
    if pk is None:
        pk = await conn.fetchval(select, *select_args)
    assert pk is not None
    return int(pk)
