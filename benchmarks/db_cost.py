"""What PostgreSQL sees per stored and per retrieved instance, and what an instance costs it on disk: the figures
for sizing one database behind several replicas (README, "Running at scale").

Against a running server and its database (the archive should hold nothing else being written meanwhile):

1. stores ``--count`` CT instances through STOW-RS, one per request, then as many in batches of ``--batch``;
2. retrieves each of them once (WADO-RS, as stored), reads the study's metadata once, and runs the study, series
   and instance searches of a viewer opening the study once;

and after each step prints the deltas of the database's own counters (``pg_stat_database``: commits, rows
inserted, updated and read; ``pg_stat_wal``: WAL records and bytes) divided by the instances. Last, the size of
every table with its indexes, and per instance (``pg_total_relation_size``), of whatever the archive holds.

Example::

    python benchmarks/db_cost.py http://127.0.0.1:8080/dicomweb postgresql://pacs@127.0.0.1/pacs --count 200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).parent))
from stow import CT_SIZE, UidSource, content_type, make_instances, multipart_body

COUNTERS = """
SELECT d.xact_commit, d.tup_inserted, d.tup_updated, d.tup_deleted, d.tup_fetched + d.tup_returned AS tup_read,
       w.wal_records, w.wal_bytes
FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()
"""
SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY bytes DESC
"""
STATS_FLUSH_SECONDS = 11.0  # an idle backend reports its counters within 10 s (PostgreSQL 15+: PGSTAT_IDLE_INTERVAL)
BOUNDARY = b"db-cost-boundary"


async def counters(url: str) -> dict[str, float]:
    """The database's counters now, once every backend has reported its own."""
    await asyncio.sleep(STATS_FLUSH_SECONDS)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(COUNTERS)
        assert row is not None
        return {key: float(value) for key, value in row.items()}
    finally:
        await conn.close()


async def sizes(url: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        return [(r["relname"], int(r["bytes"])) for r in await conn.fetch(SIZES)]
    finally:
        await conn.close()


def measured(url: str, name: str, instances: int, step: Callable[[], None]) -> None:
    """Run ``step`` and print the database's counters it moved, per instance."""
    before = asyncio.run(counters(url))
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    after = asyncio.run(counters(url))
    per = {key: (after[key] - before[key]) / instances for key in after}
    print(
        f"{name:34} {instances:5} inst {seconds:6.2f} s | per instance: commits {per['xact_commit']:5.2f}, "
        f"rows inserted {per['tup_inserted']:5.1f}, updated {per['tup_updated']:5.1f}, deleted "
        f"{per['tup_deleted']:4.1f}, read {per['tup_read']:7.1f}, WAL records {per['wal_records']:6.1f}, "
        f"WAL {per['wal_bytes'] / 1024:6.1f} KiB"
    )


def stow(client: httpx.Client, parts: list[bytes]) -> None:
    response = client.post(
        "/studies", content=multipart_body(parts, BOUNDARY), headers={"Content-Type": content_type(BOUNDARY)}
    )
    response.raise_for_status()


def uids(instance: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(instance), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("database_url", help="the server's PostgreSQL, e.g. postgresql://pacs@127.0.0.1/pacs")
    parser.add_argument("--count", type=int, default=200, help="CT instances per step (default 200)")
    parser.add_argument("--batch", type=int, default=50, help="instances per request in the batched step")
    parser.add_argument("--size", type=int, default=CT_SIZE, help=f"rows and columns of the CT images ({CT_SIZE})")
    parser.add_argument("--token", default=None, help="bearer token sent as 'Authorization: Bearer TOKEN'")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    rng = np.random.default_rng(1)
    source = UidSource()
    single = make_instances(args.count, args.size, source, rng)
    batched = make_instances(args.count, args.size, source, rng)
    with httpx.Client(base_url=args.base_url, headers=headers, timeout=600) as client:

        def store_singly() -> None:
            for instance in single:
                stow(client, [instance])

        def store_batched() -> None:
            for first in range(0, len(batched), args.batch):
                stow(client, batched[first : first + args.batch])

        measured(args.database_url, "STOW-RS, one per request", args.count, store_singly)
        measured(args.database_url, f"STOW-RS, {args.batch} per request", args.count, store_batched)
        study, series, _ = uids(single[0])

        def retrieve() -> None:
            for instance in single:
                _, _, sop = uids(instance)
                path = f"/studies/{study}/series/{series}/instances/{sop}"
                client.get(path, headers={"Accept": "application/dicom; transfer-syntax=*"}).raise_for_status()

        def open_in_viewer() -> None:
            client.get("/studies", params={"StudyInstanceUID": study}).raise_for_status()
            client.get(f"/studies/{study}/series").raise_for_status()
            client.get(f"/studies/{study}/series/{series}/instances").raise_for_status()
            client.get(f"/studies/{study}/metadata").raise_for_status()

        measured(args.database_url, "WADO-RS instance, each once", args.count, retrieve)
        measured(args.database_url, "QIDO x3 + study metadata, once", args.count, open_in_viewer)
    tables = asyncio.run(sizes(args.database_url))
    instances = asyncio.run(instance_count(args.database_url))
    print(f"\ntable sizes with indexes, {instances} instances in the archive:")
    for name, size in tables:
        if size > 64 * 1024:
            print(f"  {name:32} {size / 1024 / 1024:8.1f} MB  {size / max(instances, 1):8.0f} B/instance")
    total = sum(size for _, size in tables)
    print(f"  {'all tables':32} {total / 1024 / 1024:8.1f} MB  {total / max(instances, 1):8.0f} B/instance")


async def instance_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM instance"))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
