"""Store one received instance: validate it, put its file in place, index it; undo the file if indexing fails.

Shared by STOW-RS and ``dicomweb import``. Order (as in dicom-server's StoreOrchestrator): inside one database
transaction holding the SOP Instance UID's lock, the file is renamed into place, then the rows are written; if
anything fails before the commit, the placed file is removed again. A crash between rename and commit leaves at
worst a file no row points to, never a row without its file.

Duplicates (same SOP Instance UID): identical bytes are a success and nothing is written; different bytes are
refused with FailureReason 0x0111 and the stored copy is kept, unless DICOMWEB_DUPLICATES=overwrite, which writes
the new file beside the old one, switches the index in the same transaction and only then deletes the old file.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass

from .archive import Archive
from .db import index
from .instance import Instance, InvalidInstance, read_instance
from .status import FailureReason
from .storage import SpooledFile

log = logging.getLogger("dicomweb")


@dataclass(frozen=True)
class StoreResult:
    """The outcome for one instance: stored (maybe already), or failed with a reason and an explanation."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    instance: Instance | None = None
    failure: FailureReason | None = None
    detail: str = ""
    already_stored: bool = False

    @classmethod
    def failed(cls, error: InvalidInstance) -> StoreResult:
        return cls(error.sop_class_uid, error.sop_instance_uid, failure=error.reason, detail=error.detail)


async def prepare(spooled: SpooledFile, expected_study_instance_uid: str | None) -> Instance | InvalidInstance:
    """Parse and validate a spooled file in a worker thread."""
    try:
        return await asyncio.to_thread(read_instance, spooled.path, expected_study_instance_uid)
    except InvalidInstance as error:
        return error


async def commit(archive: Archive, spooled: SpooledFile, instance: Instance) -> StoreResult:
    """Place the file and index it in one transaction; the spooled temp file is gone afterwards in every case."""
    storage = archive.storage
    relative = storage.relative_path(
        instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid, spooled.sha256
    )
    uids = (instance.sop_class_uid, instance.sop_instance_uid)
    placed = False
    replaced: str | None = None
    try:
        async with archive.pool.acquire() as conn, conn.transaction():
            existing = await index.lock_instance(conn, instance.sop_instance_uid)
            if existing is not None:
                if existing.file_sha256 == spooled.sha256:
                    return StoreResult(*uids, instance=instance, already_stored=True)
                if archive.settings.duplicates == "reject":
                    return StoreResult(
                        *uids,
                        failure=FailureReason.DUPLICATE_SOP_INSTANCE,
                        detail=f"SOP Instance {instance.sop_instance_uid} is already stored with different content",
                    )
                await index.delete_instance(conn, existing.pk)
                replaced = existing.file_path
            await storage.place(spooled, relative)
            placed = True
            await index.insert_instance(conn, instance, relative, spooled.size, spooled.sha256, instance.metadata)
    except index.SeriesElsewhere:
        return await _undo(
            archive,
            relative if placed else None,
            StoreResult(
                *uids,
                failure=FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                detail=f"SeriesInstanceUID {instance.series_instance_uid} is stored in another study",
            ),
        )
    except OSError as exc:
        reason = FailureReason.OUT_OF_RESOURCES if exc.errno == errno.ENOSPC else FailureReason.PROCESSING_FAILURE
        log.exception("storing %s failed", instance.sop_instance_uid)
        return await _undo(
            archive,
            relative if placed else None,
            StoreResult(*uids, failure=reason, detail=f"the archive could not write the file: {exc.strerror}"),
        )
    except Exception:
        log.exception("storing %s failed", instance.sop_instance_uid)
        return await _undo(
            archive,
            relative if placed else None,
            StoreResult(
                *uids, failure=FailureReason.PROCESSING_FAILURE, detail="the archive could not index the instance"
            ),
        )
    finally:
        await storage.discard(spooled)  # no-op once renamed into place
    if replaced is not None and replaced != relative:
        await storage.remove(replaced)
    return StoreResult(*uids, instance=instance)


async def _undo(archive: Archive, placed: str | None, result: StoreResult) -> StoreResult:
    if placed is not None:
        await archive.storage.remove(placed)
    return result


async def store_spooled(archive: Archive, spooled: SpooledFile, expected_study_instance_uid: str | None) -> StoreResult:
    """Validate, place and index one spooled file (the path ``dicomweb import`` takes for each file)."""
    prepared = await prepare(spooled, expected_study_instance_uid)
    if isinstance(prepared, InvalidInstance):
        await archive.storage.discard(spooled)
        return StoreResult.failed(prepared)
    return await commit(archive, spooled, prepared)
