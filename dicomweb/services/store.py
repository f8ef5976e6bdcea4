"""Store received instances: validate each, put the files in place, index them; undo the files if indexing fails.

Shared by STOW-RS, the reporting API's uploads, ``dicomweb import`` and C-STORE. ``prepare`` parses a received file
and puts it in its place under ``files/``, durably, in a worker thread. ``commit`` then indexes a batch (the instances
of one request) in one database transaction, together with the batches of concurrent requests (``group_commit``), in
the order and phases ``db.index`` describes: rows first, then the aggregates, then COMMIT. If the transaction fails,
each batch, then each instance, is retried in a transaction of its own, so one bad instance never costs the others;
the files of instances that end up not stored are removed. If the database is gone, nothing is retried: the files are
removed and the error propagates (a 503 for STOW-RS). A file is in place before its row commits, never after: a crash
in between leaves a file that no row names (moved aside at the next start), never a row without its file. What the
archive's ``on_store`` hook makes of a new instance (annotations from a measurement report: ``on_store.py``) is
written in the same transaction, after the rows and in a savepoint of its own.

Duplicates (same SOP Instance UID): identical bytes are a success and nothing of the new copy is kept; different
bytes are refused with FailureReason 0x0111 and the stored copy is kept, unless DICOMWEB_DUPLICATES=overwrite, which
indexes the new file in place of the old in one transaction and only then deletes the old file.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial

import asyncpg

from ..archive import Archive
from ..db import audit as audit_db
from ..db import index
from ..db.audit import Event
from ..db.outage import DATABASE_ERRORS, unreachable
from ..instance import Instance, InvalidInstance, read_instance
from ..status import FailureReason
from ..storage import SpooledFile, Storage, cleanup
from .on_store import OnStore

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


@dataclass(frozen=True)
class Prepared:
    """A validated instance whose file is durable in its place under ``files/`` (a file or an object: the storage
    backend's), waiting for its row. A crash now leaves a file that no row names, which the next start moves to
    ``lost+found/`` (``reconcile.py``)."""

    file: SpooledFile  # the received file (gone from tmp/ once placed), its size and SHA-256
    stored_path: str  # its path relative to the data folder, as the row names it
    instance: Instance
    stored_by: str = ""  # who stores it (a token's subject, a calling AE title), for the on_store hook


@dataclass(frozen=True)
class Parsed:
    """A validated instance whose file is still in ``tmp/``."""

    file: SpooledFile
    instance: Instance


def parse_here(
    spooled: SpooledFile, expected_study_instance_uid: str | None, on_store: OnStore | None = None
) -> Parsed | InvalidInstance:
    """Parse and validate a spooled file, and let the archive's ``on_store`` hook read it (blocking)."""
    try:
        return Parsed(spooled, read_instance(spooled.path, expected_study_instance_uid, spooled.data, on_store))
    except InvalidInstance as invalid:
        return invalid


def place_here(storage: Storage, parsed: Parsed) -> Prepared:
    """Put a parsed file in its place durably (``Storage.place_now``; blocking)."""
    instance = parsed.instance
    relative_path = storage.path_for(
        parsed.file, instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid
    )
    storage.place_now(parsed.file, relative_path)
    return Prepared(parsed.file, relative_path, instance)


def prepare_here(
    storage: Storage,
    spooled: SpooledFile,
    expected_study_instance_uid: str | None,
    on_store: OnStore | None = None,
) -> Prepared | InvalidInstance:
    """Parse and validate a spooled file, then put it in place durably, in the calling thread: off the event loop, in
    one hand-off per file, for a caller that commits it at once. Every hand-off to a worker thread is a wake-up and a
    turn of the interpreter lock, and with many files in flight those turns (futex calls) cost more CPU than the
    parse."""
    parsed = parse_here(spooled, expected_study_instance_uid, on_store)
    return parsed if isinstance(parsed, InvalidInstance) else place_here(storage, parsed)


async def prepare(
    storage: Storage,
    spooled: SpooledFile,
    expected_study_instance_uid: str | None,
    on_store: OnStore | None = None,
) -> Prepared | InvalidInstance:
    """``prepare_here`` in a worker thread, for a caller that commits at once. Should the caller be cancelled
    meanwhile (the server stopping), the file the thread goes on to place is removed when it has."""
    work = asyncio.ensure_future(
        asyncio.to_thread(prepare_here, storage, spooled, expected_study_instance_uid, on_store)
    )
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        work.add_done_callback(partial(_remove_placed, storage))
        raise


def _remove_placed(storage: Storage, work: asyncio.Future[Prepared | InvalidInstance]) -> None:
    if not work.cancelled() and work.exception() is None:
        outcome = work.result()
        if isinstance(outcome, Prepared):
            storage.remove_now([outcome.stored_path])  # one removal, on the event loop: the server is stopping


async def parse(
    spooled: SpooledFile, expected_study_instance_uid: str | None, on_store: OnStore | None = None
) -> Parsed | InvalidInstance:
    """``parse_here`` in a worker thread: a STOW-RS part while the rest of the body arrives."""
    return await asyncio.to_thread(parse_here, spooled, expected_study_instance_uid, on_store)


async def place(storage: Storage, parsed: list[Parsed]) -> list[Prepared]:
    """Put parsed files in place, in worker threads, once a request's body is complete and just before its commit:
    a file is in place only for as long as its commit takes, never while the rest of a long body arrives, so that
    ``dicomweb check`` beside a running server (which leaves files younger than some minutes alone) never takes one
    for an orphan. If one fails, or the caller is cancelled, those placed are removed and the files stay in tmp/."""
    work = asyncio.ensure_future(
        asyncio.gather(*(asyncio.to_thread(place_here, storage, p) for p in parsed), return_exceptions=True)
    )
    try:
        outcomes = await asyncio.shield(work)
    except asyncio.CancelledError:
        work.add_done_callback(partial(_remove_all_placed, storage))
        raise
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failure is not None:
        await remove_placed(storage, [o for o in outcomes if isinstance(o, Prepared)])
        raise failure
    return [o for o in outcomes if isinstance(o, Prepared)]


def _remove_all_placed(storage: Storage, work: asyncio.Future[list[Prepared | BaseException]]) -> None:
    if not work.cancelled() and work.exception() is None:
        storage.remove_now([o.stored_path for o in work.result() if isinstance(o, Prepared)])


async def remove_placed(storage: Storage, prepared: Iterable[Prepared]) -> None:
    """Remove the placed files of instances that will not be committed; should the caller be cancelled meanwhile,
    the removal is finished all the same."""
    paths = [p.stored_path for p in prepared]
    if paths:
        await cleanup(storage.remove_now, paths)


async def discard(archive: Archive, outcomes: Iterable[Prepared | InvalidInstance | BaseException]) -> None:
    """Remove the placed files of prepared instances that will not be committed."""
    await remove_placed(archive.storage, (o for o in outcomes if isinstance(o, Prepared)))


class _Retry(Exception):
    """The transaction failed as a whole; store its instances in smaller transactions."""


@dataclass
class AuditWith:
    """A request's audit event, committed in the transaction that stores its instances: one commit (one WAL flush)
    for both, where writing it after the answer's status is known cost a second one (``audit.audited``). Only the
    first transaction tried holds it; should that fail, the retries do not, and the request writes its event itself."""

    event: Callable[[list[StoreResult]], Event]  # the event, from the batch's results
    committed: Event | None = None  # set once committed


@dataclass
class StoreBatch:
    """One request's instances and its audit event, as the group commit takes them."""

    instances: list[Prepared]
    audit: AuditWith | None

    def __len__(self) -> int:
        return len(self.instances)


async def commit(
    archive: Archive, batch: list[Prepared], audit: AuditWith | None = None, stored_by: str = ""
) -> list[StoreResult]:
    """Store a batch; results in the batch's order. The temp files are gone afterwards in every case. ``stored_by``:
    who stores it (a token's subject, a calling AE title), for what the archive's ``on_store`` hook writes.

    Batches of concurrent requests are committed together (``group_commit``)."""
    if not batch:
        return []
    if stored_by:
        batch = [replace(prepared, stored_by=stored_by) for prepared in batch]
    return await archive.stores.submit(StoreBatch(batch, audit), partial(_commit_group, archive))


async def _commit_group(archive: Archive, batches: list[StoreBatch]) -> list[list[StoreResult]]:
    """Commit the batches of concurrent requests in one transaction; each batch's results, in its order."""
    flat = [prepared for batch in batches for prepared in batch.instances]
    leftovers = flat
    try:
        try:
            results = await _commit(archive, flat, batches)
        except _Retry as failed:
            results = await _retry(archive, [batch.instances for batch in batches], failed)
        # The files of instances stored stay; the others (failed, or stored already) go.
        leftovers = [p for p, r in zip(flat, results, strict=True) if r.instance is None or r.already_stored]
    finally:
        await remove_placed(archive.storage, leftovers)
    grouped: list[list[StoreResult]] = []
    for batch in batches:
        grouped.append(results[: len(batch)])
        results = results[len(batch) :]
    return grouped


async def _commit_with_retries(archive: Archive, batches: list[list[Prepared]]) -> list[StoreResult]:
    """One transaction for ``batches``; if it fails, one for each batch, and then one for each instance of a batch
    that failed, so that one bad instance never costs the others (nor another request's)."""
    flat = [prepared for batch in batches for prepared in batch]
    try:
        return await _commit(archive, flat)
    except _Retry as failed:
        return await _retry(archive, batches, failed)


async def _retry(archive: Archive, batches: list[list[Prepared]], failed: _Retry) -> list[StoreResult]:
    flat = [prepared for batch in batches for prepared in batch]
    if len(flat) == 1:
        return [_processing_failure(flat[0].instance, failed.__cause__)]
    smaller = batches if len(batches) > 1 else [[prepared] for prepared in flat]
    results: list[StoreResult] = []
    for batch in smaller:
        results.extend(await _commit_with_retries(archive, [batch]))
    return results


def _processing_failure(instance: Instance, cause: BaseException | None) -> StoreResult:
    log.error("storing %s failed: %r", instance.sop_instance_uid, cause)
    if isinstance(cause, OSError):
        full = cause.errno == errno.ENOSPC
        reason = FailureReason.OUT_OF_RESOURCES if full else FailureReason.PROCESSING_FAILURE
        detail = f"the archive could not write the file: {cause.strerror}"
    else:
        reason, detail = FailureReason.PROCESSING_FAILURE, "the archive could not index the instance"
    return StoreResult(instance.sop_class_uid, instance.sop_instance_uid, failure=reason, detail=detail)


async def _commit(
    archive: Archive, batch: list[Prepared], audited: list[StoreBatch] | None = None
) -> list[StoreResult]:
    """One transaction for the whole batch; raises _Retry (with nothing stored) if it cannot commit. The files are in
    place already (``prepare``); those of instances not stored are removed by ``_commit_group``."""
    storage = archive.storage
    results: dict[int, StoreResult] = {}
    replaced: list[str] = []
    order = sorted(
        range(len(batch)),
        key=lambda i: (
            batch[i].instance.study_instance_uid,
            batch[i].instance.series_instance_uid,
            batch[i].instance.sop_instance_uid,
        ),
    )
    try:
        async with archive.pool.acquire() as conn, conn.transaction():
            series_refs: dict[str, index.SeriesRef] = {}
            series_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            study_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            hooked: list[Prepared] = []  # stored, and read by the on_store hook
            for i in order:
                prepared = batch[i]
                instance = prepared.instance
                uids = (instance.sop_class_uid, instance.sop_instance_uid)
                ref = series_refs.get(instance.series_instance_uid)
                if ref is None:
                    try:
                        ref = await index.resolve_series(conn, instance, archive.known_series)
                    except index.SeriesElsewhere:
                        results[i] = StoreResult(
                            *uids,
                            failure=FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                            detail=f"SeriesInstanceUID {instance.series_instance_uid} is stored in another study",
                        )
                        continue
                    series_refs[instance.series_instance_uid] = ref
                    if ref.created:
                        study_counts[instance.study_instance_uid][0] = ref.study_pk
                        study_counts[instance.study_instance_uid][2] += 1
                path = prepared.stored_path
                file = prepared.file
                pk = await index.insert_instance(conn, ref.series_pk, instance, path, file.size, file.sha256)
                if pk is None:
                    existing = await index.find_instance(conn, instance.sop_instance_uid)
                    assert existing is not None
                    if existing.file_sha256 == file.sha256:
                        results[i] = StoreResult(*uids, instance=instance, already_stored=True)
                        continue
                    if archive.settings.duplicates == "reject":
                        results[i] = StoreResult(
                            *uids,
                            failure=FailureReason.DUPLICATE_SOP_INSTANCE,
                            detail=f"SOP Instance {instance.sop_instance_uid} is already stored with other content",
                        )
                        continue
                    await _overwrite(conn, existing, instance)
                    archive.known_series.forget()  # the old row may have taken its series along
                    replaced.append(existing.file_path)
                    ref = await index.resolve_series(conn, instance)  # the old row may have taken its series along
                    if ref.created:
                        study_counts[instance.study_instance_uid][0] = ref.study_pk
                        study_counts[instance.study_instance_uid][2] += 1
                    series_refs[instance.series_instance_uid] = ref
                    pk = await index.insert_instance(conn, ref.series_pk, instance, path, file.size, file.sha256)
                    assert pk is not None
                series_counts[instance.series_instance_uid][0] = ref.series_pk
                series_counts[instance.series_instance_uid][1] += 1
                study_counts[instance.study_instance_uid][0] = ref.study_pk
                study_counts[instance.study_instance_uid][1] += 1
                results[i] = StoreResult(*uids, instance=instance)
                if instance.found is not None:
                    hooked.append(prepared)
            # After every row of the transaction, so that what the hook looks up (an image stored together with an
            # SR) is there; before the aggregates, whose row locks are held until the COMMIT.
            for prepared in hooked:
                await _on_store(archive, conn, prepared)
            events = _audit_events(audited, [results[i] for i in range(len(batch))]) if audited else []
            if events:
                await audit_db.record_many(conn, [event for _, event in events])
            # The aggregates last: their row locks serialise stores into one series, so they are held only for two
            # UPDATEs and the COMMIT.
            await index.add_counts(
                conn,
                {uid: (pk, n) for uid, (pk, n) in series_counts.items()},
                {uid: (pk, n, s) for uid, (pk, n, s) in study_counts.items()},
            )
    except (OSError, *DATABASE_ERRORS) as exc:
        archive.known_series.forget()  # a series remembered may be gone (the instance's foreign key failed)
        if unreachable(exc):
            raise  # the database is gone: no instance can be stored now, the request is a 503 (errors.py)
        log.warning("storing a batch of %d instances failed (%r); retrying in smaller ones", len(batch), exc)
        raise _Retry from exc
    for request_audit, event in events:
        request_audit.committed = event
    if replaced:
        await storage.remove(replaced)
    return [results[i] for i in range(len(batch))]


async def _on_store(archive: Archive, conn: asyncpg.Connection, prepared: Prepared) -> None:
    """The archive's on_store hook for a newly stored instance, in a savepoint: should it fail (short of losing the
    database), its writes are undone and logged, and the instance is stored all the same."""
    if archive.on_store is None:
        return
    instance = prepared.instance
    try:
        async with conn.transaction():
            await archive.on_store.stored(conn, instance, instance.found, prepared.stored_by)
    except Exception as exc:
        if unreachable(exc):
            raise
        log.exception("%s failed for %s; stored without it", type(archive.on_store).__name__, instance.sop_instance_uid)


def _audit_events(batches: list[StoreBatch], results: list[StoreResult]) -> list[tuple[AuditWith, Event]]:
    """The audit events of the batches that carry one, each from its own results (``results`` is the group's)."""
    events: list[tuple[AuditWith, Event]] = []
    start = 0
    for batch in batches:
        if batch.audit is not None:
            events.append((batch.audit, batch.audit.event(results[start : start + len(batch)])))
        start += len(batch)
    return events


async def _overwrite(conn: asyncpg.Connection, existing: index.StoredInstance, instance: Instance) -> None:
    """DICOMWEB_DUPLICATES=overwrite: drop the old row (its file goes after the commit)."""
    log.warning("replacing stored SOP Instance %s with new content", instance.sop_instance_uid)
    await index.delete_instance(conn, existing.pk)


async def store_prepared(
    archive: Archive, spooled: SpooledFile, prepared: Prepared | InvalidInstance, stored_by: str = ""
) -> StoreResult:
    """Index what ``prepare_here`` made of ``spooled``; a file refused is removed."""
    if isinstance(prepared, InvalidInstance):
        await archive.storage.discard([spooled])
        return StoreResult.failed(prepared)
    return (await commit(archive, [prepared], stored_by=stored_by))[0]
