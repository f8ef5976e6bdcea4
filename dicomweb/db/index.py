"""Write side of the archive index: instances in (with their patient, study and series), counts kept exact.

A store runs in one transaction per request ("group commit"), in three phases, so that concurrent stores never
deadlock and the aggregates stay exact:

1. Instances are handled in (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) order. Patient, study and series
   rows are created with ``INSERT ... ON CONFLICT DO NOTHING`` (a concurrent creator makes us wait for its commit,
   then we read its row); the instance row with ``ON CONFLICT (sop_instance_uid) DO NOTHING``, so a concurrent
   store of the same SOP Instance UID waits for ours and then sees it. Every transaction takes these waits in the
   same global order, so none can wait on another in a cycle.
2. The caller places the files.
3. ``add_counts`` bumps the series and study aggregates (``n = n + k``, row locks taken in UID order) and
   recomputes ModalitiesInStudy for studies that gained a series.
"""

from __future__ import annotations

from collections import OrderedDict
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


@dataclass(frozen=True)
class SeriesRef:
    """A series row and its study row, and whether this transaction created the series."""

    series_pk: int
    study_pk: int
    created: bool


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
_FILE = ["transfer_syntax_uid", "file_path", "file_size", "file_sha256", "metadata", "frame_index"]
_INSTANCE = _column_names(Level.INSTANCE) + _FILE


def _insert(table: str, names: list[str], conflict: str) -> str:
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders}) "
        f"ON CONFLICT {conflict} DO NOTHING RETURNING pk"
    )


INSERT_PATIENT = _insert("patient", _PATIENT, "(patient_id, issuer_of_patient_id) WHERE patient_id <> ''")
SELECT_PATIENT = "SELECT pk FROM patient WHERE patient_id = $1 AND issuer_of_patient_id = $2 AND patient_id <> ''"
INSERT_STUDY = _insert("study", ["patient_pk", *_STUDY], "(study_instance_uid)")
SELECT_STUDY = "SELECT pk FROM study WHERE study_instance_uid = $1"
INSERT_SERIES = _insert("series", ["study_pk", *_SERIES], "(series_instance_uid)")
SELECT_SERIES = """
SELECT s.pk, s.study_pk, st.study_instance_uid FROM series s JOIN study st ON st.pk = s.study_pk
WHERE s.series_instance_uid = $1"""
INSERT_INSTANCE = _insert("instance", ["series_pk", *_INSTANCE], "(sop_instance_uid)")
SELECT_INSTANCE = "SELECT pk, file_path, file_sha256 FROM instance WHERE sop_instance_uid = $1"


def _series_counted(pk: str, instances: str) -> str:
    """The UPDATE adding ``instances`` to a series' count (negative when removed); arguments are parameter names."""
    return f"""
UPDATE series SET number_of_series_related_instances = number_of_series_related_instances + {instances},
                  updated_at = now()
WHERE pk = {pk}"""


def _study_counted(pk: str, instances: str, series: str) -> str:
    """The UPDATE adding instances and series to a study's counts; its modalities are recounted only when its
    series change."""
    return f"""
UPDATE study SET number_of_study_related_instances = number_of_study_related_instances + {instances},
                 number_of_study_related_series = number_of_study_related_series + {series},
                 modalities_in_study = CASE WHEN {series} = 0 THEN modalities_in_study ELSE ARRAY(
                     SELECT DISTINCT modality FROM series WHERE study_pk = {pk} AND modality IS NOT NULL
                     ORDER BY modality) END,
                 updated_at = now()
WHERE pk = {pk}"""


COUNT_SERIES = _series_counted("$1", "$2") + " RETURNING number_of_series_related_instances"
COUNT_STUDY = _study_counted("$1", "$2", "$3") + " RETURNING number_of_study_related_instances"
# Both in one statement, the series row first (as COUNT_SERIES then COUNT_STUDY): the condition on ``counted`` makes
# the series UPDATE run before the study row is updated, so every transaction takes the two locks in the same order.
COUNT_SERIES_AND_STUDY = f"""
WITH counted AS ({_series_counted("$1", "$2")} RETURNING pk)
{_study_counted("$3", "$4", "$5")} AND EXISTS (SELECT 1 FROM counted)"""


class KnownSeries:
    """The rows of the series stored into lately (SeriesInstanceUID to series pk, study pk and StudyInstanceUID), so
    that a store into a series already known costs no query for it. A row deleted since (by a delete, or by another
    worker process) makes the instance's INSERT fail on its foreign key: the store then ``forget``s them all and
    retries, and the series is looked up again."""

    SIZE = 4096

    def __init__(self) -> None:
        self.rows: OrderedDict[str, tuple[int, int, str]] = OrderedDict()

    def get(self, series_instance_uid: str) -> tuple[int, int, str] | None:
        row = self.rows.get(series_instance_uid)
        if row is not None:
            self.rows.move_to_end(series_instance_uid)
        return row

    def put(self, series_instance_uid: str, row: tuple[int, int, str]) -> None:
        self.rows[series_instance_uid] = row
        self.rows.move_to_end(series_instance_uid)
        if len(self.rows) > self.SIZE:
            self.rows.popitem(last=False)

    def forget(self) -> None:
        self.rows.clear()


