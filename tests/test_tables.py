"""db/tables.py mirrors schema.sql: compared with a database made from it, and with attributes.py's column map."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Table
from sqlalchemy.engine import make_url

from dicomweb.attributes import AGGREGATES, ATTRIBUTES, Attribute, Level
from dicomweb.db import tables
from dicomweb.db.pool import ensure_schema

from .conftest import _admin, _with_database, run

TABLE = {
    Level.PATIENT: tables.patient,
    Level.STUDY: tables.study,
    Level.SERIES: tables.series,
    Level.INSTANCE: tables.instance,
}
POSTGRESQL = make_url("postgresql+asyncpg://").get_dialect()()  # the dialect db/ compiles for
# The SQL type of each value kind of attributes.py.
KIND_TYPES = {
    "text": "TEXT",
    "uid": "TEXT",
    "pn": "TEXT",
    "date": "DATE",
    "time": "TIME WITHOUT TIME ZONE",
    "int": "INTEGER",
    "text_list": "TEXT[]",
}


def _type(table: Table, name: str) -> str:
    return str(table.c[name].type.compile(dialect=POSTGRESQL))


@pytest.fixture(scope="module")
def schema(postgres_url: str) -> Iterator[dict[str, Any]]:
    """The columns and primary keys of a database made by schema.sql, from information_schema."""

    async def read(url: str) -> dict[str, Any]:
        conn = await asyncpg.connect(url)
        try:
            await ensure_schema(conn)
            columns = await conn.fetch(
                "SELECT table_name, column_name, data_type, udt_name, is_nullable = 'YES' AS nullable, "
                "identity_generation = 'ALWAYS' AS always "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "ORDER BY table_name, ordinal_position"
            )
            keys = await conn.fetch(
                "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c "
                "JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name) "
                "WHERE c.table_schema = current_schema() AND c.constraint_type = 'PRIMARY KEY' "
                "ORDER BY k.table_name, k.ordinal_position"
            )
        finally:
            await conn.close()
        found: dict[str, Any] = {}
        for row in columns:
            # information_schema names an array type ARRAY, its element type in udt_name ("_text")
            sql_type = f"{row['udt_name'][1:]}[]" if row["data_type"] == "ARRAY" else row["data_type"]
            found.setdefault(row["table_name"], {"columns": [], "key": []})["columns"].append(
                (row["column_name"], sql_type.upper(), row["nullable"], bool(row["always"]))
            )
        for row in keys:
            found[row["table_name"]]["key"].append(row["column_name"])
        return found

    name = f"test_{uuid.uuid4().hex[:12]}"
    run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        yield run(read(_with_database(postgres_url, name)))
    finally:
        run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class TestTables:
    """Each Table is the table schema.sql makes."""

    @pytest.mark.parametrize("table", tables.metadata.sorted_tables, ids=lambda t: t.name)
    def test_columns(self, schema: dict[str, Any], table: Table) -> None:
        """Same columns in the same order, with the same types, nullability and identity."""
        mirrored = [
            (c.name, _type(table, c.name), c.nullable, c.identity is not None and c.identity.always)
            for c in table.columns
        ]
        assert mirrored == schema[table.name]["columns"]

    @pytest.mark.parametrize("table", tables.metadata.sorted_tables, ids=lambda t: t.name)
    def test_primary_key(self, schema: dict[str, Any], table: Table) -> None:
        """Same primary key."""
        assert [c.name for c in table.primary_key.columns] == schema[table.name]["key"]

    def test_every_archive_table_mirrored(self, schema: dict[str, Any]) -> None:
        """A table schema.sql adds to the archive gets its Table too (the radiology_* tables are reporting's)."""
        archive = {name for name in schema if not name.startswith("radiology_")}
        assert archive == set(tables.metadata.tables)


class TestAttributes:
    """attributes.py's keyword -> column map names columns that exist, with the type of their value kind."""

    @pytest.mark.parametrize("attribute", [*ATTRIBUTES, *AGGREGATES], ids=lambda a: a.keyword)
    def test_column_exists_with_its_type(self, attribute: Attribute) -> None:
        """The column (and the folded column of a person name) is in the table of the attribute's level."""
        table = TABLE[attribute.level]
        assert _type(table, attribute.column) == KIND_TYPES[attribute.kind]
        if attribute.kind == "pn":
            assert _type(table, attribute.column + "_folded") == "TEXT"
