"""Measurements saved in a viewer become annotations: whenever a TID 1500 Imaging Measurement Report is stored (STOW-RS,
an upload, ``dicomweb import``, C-STORE), each of its measurement groups becomes an annotation on the image its SCOORD
selects, in the transaction that stores the SR: an SR acknowledged has its annotations, a store that fails leaves none.

The archive runs this as its ``on_store`` hook (``dicomweb/services/on_store.py``; given by ``dicomweb.app``): ``read``
in the parse phase (``sr_shapes.py``, with highdicom, off the event loop), ``stored`` in the storing transaction.

For each SR:

- Supersession: the annotations and unimported groups of the SRs its Predecessor Documents Sequence names (PS3.3
  C.17.2.3) are replaced by its own; OHIF names the previous report when a report is saved again.
- Idempotence: a group whose Tracking UID (112040) an annotation already has, or is ``2.25.<N>`` where N is an
  annotation's id as an integer (how an annotation made through the API is exported to SR), is an annotation here
  already and is skipped: storing an SR again, or the archive's own export coming back, adds nothing. (Storing the same
  SOP Instance again does not even get here: the store finds it stored.)
- A group that draws no annotation's shape, or on a frame beyond the image's, is recorded as not imported
  (``db.sr_unimported``), listed in the study's JSON; the SR itself is stored as any instance. So is an SR that cannot
  be read at all, with a WARNING naming it. A group on an image the archive does not hold yet is listed so too, and
  waits for the image with the annotation it draws: ``sr_waiting.py`` imports it once the image is stored.
- Author: who stored the SR (the token's subject, the calling AE title, ``dicomweb import``).
"""

from __future__ import annotations

import logging

import asyncpg
from pydicom.dataset import Dataset

from dicomweb.instance import Instance

from .db import annotations as annotations_db
from .db import sr_unimported
from .sr_shapes import ReportShapes, read_report

log = logging.getLogger("dicomweb")

UNKNOWN_AUTHOR = "archive"  # should a transport not say who stored the SR


class MeasurementImport:
    """The archive's ``OnStore`` hook for TID 1500 reports (stateless, so it pickles into ``dicomweb import``'s
    processes)."""

    def read(self, ds: Dataset, sop_class_uid: str) -> ReportShapes | None:
        return read_report(ds, sop_class_uid)

    async def stored(self, conn: asyncpg.Connection, instance: Instance, found: object, stored_by: str) -> None:
        assert isinstance(found, ReportShapes)
        await import_report(conn, instance, found, stored_by or UNKNOWN_AUTHOR)


async def import_report(conn: asyncpg.Connection, instance: Instance, report: ReportShapes, author: str) -> None:
    """Make the report's annotations, replacing those of its predecessors (in the caller's transaction)."""
    sr_uid = instance.sop_instance_uid
    # Its own UID too: an SR stored anew in place of itself (DICOMWEB_DUPLICATES=overwrite) replaces its annotations.
    replaced = [*report.predecessors, sr_uid]
    removed = await annotations_db.delete_imported_from(conn, replaced)
    await sr_unimported.forget(conn, replaced)
    if report.unreadable is not None:
        log.warning("SR %s: no measurement imported, %s", sr_uid, report.unreadable)
        await sr_unimported.add(conn, sr_uid, instance.study_instance_uid, [(None, report.unreadable)])
        return
    not_imported = [(group.tracking_uid, group.reason) for group in report.not_drawn]
    known = await annotations_db.known_tracking_uids(conn, [g.tracking_uid for g in report.drawn if g.tracking_uid])
    todo = [group for group in report.drawn if group.tracking_uid not in known]
    frames = await annotations_db.lock_images(conn, sorted({group.sop_instance_uid for group in todo}))
    imported: list[annotations_db.Imported] = []
    waiting: list[annotations_db.Imported] = []
    for group in todo:
        shape = annotations_db.Shape(group.type, group.coordinates, group.frame_number, group.label, None)
        drawn = annotations_db.Imported(group.sop_instance_uid, shape, group.value, group.unit, group.tracking_uid)
        number_of_frames = frames.get(group.sop_instance_uid)
        if number_of_frames is None:
            waiting.append(drawn)
        elif (beyond := beyond_frames(drawn, number_of_frames)) is not None:
            not_imported.append((group.tracking_uid, beyond))
        else:
            imported.append(drawn)
    if imported:
        await annotations_db.insert_imported(conn, sr_uid, imported, author)
    if not_imported:
        await sr_unimported.add(conn, sr_uid, instance.study_instance_uid, not_imported)
    if waiting:
        await sr_unimported.add_waiting(conn, sr_uid, instance.study_instance_uid, waiting, author)
    log.info(
        "SR %s by %s: %d annotation(s) imported, %d waiting for their image, %d not imported, %d there already, "
        "%d of its predecessors replaced",
        sr_uid,
        author,
        len(imported),
        len(waiting),
        len(not_imported),
        len(report.drawn) - len(todo),
        removed,
    )


def beyond_frames(drawn: annotations_db.Imported, number_of_frames: int) -> str | None:
    """Why the annotation cannot be on its image, when its frame is beyond the image's frames."""
    frame_number = drawn.shape.frame_number
    if frame_number is not None and frame_number > number_of_frames:
        return f"frame {frame_number} is beyond the {number_of_frames} of its image"
    return None