async def resolve_series(conn: asyncpg.Connection, instance: Instance, known: KnownSeries | None = None) -> SeriesRef:
    """The series row of ``instance`` (with its study and patient), created if it is new."""
    cached = known.get(instance.series_instance_uid) if known is not None else None
    if cached is not None:
        series_pk, study_pk, study_instance_uid = cached
    else:
        row = await conn.fetchrow(SELECT_SERIES, instance.series_instance_uid)
        if row is None:
            study_pk = await conn.fetchval(SELECT_STUDY, instance.study_instance_uid)
            if study_pk is None:
                study_pk = await _create_study(conn, instance)
            series = instance.columns[Level.SERIES]
            series_pk = await conn.fetchval(INSERT_SERIES, study_pk, *(series[c] for c in _SERIES))
            if series_pk is not None:
                # Not remembered yet: the row is this transaction's until it commits.
                return SeriesRef(series_pk, study_pk, created=True)
            row = await conn.fetchrow(SELECT_SERIES, instance.series_instance_uid)  # created meanwhile
        series_pk, study_pk, study_instance_uid = row["pk"], row["study_pk"], row["study_instance_uid"]
        if known is not None:
            known.put(instance.series_instance_uid, (series_pk, study_pk, study_instance_uid))
    if study_instance_uid != instance.study_instance_uid:
        raise SeriesElsewhere(instance.series_instance_uid)
    return SeriesRef(series_pk, study_pk, created=False)


async def insert_instance(
    conn: asyncpg.Connection, series_pk: int, instance: Instance, file_path: str, file_size: int, file_sha256: str
) -> int | None:
    """Insert the instance row; None if the SOP Instance UID is stored already (then nothing was written)."""
    values: dict[str, Any] = {
        **instance.columns[Level.INSTANCE],
        "transfer_syntax_uid": instance.transfer_syntax_uid,
        "file_path": file_path,
        "file_size": file_size,
        "file_sha256": file_sha256,
        "metadata": instance.metadata,
        "frame_index": instance.frame_index,
    }
    pk = await conn.fetchval(INSERT_INSTANCE, series_pk, *(values[c] for c in _INSTANCE))
    return int(pk) if pk is not None else None


async def find_instance(conn: asyncpg.Connection, sop_instance_uid: str) -> StoredInstance | None:
    row = await conn.fetchrow(SELECT_INSTANCE, sop_instance_uid)
    return StoredInstance(row["pk"], row["file_path"], row["file_sha256"]) if row else None


async def add_counts(
    conn: asyncpg.Connection, series: dict[str, tuple[int, int]], studies: dict[str, tuple[int, int, int]]
) -> None:
    """Add to the aggregates: ``series`` maps SeriesInstanceUID to (pk, new instances), ``studies`` maps
    StudyInstanceUID to (pk, new instances, new series). Row locks are taken in UID order (no deadlocks)."""
    if len(series) == 1 and len(studies) == 1:  # the common case, in one round trip
        [(series_pk, series_instances)] = series.values()
        [(study_pk, study_instances, new_series)] = studies.values()
        await conn.execute(COUNT_SERIES_AND_STUDY, series_pk, series_instances, study_pk, study_instances, new_series)
        return
    for _, (pk, instances) in sorted(series.items()):
        await conn.execute(COUNT_SERIES, pk, instances)
    for _, (pk, instances, new_series) in sorted(studies.items()):
        await conn.execute(COUNT_STUDY, pk, instances, new_series)


async def delete_instance(conn: asyncpg.Connection, instance_pk: int) -> None:
    """Remove an instance row and keep the aggregates exact; an emptied series, study and patient go with it."""
    row = await conn.fetchrow(
        "DELETE FROM instance i USING series s WHERE i.pk = $1 AND s.pk = i.series_pk RETURNING s.pk, s.study_pk",
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
    identity = [patient["patient_id"], patient["issuer_of_patient_id"]]
    patient_pk = await conn.fetchval(INSERT_PATIENT, *(patient[c] for c in _PATIENT))
    if patient_pk is None:
        patient_pk = await conn.fetchval(SELECT_PATIENT, *identity)
    study = instance.columns[Level.STUDY]
    study_pk = await conn.fetchval(INSERT_STUDY, patient_pk, *(study[c] for c in _STUDY))
    if study_pk is None:  # created meanwhile by another transaction; drop the anonymous patient made for it
        if not patient["patient_id"]:
            await conn.execute("DELETE FROM patient WHERE pk = $1", patient_pk)
        study_pk = await conn.fetchval(SELECT_STUDY, instance.study_instance_uid)
    assert study_pk is not None
    return int(study_pk)
