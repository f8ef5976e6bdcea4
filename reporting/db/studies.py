"""Workflow studies and series: rows joined with the archive's study, so counts and sizes are the archive's own."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from dicomweb.attributes import normalize_name
from dicomweb.db.worklist import FOLDED

# A workflow study with what the archive holds of it. Series are the union of the archive's and those announced
# through the API; images and bytes are the archive's.
_STUDY = """
SELECT r.*,
       (SELECT count(*) FROM (SELECT se.series_instance_uid FROM series se WHERE se.study_pk = st.pk
                              UNION SELECT rs.series_instance_uid FROM radiology_series rs WHERE rs.study_id = r.id) u
       ) AS number_of_series,
       coalesce(st.number_of_study_related_instances, 0) AS number_of_images,
       coalesce((SELECT sum(i.file_size) FROM series se JOIN instance i ON i.series_pk = se.pk
                 WHERE se.study_pk = st.pk), 0)::bigint AS storage_bytes
  FROM radiology_study r LEFT JOIN study st ON st.study_instance_uid = r.study_instance_uid"""

COLUMNS = (
    "order_id",
    "patient_id",
    "patient_name",
    "accession_number",
    "study_instance_uid",
    "modality",
    "study_description",
    "body_part",
    "referring_physician",
    "performing_technician",
    "scheduled_at",
    "study_date",
    "patient_birth_date",
    "patient_sex",
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
)
# The requested procedure code's columns, and its fields in the API's requestedProcedureCode.
_CODE = {
    "requested_procedure_code_value": "code_value",
    "requested_procedure_coding_scheme": "coding_scheme_designator",
    "requested_procedure_code_meaning": "code_meaning",
}

_UID_PARAMETER = 3 + COLUMNS.index("study_instance_uid")  # its $n in insert()'s statement


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    modality: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    limit: int = 20
    offset: int = 0


class Taken(Exception):
    """An accession number or StudyInstanceUID already belongs to another workflow study."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


def _study(row: asyncpg.Record) -> dict[str, Any]:
    """A study row as the API's model takes it: the requested procedure code's columns as one object (or None)."""
    study = dict(row)
    code = {field: study.pop(column) for column, field in _CODE.items()}
    study["requested_procedure_code"] = code if code["code_value"] is not None else None
    return study


async def insert(conn: asyncpg.Connection, values: dict[str, Any], created_by: str) -> dict[str, Any]:
    """Insert a study; it starts in_progress when the archive already holds images of it. Raises Taken."""
    code = values.get("requested_procedure_code") or {}
    values = {**values, **{column: code.get(field) for column, field in _CODE.items()}}
    for column in FOLDED:  # the person names as the worklist matches them (dicomweb/db/worklist.py)
        values[f"{column}_folded"] = normalize_name(values[column]) if values.get(column) else None
    columns = (*COLUMNS, *(f"{column}_folded" for column in FOLDED))
    names = ", ".join(columns)
    placeholders = ", ".join(f"${n}" for n in range(3, len(columns) + 3))
    study_id = uuid.uuid4()
    try:
        await conn.execute(
            f"INSERT INTO radiology_study (id, created_by, {names}, status) VALUES ($1, $2, {placeholders}, "
            f"CASE WHEN EXISTS (SELECT 1 FROM study WHERE study_instance_uid = ${_UID_PARAMETER}) THEN 'in_progress' "
            "ELSE 'scheduled' END)",
            study_id,
            created_by,
            *(values.get(c) for c in columns),
        )
    except asyncpg.UniqueViolationError as exc:
        constraint = exc.constraint_name or ""
        raise Taken("accession_number" if "accession" in constraint else "study_instance_uid") from None
    found = await get(conn, study_id)
    assert found is not None
    return found


async def get(conn: asyncpg.Connection, study_id: uuid.UUID, lock: bool = False) -> dict[str, Any] | None:
    row = await conn.fetchrow(_STUDY + " WHERE r.id = $1" + (" FOR UPDATE OF r" if lock else ""), study_id)
    return _study(row) if row else None


