"""Read side for WADO-RS: which stored files and metadata make up a study, series or instance."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

_SCOPE = """
FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk
WHERE st.study_instance_uid = $1 AND ($2::text IS NULL OR se.series_instance_uid = $2)
  AND ($3::text IS NULL OR i.sop_instance_uid = $3)"""
# What a retrieve needs of each instance (the columns of StoredFile).
_FILE_COLUMNS = (
    "st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, "
    "i.file_path, i.file_size, i.number_of_frames, i.rows * i.columns AS pixels_per_frame, i.bits_allocated"
)
_ORDER = (
    "ORDER BY se.series_number NULLS LAST, se.series_instance_uid, i.instance_number NULLS LAST, i.sop_instance_uid"
)


@dataclass(frozen=True)
class StoredFile:
    """One stored instance file and what a retrieve needs to know of it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str
    file_size: int
    number_of_frames: int | None
    pixels_per_frame: int | None = None  # Rows x Columns, when the instance has them
    bits_allocated: int | None = None


async def files(conn: asyncpg.Connection, study: str, series: str | None, sop: str | None) -> list[StoredFile]:
    rows = await conn.fetch(f"SELECT {_FILE_COLUMNS} {_SCOPE} {_ORDER}", study, series, sop)
    return [StoredFile(**dict(row)) for row in rows]


async def instance_frames(
    conn: asyncpg.Connection, study: str, series: str, sop: str, whole_series_up_to: int = 0
) -> dict[str, tuple[StoredFile, str | None]]:
    """One stored instance with its frame index (JSON text; None when the store recorded none), by SOP Instance
    UID; with every other instance of its series when the series has at most ``whole_series_up_to`` instances (a
    viewer reads them all, one request each). Empty when the instance is not stored."""
    # Two branches, not one OR across tables: with "sop_instance_uid = $3 OR <the series' count>" PostgreSQL reads
    # every instance of a larger series (or of the whole table) for each request; this way the instance is one index
    # lookup, and the rest of its series is read only when the series is small enough.
    rows = await conn.fetch(
        f"""SELECT {_FILE_COLUMNS}, i.frame_index::text
        FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk
        WHERE st.study_instance_uid = $1 AND se.series_instance_uid = $2 AND i.sop_instance_uid = $3
        UNION ALL
        SELECT {_FILE_COLUMNS}, i.frame_index::text
        FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk
        WHERE st.study_instance_uid = $1 AND se.series_instance_uid = $2 AND i.sop_instance_uid <> $3
          AND se.number_of_series_related_instances <= $4""",
        study,
        series,
        sop,
        whole_series_up_to,
    )
    found = {}
    for row in rows:
        values = dict(row)
        index = values.pop("frame_index")
        found[values["sop_instance_uid"]] = (StoredFile(**values), index)
    return found if sop in found else {}


async def metadata(conn: asyncpg.Connection, study: str, series: str | None, sop: str | None) -> list[str]:
    """The stored DICOM JSON of each instance in scope (jsonb text, BulkDataURIs relative), in order."""
    rows = await conn.fetch(f"SELECT i.metadata::text {_SCOPE} {_ORDER}", study, series, sop)
    return [row[0] for row in rows]


async def version(conn: asyncpg.Connection, study: str, series: str | None, sop: str | None) -> tuple[int, int]:
    """(number of instances, highest instance key) in scope: changes whenever an instance is added or removed."""
    row = await conn.fetchrow(f"SELECT count(*), coalesce(max(i.pk), 0) {_SCOPE}", study, series, sop)
    return int(row[0]), int(row[1])


async def instance_keys(
    conn: asyncpg.Connection, study: str, series: str | None, sop: str | None
) -> list[tuple[int, str]]:
    """(pk, file path) of each instance in scope, locked for deletion (FOR UPDATE of the instance rows)."""
    rows = await conn.fetch(f"SELECT i.pk, i.file_path {_SCOPE} ORDER BY i.pk FOR UPDATE OF i", study, series, sop)
    return [(int(row[0]), str(row[1])) for row in rows]
