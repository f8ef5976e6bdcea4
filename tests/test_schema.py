"""schema.sql: applied to an empty database, version recorded, unknown versions refused without change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dicomweb.db.pool import SchemaError, ensure_schema, schema_version

from .conftest import NO_AUTH, Database, _admin, free_port, run


async def _ensure(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await ensure_schema(conn)
    finally:
        await conn.close()


class TestSchema:
    """ensure_schema at start-up."""

    def test_applied_once_and_recorded(self, new_database: Any) -> None:
        """An empty database gets the schema and its version; a second start changes nothing."""
        db: Database = new_database()
        run(_ensure(db.url))
        assert db.value("SELECT max(version) FROM schema_version") == schema_version()
        tables = {r[0] for r in db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"patient", "study", "series", "instance", "schema_version"} <= tables
        versions = [r[0] for r in db.fetch("SELECT version FROM schema_version ORDER BY version")]
        run(_ensure(db.url))
        assert [r[0] for r in db.fetch("SELECT version FROM schema_version ORDER BY version")] == versions

    def test_older_version_migrated(self, new_database: Any) -> None:
        """A database made by the first schema version is brought up to date, its data kept."""
        from dicomweb.db.pool import schema_sql

        db: Database = new_database()
        version_1 = schema_sql().split("-- migrate to version 2")[0]
        run(_admin(db.url, version_1))
        db.fetch("INSERT INTO patient (patient_id) VALUES ('kept')")
        run(_ensure(db.url))
        assert db.value("SELECT max(version) FROM schema_version") == schema_version()
        assert db.value("SELECT patient_id FROM patient") == "kept"
        assert db.value("SELECT to_regclass('radiology_report')") is not None

    def test_orders_get_their_accession_number_as_procedure_ids(self, new_database: Any) -> None:
        """Version 5 gives the orders scheduled before it their accession number as requested procedure and
        scheduled procedure step ID (a worklist item needs both)."""
        from dicomweb.db.pool import schema_sql

        db: Database = new_database()
        run(_admin(db.url, schema_sql().split("-- migrate to version 5")[0]))
        db.fetch(
            "INSERT INTO radiology_study (id, patient_id, accession_number, study_instance_uid, modality, created_by) "
            "VALUES (gen_random_uuid(), 'P', 'ACC1', '2.25.1', 'CT', 'admin')"
        )
        run(_ensure(db.url))
        row = db.fetch("SELECT requested_procedure_id, scheduled_procedure_step_id FROM radiology_study")[0]
        assert tuple(row) == ("ACC1", "ACC1")

    def test_newer_version_refused(self, new_database: Any) -> None:
        """A database of a newer schema version: a clear error, nothing changed."""
        db: Database = new_database()
        run(_ensure(db.url))
        db.fetch("INSERT INTO schema_version (version) VALUES ($1)", schema_version() + 1)
        with pytest.raises(SchemaError, match="upgrade the server"):
            run(_ensure(db.url))
        assert db.value("SELECT max(version) FROM schema_version") == schema_version() + 1

    def test_foreign_database_refused(self, new_database: Any) -> None:
        """A database with other tables and no schema_version is not touched."""
        db: Database = new_database()
        db.fetch("CREATE TABLE something_else (id int)")
        with pytest.raises(SchemaError, match="no schema_version"):
            run(_ensure(db.url))
        assert db.value("SELECT to_regclass('study')") is None

    def test_header_declares_version(self) -> None:
        """schema.sql declares its version in a header line and inserts the same number."""
        from dicomweb.db.pool import schema_sql

        assert f"INSERT INTO schema_version (version) VALUES ({schema_version()});" in schema_sql()


def test_serve_with_workers_refuses_a_newer_schema_once(new_database: Any, tmp_path: Path) -> None:
    """``dicomweb serve --workers 2`` checks the schema itself before it starts any worker: a database of a newer
    version stops it with one line that says why, and no worker starts (the workers start without the database)."""
    db: Database = new_database()
    run(_ensure(db.url))
    db.fetch("INSERT INTO schema_version (version) VALUES ($1)", schema_version() + 1)
    env = {**os.environ, "DICOMWEB_DATABASE_URL": db.url, **NO_AUTH, "DICOMWEB_DIMSE_PORT": "0"}
    command = [sys.executable, "-m", "dicomweb", "serve", "--workers", "2", "--port", str(free_port())]
    result = subprocess.run(
        [*command, "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "dicomweb: cannot start: the database schema is version" in result.stderr
    assert "Started server process" not in result.stderr
