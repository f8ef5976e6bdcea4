"""What the archive's own Structured Reports are made of and where they went: a study's annotations with their images,
its newest annotation export, and the SR of each verified report (schema version 8)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from .annotations import _COLUMNS, _row

SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # every Structured Report Storage SOP Class (PS3.4 Table B.5-1)

# A stored instance as an SR names it (evidence, predecessor) and where its file is.
_INSTANCE = """i.sop_instance_uid, i.sop_class_uid, se.series_instance_uid, st.study_instance_uid, se.series_number,
               i.file_path, coalesce(i.number_of_frames, 1) AS number_of_frames"""
_JOINS = "FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk"
# An image's Pixel Spacing (0028,0030) from its DICOM JSON: its own, else that of its shared Pixel Measures (an
# enhanced multi-frame image: Shared Functional Groups (5200,9229) > Pixel Measures (0028,9110), PS3.3 C.7.6.16.2.1).
PIXEL_SPACING = (
    "coalesce(i.metadata #> '{00280030,Value}', i.metadata #> '{52009229,Value,0,00289110,Value,0,00280030,Value}')"
)


async def study_annotations(conn: asyncpg.Connection, study_instance_uid: str) -> list[dict[str, Any]]:
    """The annotations on the study's images, oldest first, each with its image's UIDs, file, number of frames and
    Pixel Spacing (JSON text, or None) from the index: what the SR needs of an image other than the one it takes the
    patient and study from, without reading the image."""
    columns = ", ".join(f"a.{c.strip()}" for c in _COLUMNS.split(","))
    rows = await conn.fetch(
        f"""
        SELECT {columns}, i.sop_class_uid, se.series_instance_uid, i.file_path, i.number_of_frames,
               {PIXEL_SPACING} AS pixel_spacing
          FROM radiology_annotation a JOIN instance i ON i.sop_instance_uid = a.sop_instance_uid
          JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk
         WHERE st.study_instance_uid = $1
         ORDER BY a.created_at, a.id""",
        study_instance_uid,
    )
    return [_row(row) for row in rows]


async def study_evidence(conn: asyncpg.Connection, study_instance_uid: str) -> list[dict[str, Any]]:
    """The study's stored instances but Structured Reports (a report is on the images, not on other reports), in
    series and instance order."""
    rows = await conn.fetch(
        f"""SELECT {_INSTANCE} {_JOINS}
             WHERE st.study_instance_uid = $1 AND i.sop_class_uid NOT LIKE $2
             ORDER BY se.series_number NULLS LAST, se.series_instance_uid, i.instance_number NULLS LAST,
                      i.sop_instance_uid""",
        study_instance_uid,
        SR_CLASS_PREFIX + "%",
    )
    return [dict(row) for row in rows]


async def stored(conn: asyncpg.Connection, sop_instance_uids: list[str]) -> list[dict[str, Any]]:
    """Those of the instances the archive still holds."""
    rows = await conn.fetch(
        f"SELECT {_INSTANCE} {_JOINS} WHERE i.sop_instance_uid = ANY($1::text[])", sop_instance_uids
    )
    return [dict(row) for row in rows]


async def series_place(conn: asyncpg.Connection, series_instance_uid: str) -> tuple[int | None, int] | None:
    """A stored series' number and its next instance number; None when the archive holds none of it."""
    row = await conn.fetchrow(
        """SELECT se.series_number, coalesce(max(i.instance_number), 0) + 1 AS next_instance
             FROM series se LEFT JOIN instance i ON i.series_pk = se.pk
            WHERE se.series_instance_uid = $1 GROUP BY se.pk""",
        series_instance_uid,
    )
    return (row["series_number"], int(row["next_instance"])) if row else None


async def last_export(conn: asyncpg.Connection, study_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT sop_instance_uid, series_instance_uid FROM radiology_annotation_export WHERE study_id = $1", study_id
    )
    return dict(row) if row else None


async def record_export(
    conn: asyncpg.Connection, study_id: uuid.UUID, sop_instance_uid: str, series_instance_uid: str, exported_by: str
) -> None:
    """The study's newest annotation export (the next one's predecessor)."""
    await conn.execute(
        """INSERT INTO radiology_annotation_export (study_id, sop_instance_uid, series_instance_uid, exported_by)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (study_id) DO UPDATE SET sop_instance_uid = $2, series_instance_uid = $3, exported_by = $4,
                                                exported_at = now()""",
        study_id,
        sop_instance_uid,
        series_instance_uid,
        exported_by,
    )


async def set_tracking_uids(conn: asyncpg.Connection, uids: list[tuple[uuid.UUID, str]]) -> None:
    """Exported annotations keep the Tracking UID they were exported with (the import knows them by it)."""
    await conn.executemany(
        "UPDATE radiology_annotation SET tracking_uid = $2 WHERE id = $1 AND tracking_uid IS NULL", uids
    )


async def report_series(conn: asyncpg.Connection, study_id: uuid.UUID) -> str | None:
    """The series the study's report SRs went to so far (the newest)."""
    value = await conn.fetchval(
        """SELECT sr_series_instance_uid FROM radiology_report
            WHERE study_id = $1 AND sr_series_instance_uid IS NOT NULL ORDER BY verified_at DESC LIMIT 1""",
        study_id,
    )
    return str(value) if value else None


async def report_srs(conn: asyncpg.Connection, report_id: uuid.UUID) -> list[str]:
    """The SRs written so far for a report and its addenda, oldest first: what the next one supersedes."""
    rows = await conn.fetch(
        """SELECT sr_sop_instance_uid FROM radiology_report
            WHERE (id = $1 OR parent_report_id = $1) AND sr_sop_instance_uid IS NOT NULL
            ORDER BY verified_at, id""",
        report_id,
    )
    return [row[0] for row in rows]


async def verified_addenda(conn: asyncpg.Connection, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """The verified addenda of a report, in the order they were signed."""
    rows = await conn.fetch(
        """SELECT * FROM radiology_report WHERE parent_report_id = $1 AND status = 'final'
            ORDER BY verified_at, id""",
        report_id,
    )
    return [dict(row) for row in rows]


async def record_report_sr(
    conn: asyncpg.Connection,
    report_id: uuid.UUID,
    sop_instance_uid: str | None,
    series_instance_uid: str | None,
    error: str | None,
) -> dict[str, Any]:
    """The SR written for a verified report, or why none was; the report's row as it is now."""
    row = await conn.fetchrow(
        """UPDATE radiology_report SET sr_sop_instance_uid = $2, sr_series_instance_uid = $3, sr_error = $4
            WHERE id = $1 RETURNING *""",
        report_id,
        sop_instance_uid,
        series_instance_uid,
        error,
    )
    assert row is not None
    return dict(row)
