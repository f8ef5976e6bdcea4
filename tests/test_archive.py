"""dicomweb/archive.py: ``open_archive`` builds the archive's resources outside any HTTP app and tears them down;
the archive and the services it serves know no HTTP."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest

from dicomweb.archive import open_archive
from dicomweb.config import Settings
from dicomweb.db.outage import DatabaseUnreachable

from .conftest import free_port

DICOMWEB = Path(__file__).parent.parent / "dicomweb"


class TestOpenArchive:
    """The resources of an archive, for the HTTP app, ``dicomweb import`` and a future DIMSE server alike."""

    def test_open_and_close(self, new_database: Any, tmp_path: Path) -> None:
        """Inside the block the database answers and the storage is prepared; afterwards the pools and the CPU
        process pool are closed."""
        settings = Settings(data_dir=tmp_path, database_url=new_database().url)

        async def go() -> Any:
            async with open_archive(settings) as archive:
                async with archive.pool.acquire() as conn:
                    assert await conn.fetchval("SELECT count(*) FROM instance") == 0
                assert archive.storage.root == tmp_path
                assert (tmp_path / "files").is_dir() and len(archive.locations) == 0
            return archive

        archive = asyncio.run(go())
        assert archive.pool.is_closing()
        with pytest.raises(RuntimeError):
            archive.cpu.submit(print)

    def test_database_unreachable(self, tmp_path: Path) -> None:
        """A database that does not answer fails the opening with DatabaseUnreachable, which ``dicomweb import``
        reports in one line."""
        url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
        with pytest.raises(DatabaseUnreachable):
            asyncio.run(open_archive(Settings(data_dir=tmp_path, database_url=url)).__aenter__())


class TestNoHttp:
    """The import rule of STYLE.md section 0: the archive's resources and the services never import Starlette, so
    that a second transport can use them."""

    @pytest.mark.parametrize(
        "module", [DICOMWEB / "archive.py", *sorted((DICOMWEB / "services").glob("*.py"))], ids=lambda p: p.name
    )
    def test_no_starlette(self, module: Path) -> None:
        """No import of starlette."""
        imported = []
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
                imported.append(node.module)
        assert not [name for name in imported if name.split(".")[0] == "starlette"]
