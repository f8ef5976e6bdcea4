"""Modality Worklist benchmark of one DICOM server (``AET@HOST:PORT``): MWL C-FIND latency over a worklist of
``--orders`` scheduled procedure steps, as a modality asks (its station AE title and a day).

The orders are made from ``--seed``: ``--stations`` stations (``CT_01``, ...), spread over ``--days`` days from
2027-01-04, 08:00 to 18:00, with patients, accession numbers and requested procedures of their own. They are put
on the worklist either through this archive's reporting API (``--schedule URL``: ``POST URL/api/radiology/studies``
for each, 8 at a time, no token: a server with ``DICOMWEB_AUTH=disabled``) or as the worklist files Orthanc's
ModalityWorklists plugin reads (``--write-wl DIR``: one DICOM file ``*.wl`` per order). Then each of ``--repeat``
queries (after ``--warmup``) names a station and a day drawn from the same seed, over one association, timed from
the request to the final status; every answer is checked to hold the items that station has on that day.

With ``--mpps N`` it then times N MPPS round trips (N-CREATE IN PROGRESS for one of the orders, by its accession
number, then N-SET COMPLETED with one performed series), one after another over one association; with
``--commit N`` it stores N CT instances of 512x512 (``stow.py``'s, ~525 KB, by STOW-RS to ``--schedule``'s server)
and times one storage commitment request for all of them, from the N-ACTION to the N-EVENT-REPORT, which must
commit to every one. Both need a server with ``DICOMWEB_DIMSE_UNKNOWN`` that allows the calling AE title, or a node
``BENCH`` with the ``mpps`` and ``commit`` permissions.

Examples::

    python benchmarks/worklist.py DICOMWEB@127.0.0.1:11112 --schedule http://127.0.0.1:8080
    python benchmarks/worklist.py ORTHANC@127.0.0.1:4242 --write-wl /tmp/wl   # before Orthanc starts on it
    python benchmarks/worklist.py ORTHANC@127.0.0.1:4242                      # the files are there: query only
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
)

sys.path.insert(0, str(Path(__file__).parent))
from dimse import Peer, association
from stow import (
    CT_SIZE,
    UidSource,
    content_type,
    encode,
    make_dataset,
    multipart_body,
    new_series,
    noisy_pixels,
    phantom,
)

logging.getLogger("pynetdicom").setLevel(logging.ERROR)

FIRST_DAY = datetime.date(2027, 1, 4)
CALLING_AET = "BENCH"


@dataclass(frozen=True)
class Order:
    accession_number: str
    patient_id: str
    patient_name: str
    station: str
    start: datetime.datetime
    procedure: str


def orders(count: int, stations: int, days: int, seed: int) -> list[Order]:
    """The worklist's orders, the same for the same arguments."""
    rng = random.Random(seed)
    made = []
    for n in range(count):
        day = FIRST_DAY + datetime.timedelta(days=rng.randrange(days))
        minute = rng.randrange(8 * 60, 18 * 60)
        start = datetime.datetime.combine(day, datetime.time(minute // 60, minute % 60), tzinfo=datetime.UTC)
        made.append(
            Order(
                accession_number=f"WL{seed:02d}{n:08d}",
                patient_id=f"WLP{rng.randrange(count // 2 + 1):07d}",
                patient_name=f"{rng.choice(['Smith', 'Müller', 'Garcia', 'Nguyen', 'Rossi'])}^Pat{n}",
                station=f"CT_{rng.randrange(stations) + 1:02d}",
                start=start,
                procedure=rng.choice(["CT head", "CT chest", "CT abdomen", "CT spine"]),
            )
        )
    return made


def schedule(url: str, made: list[Order]) -> float:
    """POST each order to the reporting API; the seconds it took."""

    def post(order: Order) -> None:
        body = {
            "patientId": order.patient_id,
            "patientName": order.patient_name,
            "modality": "CT",
            "accessionNumber": order.accession_number,
            "scheduledAt": order.start.isoformat(),
            "scheduledStationAETitle": order.station,
            "requestedProcedureDescription": order.procedure,
        }
        response = client.post("/api/radiology/studies", json=body)
        if response.status_code not in (201, 409):  # 409: scheduled by an earlier run
            raise RuntimeError(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(8) as pool:
        list(pool.map(post, made))
    return time.perf_counter() - started


def write_worklist_files(folder: Path, made: list[Order]) -> None:
    """The orders as Orthanc's ModalityWorklists plugin reads them: one worklist file per order."""
    folder.mkdir(parents=True, exist_ok=True)
    for order in made:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.AccessionNumber = order.accession_number
        ds.PatientID = order.patient_id
        ds.PatientName = order.patient_name
        ds.StudyInstanceUID = generate_uid()
        ds.RequestedProcedureDescription = order.procedure
        ds.RequestedProcedureID = order.accession_number
        step = Dataset()
        step.Modality = "CT"
        step.ScheduledStationAETitle = order.station
        step.ScheduledProcedureStepStartDate = order.start.strftime("%Y%m%d")
        step.ScheduledProcedureStepStartTime = order.start.strftime("%H%M%S")
        step.ScheduledProcedureStepID = order.accession_number
        ds.ScheduledProcedureStepSequence = [step]
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = UID("1.2.276.0.7230010.3.1.0.1")  # DCMTK's worklist file class
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{order.accession_number}.wl", enforce_file_format=True)


def identifier(station: str, day: datetime.date) -> Dataset:
    """What a modality asks: its station and a day, with the keys it shows as return keys."""
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                    "StudyInstanceUID", "RequestedProcedureDescription", "RequestedProcedureID"):  # fmt: skip
        setattr(ds, keyword, "")
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = day.strftime("%Y%m%d")
    for keyword in ("ScheduledProcedureStepStartTime", "Modality", "ScheduledProcedureStepID"):
        setattr(step, keyword, "")
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def measure(
    peer: Peer, made: list[Order], stations: int, days: int, repeat: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Time ``repeat`` worklist queries; each answer must hold exactly that station's orders of that day."""
    expected: dict[tuple[str, datetime.date], set[str]] = {}
    for order in made:
        expected.setdefault((order.station, order.start.date()), set()).add(order.accession_number)
    rng = random.Random(seed + 1)
    times, sizes = [], []
    with association(peer, CALLING_AET, ModalityWorklistInformationFind) as assoc:  # Nagle off, as dimse.py's
        for run in range(warmup + repeat):
            station = f"CT_{rng.randrange(stations) + 1:02d}"
            day = FIRST_DAY + datetime.timedelta(days=rng.randrange(days))
            started = time.perf_counter()
            found, final = set(), None
            for status, item in assoc.send_c_find(identifier(station, day), ModalityWorklistInformationFind):
                if status and status.Status in (0xFF00, 0xFF01) and item is not None:
                    found.add(str(item.AccessionNumber))
                elif status:
                    final = status.Status
            elapsed = time.perf_counter() - started
            if final != 0x0000 or found != expected.get((station, day), set()):
                raise RuntimeError(f"{station} {day}: status {final}, {len(found)} items, not the orders scheduled")
            if run >= warmup:
                times.append(elapsed * 1000)
                sizes.append(len(found))
    times.sort()
    return {
        "queries": len(times),
        "items_median": statistics.median(sizes),
        "p50_ms": round(times[len(times) // 2], 1),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
        "max_ms": round(times[-1], 1),
    }


def measure_mpps(peer: Peer, made: list[Order], count: int, seed: int) -> dict[str, Any]:
    """``count`` N-CREATE + N-SET COMPLETED round trips for orders drawn from ``made`` (each used once)."""
    rng = random.Random(seed + 2)
    chosen = rng.sample(made, count)
    times = []
    with association(peer, CALLING_AET, ModalityPerformedProcedureStep) as assoc:
        for order in chosen:
            started = time.perf_counter()
            created = Dataset()
            created.PerformedProcedureStepStatus = "IN PROGRESS"
            created.PerformedStationAETitle = order.station
            created.PerformedProcedureStepStartDate = order.start.strftime("%Y%m%d")
            created.PerformedProcedureStepStartTime = order.start.strftime("%H%M%S")
            scheduled = Dataset()
            scheduled.AccessionNumber = order.accession_number
            created.ScheduledStepAttributesSequence = [scheduled]
            uid = generate_uid()
            status, _ = assoc.send_n_create(created, ModalityPerformedProcedureStep, uid)
            completed = Dataset()
            completed.PerformedProcedureStepStatus = "COMPLETED"
            performed = Dataset()
            performed.SeriesInstanceUID = generate_uid()
            performed.ReferencedImageSequence = []
            completed.PerformedSeriesSequence = [performed]
            ended, _ = assoc.send_n_set(completed, ModalityPerformedProcedureStep, uid)
            times.append((time.perf_counter() - started) * 1000)
            if status.Status != 0x0000 or ended.Status != 0x0000:
                raise RuntimeError(f"MPPS for {order.accession_number}: {status.Status:#06x}, {ended.Status:#06x}")
    return _summary(times)


def measure_commit(peer: Peer, url: str, count: int) -> dict[str, Any]:
    """Store ``count`` CT instances by STOW-RS, then time one storage commitment request for them."""
    rng = np.random.default_rng(3)
    uids, series, base = UidSource(), None, phantom(CT_SIZE)
    sops: list[str] = []
    with httpx.Client(base_url=url, timeout=600) as client:
        series = new_series(uids, rng)
        for first in range(0, count, 50):
            batch = []
            for n in range(first, min(count, first + 50)):
                sops.append(uids.new())
                batch.append(encode(make_dataset(series, sops[-1], n + 1, CT_SIZE, noisy_pixels(base, rng))))
            boundary = b"worklist-bench-boundary"
            headers = {"content-type": content_type(boundary), "accept": "application/dicom+json"}
            response = client.post("/dicomweb/studies", content=multipart_body(batch, boundary), headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"STOW-RS {response.status_code}: {response.text[:200]}")
    action = Dataset()
    action.TransactionUID = generate_uid()
    references = []
    for sop in sops:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = sop
        references.append(item)
    action.ReferencedSOPSequence = references
    arrived = threading.Event()
    report: dict[str, Any] = {}

    def received(event: Any) -> tuple[int, None]:
        info = event.event_information
        report["committed"] = len(info.get("ReferencedSOPSequence", []))
        report["failed"] = len(info.get("FailedSOPSequence", []))
        arrived.set()
        return 0x0000, None

    with association(
        peer, CALLING_AET, StorageCommitmentPushModel, handlers=[(evt.EVT_N_EVENT_REPORT, received)]
    ) as assoc:
        started = time.perf_counter()
        status, _ = assoc.send_n_action(action, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        if status.Status != 0x0000 or not arrived.wait(120):
            raise RuntimeError(f"storage commitment: N-ACTION {status.Status:#06x}, report {bool(report)}")
        seconds = time.perf_counter() - started
    if report != {"committed": count, "failed": 0}:
        raise RuntimeError(f"storage commitment report: {report}, expected {count} committed")
    return {"instances": count, "seconds": round(seconds, 2)}


def _summary(times: list[float]) -> dict[str, Any]:
    times.sort()
    return {
        "runs": len(times),
        "p50_ms": round(times[len(times) // 2], 1),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1),
        "max_ms": round(times[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", metavar="AET@HOST:PORT", type=Peer.parse, help="the server under test")
    parser.add_argument("--orders", type=int, default=10_000, help="scheduled procedure steps (10,000)")
    parser.add_argument("--stations", type=int, default=20, help="stations they are scheduled on (20)")
    parser.add_argument("--days", type=int, default=50, help="days they are spread over (50)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--schedule", metavar="URL", help="schedule them through this archive's reporting API")
    parser.add_argument("--write-wl", metavar="DIR", type=Path, help="write them as worklist files, then stop")
    parser.add_argument("--repeat", type=int, default=100, help="measured queries (100)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured queries first (5)")
    parser.add_argument("--mpps", type=int, default=0, help="then time this many MPPS round trips")
    parser.add_argument("--commit", type=int, default=0, help="then store this many CT instances and commit them")
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    made = orders(args.orders, args.stations, args.days, args.seed)
    if args.write_wl:
        write_worklist_files(args.write_wl, made)
        print(f"{len(made)} worklist files in {args.write_wl}")
        return 0
    if args.schedule:
        seconds = schedule(args.schedule, made)
        print(f"scheduled {len(made)} orders in {seconds:.1f} s ({len(made) / seconds:.0f}/s)")
    result = measure(args.peer, made, args.stations, args.days, args.repeat, args.warmup, args.seed)
    result = {"peer": str(args.peer), "orders": len(made), **result}
    print(
        f"{args.peer}: MWL C-FIND by station and day over {len(made):,} orders: {result['queries']} queries, "
        f"{result['items_median']} items (median), p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
        f"max {result['max_ms']} ms"
    )
    if args.mpps:
        result["mpps"] = measure_mpps(args.peer, made, args.mpps, args.seed)
        mpps = result["mpps"]
        print(f"MPPS N-CREATE + N-SET COMPLETED: {mpps['runs']} round trips, p50 {mpps['p50_ms']} ms, "
              f"p95 {mpps['p95_ms']} ms, max {mpps['max_ms']} ms")  # fmt: skip
    if args.commit:
        if not args.schedule:
            parser.error("--commit stores its instances by STOW-RS to --schedule's server")
        result["commit"] = measure_commit(args.peer, args.schedule, args.commit)
        print(f"storage commitment of {args.commit} instances: N-EVENT-REPORT after {result['commit']['seconds']} s")
    if args.json_path:
        args.json_path.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
