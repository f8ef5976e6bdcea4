"""``dicomweb check [--verify] [--repair]``: the reconciliation of every start (``reconcile.py``) on demand, beside a
running server or not, with each file's size compared with its row's (and with ``--verify`` its SHA-256), one line
per finding on stdout, a summary, and an exit code for cron: 0 nothing found, 1 findings (repaired or not), 2 the
check could not run (no archive there, the database unreachable)."""

from __future__ import annotations

import asyncio
import sys

from obstore.exceptions import BaseError as ObjectStoreError

from .config import Settings
from .reconcile import (
    BUSY_MIN_AGE_SECONDS,
    LOST_AND_FOUND,
    Findings,
    repair_storage,
    scan_storage,
    uids,
    write_summary,
)

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
CHECK_MIN_AGE_SECONDS = BUSY_MIN_AGE_SECONDS  # beside a running server: files written since are not judged


async def check(settings: Settings, verify: bool, repairing: bool, progress: bool) -> int:
    """Run the check on the archive of ``settings`` (its database reached as ``dicomweb import`` reaches it)."""
    from .archive import open_archive
    from .db.outage import unreachable
    from .db.pool import SchemaError

    if settings.storage == "file" and not (settings.data_dir / "files").is_dir():
        print(f"dicomweb: no archive in {settings.data_dir} (no files/ folder)", file=sys.stderr)
        return EXIT_ERROR
    moved: dict[str, str] = {}
    try:
        async with open_archive(settings) as archive, archive.pool.acquire() as conn:
            storage = archive.storage
            findings = await scan_storage(
                conn, storage, sizes=True, verify=verify, min_age=CHECK_MIN_AGE_SECONDS, progress=progress
            )
            if repairing:
                moved = await repair_storage(storage, findings)
            await asyncio.to_thread(write_summary, storage.root, findings)
    except Exception as exc:
        if not (unreachable(exc) or isinstance(exc, SchemaError | OSError | ObjectStoreError)):
            raise
        print(f"dicomweb: the check could not run: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for line in report(findings, moved, repairing, verify):
        print(line)
    return EXIT_FINDINGS if findings.count() else EXIT_CLEAN


def report(findings: Findings, moved: dict[str, str], repairing: bool, verify: bool) -> list[str]:
    """One line per finding, then the summary by finding."""
    lines = []
    for path in findings.stale_temp_files:
        lines.append(f"stale temp file  {path}" + ("  removed" if repairing else ""))
    for path in findings.orphan_files:
        where = moved.get(path)
        lines.append(f"orphan file      {path}" + (f"  moved to {where}" if where else ""))
    for stored in findings.missing_files:
        lines.append(f"missing file     {stored.file_path}  {uids(stored)}")
    for stored, size in findings.size_mismatches:
        lines.append(
            f"size mismatch    {stored.file_path}  {size} bytes, the index says {stored.file_size}; {uids(stored)}"
        )
    for stored in findings.hash_mismatches:
        lines.append(f"hash mismatch    {stored.file_path}  SHA-256 differs from the index's; {uids(stored)}")
    done = {True: " (removed)", False: " (--repair removes them)"}[repairing]
    found = [
        _count(len(findings.stale_temp_files), "stale temp file") + (done if findings.stale_temp_files else ""),
        _count(len(findings.orphan_files), "orphan file")
        + (
            (f" (moved to {LOST_AND_FOUND}/)" if repairing else f" (--repair moves them to {LOST_AND_FOUND}/)")
            if findings.orphan_files
            else ""
        ),
        _count(len(findings.missing_files), "missing file")
        + (" (send these instances again)" if findings.missing_files else ""),
        _count(len(findings.size_mismatches), "size mismatch"),
        _count(len(findings.hash_mismatches), "hash mismatch") if verify else "hashes not checked (--verify)",
    ]
    lines.append(f"checked {findings.listed} files against {findings.indexed} indexed instances: " + ", ".join(found))
    if findings.unjudged:
        lines.append(
            f"{findings.unjudged} file(s) no row names were left unjudged (written in the last "
            f"{CHECK_MIN_AGE_SECONDS // 60} minutes, or transactions stayed open): a later check judges them"
        )
    return lines


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}{'es' if what.endswith('h') else 's'}"
