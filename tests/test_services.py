"""dicomweb/services/: the archive served without HTTP, as a second transport (DIMSE) will serve it: an archive
opened with ``open_archive``, plain values in, dataclasses out, transport-neutral errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomweb.archive import Archive, open_archive
from dicomweb.attributes import Level
from dicomweb.config import Settings
from dicomweb.db.retrieve import StoredFile
from dicomweb.query import parse
from dicomweb.services import delete, retrieve, search, store

from .data import ct_instance


def with_archive(new_database: Any, tmp_path: Path, work: Callable[[Archive], Awaitable[None]]) -> None:
    """Run ``work`` on an archive of its own (an empty database), in an event loop of its own."""
    settings = Settings(data_dir=tmp_path, database_url=new_database().url)

    async def go() -> None:
        async with open_archive(settings) as archive:
            await work(archive)

    asyncio.run(go())


async def store_bytes(archive: Archive, data: bytes) -> store.StoreResult:
    spooled = await archive.storage.temp_writer().close(data)
    prepared = await asyncio.to_thread(store.prepare_here, archive.storage, spooled, None)
    return await store.store_prepared(archive, spooled, prepared)


class TestStoreRetrieveDelete:
    """An instance stored, found and deleted through the services alone."""

    def test_round_trip(self, new_database: Any, tmp_path: Path) -> None:
        """Stored once (then already stored), located with its file, deleted with its file; then NotStored names
        what is missing at each level."""
        study, series = generate_uid(), generate_uid()
        data = ct_instance(study, series)
        sop = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID

        async def work(archive: Archive) -> None:
            async def read(stored: StoredFile, index: object) -> bytes:
                return await archive.storage.read_bytes(stored.file_path)

            first, again = await store_bytes(archive, data), await store_bytes(archive, data)
            assert first.failure is None and not first.already_stored and again.already_stored
            [stored] = await retrieve.stored_files(archive, study, None, None)
            assert stored.sop_instance_uid == sop
            await retrieve.check_files(archive, [stored])
            located, _ = await retrieve.locate(archive, study, series, sop)
            assert located == stored and (await retrieve.read_located(archive, study, series, sop, read))[1] == data
            assert await delete.delete_instances(archive, study, series, None) == 1
            assert await archive.storage.missing([stored.file_path]) == [stored.file_path]
            # Its location is still kept in memory: the file gone sends the read to the database, which says why.
            with pytest.raises(retrieve.NotStored, match=f"^instance {sop} of series {series} in study {study} is"):
                await retrieve.read_located(archive, study, series, sop, read)
            with pytest.raises(retrieve.NotStored, match=f"^series {series} of study {study} is not stored$"):
                await retrieve.stored_files(archive, study, series, None)
            with pytest.raises(retrieve.NotStored, match=f"^study {study} is not stored$"):
                await delete.delete_instances(archive, study, None, None)
            with pytest.raises(retrieve.FilesMissing, match="1 stored files are missing"):
                await retrieve.check_files(archive, [stored])

        with_archive(new_database, tmp_path, work)


class TestSearch:
    """The search QIDO-RS answers with (and C-FIND will), without a request."""

    def test_scoped_and_capped(self, new_database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The instances of a study, with RetrieveURLs under the base URL given; a cap leaves a count of the
        rest, a client's own limit does not."""
        study, series = generate_uid(), generate_uid()
        instances = [ct_instance(study, series, InstanceNumber=n) for n in (1, 2, 3)]
        sops = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID for data in instances]
        base = "https://pacs.example/dicomweb"

        async def work(archive: Archive) -> None:
            for data in instances:
                await store_bytes(archive, data)
            scope = {"StudyInstanceUID": study}
            found = await search.search(archive, parse([], Level.INSTANCE), scope, base)
            urls = [result[search.RETRIEVE_URL]["Value"][0] for result in found.results]
            assert sorted(urls) == sorted(f"{base}/studies/{study}/series/{series}/instances/{s}" for s in sops)
            assert found.more == 0
            monkeypatch.setitem(search.MAX_RESULTS, Level.INSTANCE, 2)
            capped = await search.search(archive, parse([], Level.INSTANCE), scope, base)
            assert (len(capped.results), capped.more, capped.more_at_least) == (2, 1, False)
            limited = await search.search(archive, parse([("limit", "2")], Level.INSTANCE), scope, base)
            assert (len(limited.results), limited.more) == (2, 0)

        with_archive(new_database, tmp_path, work)
