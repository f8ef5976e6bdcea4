"""Measurement groups waiting for their image become annotations once it is stored.

An SR may arrive before the images it measures: a C-MOVE from another archive sends series in any order, a script may
store the SR series first. ``sr_import.py`` records such a group in radiology_sr_unimported with the annotation it
draws and the image it waits for; here every server process looks, every POLL_SECONDS, for waiting groups whose image
is now stored, and imports them as the SR's import would have: in one transaction, the images locked against
deletion, the SR's storer as the author, a group whose Tracking UID an annotation has by now left out. ``FOR UPDATE
SKIP LOCKED`` gives each waiting group to one process, whatever the number of workers and replicas.

Polling rather than a look-up in every store's transaction keeps storing (the archive's busiest path) free of a query
that almost always finds nothing; the price is that the annotations appear up to POLL_SECONDS after the image.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import asyncpg
import orjson

from dicomweb.db.outage import unreachable

from .db import annotations as annotations_db
from .db import sr_unimported
from .sr_import import beyond_frames

log = logging.getLogger("dicomweb")

POLL_SECONDS = 2.0
BATCH = 200  # waiting groups imported per transaction

# Waiting groups whose image is stored. Those of an SR no longer stored (deleted) are found too, to be dropped.
_ARRIVED_WHERE = """
WHERE u.image_sop_instance_uid IS NOT NULL
  AND EXISTS (SELECT 1 FROM instance i WHERE i.sop_instance_uid = u.image_sop_instance_uid)
"""
_ARRIVED = f"""
SELECT u.pk, u.source_sop_instance_uid, u.tracking_uid, u.image_sop_instance_uid, u.annotation, u.author,
       EXISTS (SELECT 1 FROM instance s WHERE s.sop_instance_uid = u.source_sop_instance_uid) AS source_stored
FROM radiology_sr_unimported u {_ARRIVED_WHERE}
ORDER BY u.pk
LIMIT $1
FOR UPDATE OF u SKIP LOCKED
"""
_ANY_ARRIVED = f"SELECT EXISTS (SELECT 1 FROM radiology_sr_unimported u {_ARRIVED_WHERE})"


async def import_arrived(conn: asyncpg.Connection) -> int:
    """Import up to BATCH waiting groups whose image is stored, in one transaction; how many groups were settled
    (imported, or found beyond the image's frames, there already, or of an SR deleted since)."""
    async with conn.transaction():
        rows = await conn.fetch(_ARRIVED, BATCH)
        if not rows:
            return 0
        live = [row for row in rows if row["source_stored"]]
        frames = await annotations_db.lock_images(conn, sorted({row["image_sop_instance_uid"] for row in live}))
        known = await annotations_db.known_tracking_uids(conn, [r["tracking_uid"] for r in live if r["tracking_uid"]])
        by_source: dict[tuple[str, str], list[annotations_db.Imported]] = defaultdict(list)
        settled: list[int] = [row["pk"] for row in rows if not row["source_stored"]]
        beyond: list[tuple[int, str]] = []
        for row in live:
            image = row["image_sop_instance_uid"]
            if image not in frames:  # deleted again since the query: it waits on
                continue
            drawn = sr_unimported.imported_of(image, row["tracking_uid"], orjson.loads(row["annotation"]))
            reason = beyond_frames(drawn, frames[image])
            if reason is not None:
                beyond.append((row["pk"], reason))
                continue
            settled.append(row["pk"])
            if drawn.tracking_uid not in known:
                by_source[(row["source_sop_instance_uid"], row["author"])].append(drawn)
        for (source, author), imported in by_source.items():
            await annotations_db.insert_imported(conn, source, imported, author)
            log.info(
                "SR %s by %s: %d waiting annotation(s) imported, their images stored", source, author, len(imported)
            )
        await sr_unimported.settle(conn, settled, beyond)
        return len(settled) + len(beyond)


async def import_waiting(pool: asyncpg.Pool, poll_seconds: float = POLL_SECONDS) -> None:
    """Import waiting groups whose image has been stored, every ``poll_seconds``, until cancelled (a background task
    of every server process). A database that is away is tried again at the next poll."""
    while True:
        try:
            async with pool.acquire() as conn:
                if await conn.fetchval(_ANY_ARRIVED):
                    while await import_arrived(conn) == BATCH:
                        pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not unreachable(exc):
                log.exception("importing the measurements waiting for their images failed")
        await asyncio.sleep(poll_seconds)