def _where(filters: Filters) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column in ("status", "modality", "patient_id", "accession_number"):
        value = getattr(filters, column)
        if value is not None:
            args.append(value)
            clauses.append(f"r.{column} = ${len(args)}")
    day = "coalesce(r.study_date, (r.scheduled_at AT TIME ZONE 'UTC')::date)"
    if filters.date_from is not None:
        args.append(filters.date_from)
        clauses.append(f"{day} >= ${len(args)}")
    if filters.date_to is not None:
        args.append(filters.date_to)
        clauses.append(f"{day} <= ${len(args)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


async def search(conn: asyncpg.Connection, filters: Filters) -> tuple[list[dict[str, Any]], int]:
    """One page of matching studies, newest first, and how many match in all."""
    where, args = _where(filters)
    total = await conn.fetchval("SELECT count(*) FROM radiology_study r" + where, *args)
    rows = await conn.fetch(
        f"{_STUDY}{where} ORDER BY r.created_at DESC, r.id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
        *args,
        filters.limit,
        filters.offset,
    )
    return [_study(row) for row in rows], int(total)


async def set_status(conn: asyncpg.Connection, study_id: uuid.UUID, status: str) -> None:
    await conn.execute("UPDATE radiology_study SET status = $2, updated_at = now() WHERE id = $1", study_id, status)


async def delete(conn: asyncpg.Connection, study_id: uuid.UUID) -> None:
    """The workflow study, its series, reports and their versions (ON DELETE CASCADE)."""
    await conn.execute("DELETE FROM radiology_study WHERE id = $1", study_id)


async def series(conn: asyncpg.Connection, study_id: uuid.UUID, study_instance_uid: str) -> list[dict[str, Any]]:
    """The study's series: the archive's and the announced, by SeriesInstanceUID, in series number order."""
    rows = await conn.fetch(
        """
        SELECT coalesce(se.series_instance_uid, rs.series_instance_uid) AS series_instance_uid,
               coalesce(se.series_number, rs.series_number) AS series_number,
               coalesce(se.modality, rs.modality) AS modality,
               coalesce(se.series_description, rs.series_description) AS series_description,
               coalesce(se.body_part_examined, rs.body_part) AS body_part,
               coalesce(se.number_of_series_related_instances, 0) AS number_of_images
          FROM (SELECT se.* FROM series se JOIN study st ON st.pk = se.study_pk
                 WHERE st.study_instance_uid = $2) se
          FULL JOIN (SELECT * FROM radiology_series WHERE study_id = $1) rs
            ON rs.series_instance_uid = se.series_instance_uid
         ORDER BY 2 NULLS LAST, 1""",
        study_id,
        study_instance_uid,
    )
    return [dict(row) for row in rows]


async def find_series(conn: asyncpg.Connection, series_instance_uid: str) -> dict[str, Any] | None:
    """An announced series, or an archive series of a workflow study, with the workflow study's id."""
    row = await conn.fetchrow(
        """
        SELECT rs.series_instance_uid, rs.series_number, rs.modality, rs.study_id
          FROM radiology_series rs WHERE rs.series_instance_uid = $1
        UNION ALL
        SELECT se.series_instance_uid, se.series_number, se.modality, r.id
          FROM series se JOIN study st ON st.pk = se.study_pk
          JOIN radiology_study r ON r.study_instance_uid = st.study_instance_uid
         WHERE se.series_instance_uid = $1
         LIMIT 1""",
        series_instance_uid,
    )
    return dict(row) if row else None


async def series_by_number(
    conn: asyncpg.Connection, study_id: uuid.UUID, study_instance_uid: str, series_number: int
) -> str | None:
    """The SeriesInstanceUID of the study's series with this number (announced or archived), if any."""
    found = await conn.fetchval(
        """
        SELECT series_instance_uid FROM radiology_series WHERE study_id = $1 AND series_number = $3
        UNION ALL
        SELECT se.series_instance_uid FROM series se JOIN study st ON st.pk = se.study_pk
         WHERE st.study_instance_uid = $2 AND se.series_number = $3
         LIMIT 1""",
        study_id,
        study_instance_uid,
        series_number,
    )
    return str(found) if found is not None else None


async def insert_series(conn: asyncpg.Connection, study_id: uuid.UUID, values: dict[str, Any], created_by: str) -> bool:
    """Announce a series; False when its UID or its number is already taken in the study."""
    try:
        await conn.execute(
            "INSERT INTO radiology_series (series_instance_uid, study_id, series_number, modality, "
            "series_description, body_part, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            values["series_instance_uid"],
            study_id,
            values["series_number"],
            values["modality"],
            values.get("series_description"),
            values.get("body_part"),
            created_by,
        )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def next_series_number(conn: asyncpg.Connection, study_id: uuid.UUID, study_instance_uid: str) -> int:
    return int(
        await conn.fetchval(
            """
            SELECT coalesce(max(n), 0) + 1 FROM (
                SELECT series_number AS n FROM radiology_series WHERE study_id = $1
                UNION ALL
                SELECT se.series_number FROM series se JOIN study st ON st.pk = se.study_pk
                 WHERE st.study_instance_uid = $2) numbers""",
            study_id,
            study_instance_uid,
        )
    )


# An archived instance as the API shows it, and the joins that reach its series and study.
_IMAGE_COLUMNS = """i.sop_instance_uid, se.series_instance_uid, st.study_instance_uid, i.sop_class_uid,
               se.series_number, i.instance_number, coalesce(i.number_of_frames, 1) AS number_of_frames,
               i.rows, i.columns, i.transfer_syntax_uid, i.file_size, i.file_path"""
_IMAGE_JOINS = "FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk"


async def images(conn: asyncpg.Connection, study_instance_uid: str, sop: str | None = None) -> list[dict[str, Any]]:
    """The study's archived instances (or one of them), in series and instance order."""
    rows = await conn.fetch(
        f"""
        SELECT {_IMAGE_COLUMNS}
          {_IMAGE_JOINS}
         WHERE st.study_instance_uid = $1 AND ($2::text IS NULL OR i.sop_instance_uid = $2)
         ORDER BY se.series_number NULLS LAST, se.series_instance_uid, i.instance_number NULLS LAST,
                  i.sop_instance_uid""",
        study_instance_uid,
        sop,
    )
    return [dict(row) for row in rows]


async def image(conn: asyncpg.Connection, sop_instance_uid: str) -> dict[str, Any] | None:
    """An archived instance with the workflow study it belongs to (its id and patient), if any."""
    row = await conn.fetchrow(
        f"""
        SELECT {_IMAGE_COLUMNS}, r.id AS study_id, p.patient_id
          {_IMAGE_JOINS}
          JOIN patient p ON p.pk = st.patient_pk
          LEFT JOIN radiology_study r ON r.study_instance_uid = st.study_instance_uid
         WHERE i.sop_instance_uid = $1""",
        sop_instance_uid,
    )
    return dict(row) if row else None


async def patient_attributes(conn: asyncpg.Connection, study_instance_uid: str) -> dict[str, Any] | None:
    """The archive's DICOM data of the study's patient (for templates and Secondary Captures), if it holds any."""
    row = await conn.fetchrow(
        """
        SELECT p.patient_name, p.patient_id, p.patient_birth_date, p.patient_sex
          FROM study st JOIN patient p ON p.pk = st.patient_pk WHERE st.study_instance_uid = $1""",
        study_instance_uid,
    )
    return dict(row) if row else None
