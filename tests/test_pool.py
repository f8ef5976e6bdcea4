"""db/pool.py's compile_statement: a SQLAlchemy Core statement as SQL text and $n arguments for asyncpg."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, select

from dicomweb.db.pool import compile_statement
from dicomweb.db.tables import series, study


class TestCompileStatement:
    """What a statement compiled once needs: every $n filled, by the caller or by the statement itself."""

    def test_values_and_constants_in_placeholder_order(self) -> None:
        """Named values go where their $n is; the statement's own constants (a LIMIT 1) keep their value."""
        first = select(series.c.pk).where(series.c.study_pk == study.c.pk).limit(1).scalar_subquery()
        statement = select(study.c.pk, first).where(study.c.study_date >= bindparam("b"), study.c.pk == bindparam("a"))
        compiled = compile_statement(statement, ["a", "b"])
        assert "$3" in compiled.text and "$4" not in compiled.text
        assert compiled.arguments([7, "2020"]) == [1, "2020", 7]

    def test_value_count_checked(self) -> None:
        """A caller passing one value too few or too many is a bug, not a query."""
        compiled = compile_statement(select(study.c.pk).where(study.c.pk == bindparam("a")), ["a"])
        with pytest.raises(AssertionError):
            compiled.arguments([])

    def test_name_not_in_statement(self) -> None:
        """A value named but never bound is refused when compiling."""
        with pytest.raises(ValueError, match="not in the statement"):
            compile_statement(select(study.c.pk).where(study.c.pk == bindparam("a")), ["a", "b"])

    def test_bind_without_value(self) -> None:
        """A bind parameter neither named nor given a value is refused."""
        with pytest.raises(ValueError, match="without a value"):
            compile_statement(select(study.c.pk).where(study.c.pk == bindparam("a")), [])

    def test_rendered_per_execution_refused(self) -> None:
        """An expanding IN list changes the SQL with its length: it cannot be compiled once."""
        with pytest.raises(ValueError, match="per execution"):
            compile_statement(select(study.c.pk).where(study.c.study_instance_uid.in_(["1", "2"])), [])
