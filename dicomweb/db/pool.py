"""The asyncpg connection pool, the schema check that runs once at start-up, and SQLAlchemy Core statements
compiled for asyncpg."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from . import outage

SCHEMA_LOCK_KEY = 0x44494357  # advisory lock taken while the schema is checked or applied ("DICW")


class SchemaError(RuntimeError):
    """The database holds a schema this server does not know (newer, older, or foreign); nothing was changed."""


def schema_sql() -> str:
    return resources.files("dicomweb").joinpath("schema.sql").read_text(encoding="utf-8")


def schema_version(sql: str | None = None) -> int:
    """The version ``schema.sql`` declares in its ``-- schema_version: N`` header line."""
    match = re.search(r"^-- schema_version: (\d+)$", sql or schema_sql(), re.MULTILINE)
    if match is None:
        raise SchemaError("schema.sql has no '-- schema_version: N' line")
    return int(match.group(1))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release: the archive never changes session state (no SET, LISTEN or session locks)."""


async def create_pool(url: str, max_size: int, timeout: float, custom_plans: bool = True) -> asyncpg.Pool:
    """A pool whose connections plan every execution anew (``custom_plans``), or keep a statement's plan when
    PostgreSQL finds it as good (for statements whose best plan never depends on their values). A statement that
    takes more than ``timeout`` seconds raises TimeoutError: a database that hangs counts as gone (outage.py)."""
    pool = await asyncpg.create_pool(
        url,
        # No floor of open connections: asyncpg restores one by retrying with a logged traceback each time while the
        # database is gone. Connections open on first use (a wrong URL still fails the start: ensure_schema's).
        min_size=0,
        max_size=max_size,
        connect=outage.connect,
        timeout=min(outage.CONNECT_TIMEOUT, timeout),  # a new connection's, passed to outage.connect
        command_timeout=timeout,
        reset=_keep_session,
        # asyncpg prepares every statement; a generic plan cannot use an index for "name LIKE $1" (the prefix is
        # unknown), so searches would silently turn into scans after a few calls. Plan each execution instead.
        server_settings={"plan_cache_mode": "force_custom_plan" if custom_plans else "auto"},
    )
    assert pool is not None
    return pool


async def check_database(url: str) -> None:
    """Apply or check the schema over a connection of its own: what ``dicomweb serve --workers N`` does once before
    it starts the workers, so that a wrong URL or schema stops it there, and a worker needs no database to start."""
    conn = await outage.connect(url)
    try:
        await ensure_schema(conn)
    finally:
        await conn.close()


async def ensure_schema(conn: asyncpg.Connection) -> None:
    """Apply schema.sql to an empty database, or check that the recorded version is ours; never change data."""
    sql = schema_sql()
    expected = schema_version(sql)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
            )
            if tables:
                raise SchemaError(
                    f"the database has {tables} tables but no schema_version table; "
                    "point DICOMWEB_DATABASE_URL at an empty database"
                )
            await conn.execute(sql)
            return
        found = await conn.fetchval("SELECT max(version) FROM schema_version")
        if found is None or found > expected:
            raise SchemaError(
                f"the database schema is version {found}, this server needs version {expected}"
                + ("; upgrade the server" if found is not None else "; this version is unknown, no migration exists")
            )
        for _, section in migrations(sql, since=found):
            await conn.execute(section)


_MIGRATION = re.compile(r"^-- migrate to version (\d+)$", re.MULTILINE)


def migrations(sql: str, since: int) -> list[tuple[int, str]]:
    """The sections of schema.sql that bring a database at version ``since`` up to date, oldest first."""
    markers = list(_MIGRATION.finditer(sql))
    sections = []
    for marker, following in zip(markers, [*markers[1:], None], strict=True):
        version = int(marker.group(1))
        if version > since:
            sections.append((version, sql[marker.start() : following.start() if following else len(sql)]))
    return sections


# SQLAlchemy's asyncpg dialect: $n placeholders (paramstyle numeric_dollar), each with a cast naming its type.
DIALECT: Dialect = make_url("postgresql+asyncpg://").get_dialect()()


@dataclass(frozen=True)
class Compiled:
    """A statement compiled once: its SQL text, and where each $n parameter takes its value from (``sources``
    index ``(*values, *constants)``: the values a caller binds, in the order of ``names``, then the statement's own
    constants, such as a subquery's LIMIT 1)."""

    text: str
    sources: tuple[int, ...]
    constants: tuple[Any, ...]
    value_count: int

    def arguments(self, values: Sequence[Any]) -> list[Any]:
        """The arguments for asyncpg, in $n order; ``values`` must already be what asyncpg encodes (a list for an
        array): SQLAlchemy's bind processors do not run."""
        assert len(values) == self.value_count, (len(values), self.value_count)
        every = (*values, *self.constants)
        return [every[i] for i in self.sources]


def compile_statement(statement: ClauseElement, names: Sequence[str]) -> Compiled:
    """``statement`` as SQL text for asyncpg; ``names`` are its bind parameters that each execution fills in."""
    compiled = statement.compile(dialect=DIALECT)
    assert isinstance(compiled, SQLCompiler)
    if compiled.post_compile_params:  # "expanding" IN lists and the like are rendered at each execution
        raise ValueError("a statement compiled once cannot have parameters rendered per execution")
    index = {name: i for i, name in enumerate(names)}
    positions = compiled.positiontup or []
    missing = index.keys() - set(positions)
    if missing:
        raise ValueError(f"bind parameters not in the statement: {sorted(missing)}")
    constants = [name for name in positions if name not in index]
    unnamed = [name for name in constants if compiled.binds[name].required]
    if unnamed:
        raise ValueError(f"bind parameters without a value: {unnamed}")
    sources = [index[name] if name in index else len(names) + constants.index(name) for name in positions]
    values = tuple(compiled.binds[name].effective_value for name in constants)
    return Compiled(compiled.string, tuple(sources), values, len(names))
