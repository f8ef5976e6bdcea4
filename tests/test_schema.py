"""schema.sql: applied to an empty database, version recorded, unknown versions refused without change."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from dicomweb.db.pool import SchemaError, ensure_schema, schema_version

from .conftest import Database, run


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
        assert db.value("SELECT version FROM schema_version") == schema_version()
        tables = {r[0] for r in db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"patient", "study", "series", "instance", "schema_version"} <= tables
        run(_ensure(db.url))
        assert db.value("SELECT count(*) FROM schema_version") == 1

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
