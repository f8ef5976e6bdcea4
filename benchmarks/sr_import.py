"""What importing a TID 1500 measurement report adds to its STOW-RS (issue 17: under 50 ms for 50 groups).

Stores one CT image, then, round after round, two SRs of the same size and SOP Class (Enhanced SR) on it, each in a
STOW-RS request of its own, in alternating order, with fresh UIDs:

- ``report``: a TID 1500 Imaging Measurement Report of N Length groups in OHIF's shape (tests/ohif_sr.py), whose
  groups the archive turns into N annotations (reporting/sr_import.py);
- ``plain``: the same document with another root concept (a Diagnostic Imaging Report, 18748-4 LN), which the archive
  stores as any instance.

The difference of the medians of their request times is what the import adds: highdicom's reading in the parse phase
and the annotation inserts in the storing transaction. The report's annotations are counted once, to check the import
happened. Run from the repository root against a running server::

    python benchmarks/sr_import.py http://127.0.0.1:8080 --token "$(dicomweb token admin --role ADMIN)"
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test data builders, from the repository

from tests.data import ct_instance, multipart, stow_headers
from tests.ohif_sr import length, measurement_report

DIAGNOSTIC_IMAGING_REPORT = ("18748-4", "LN", "Diagnostic imaging report")  # not TID 1500's root: nothing to import


def documents(image: pydicom.Dataset, groups: int) -> tuple[bytes, bytes]:
    """A measurement report of ``groups`` lengths on the image, and the same document under another root concept."""
    lines = [length([(1 + i % 50, 1), (1 + i % 50, 40)], 39.0) for i in range(groups)]
    report = measurement_report([image], lines)
    plain = pydicom.dcmread(io.BytesIO(report))
    plain.SOPInstanceUID = plain.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    concept = plain.ConceptNameCodeSequence[0]
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = DIAGNOSTIC_IMAGING_REPORT
    buffer = io.BytesIO()
    plain.save_as(buffer, enforce_file_format=True)
    return report, buffer.getvalue()


def stow(client: httpx.Client, data: bytes) -> float:
    """One STOW-RS request of one instance; its time in ms."""
    body = multipart([data])
    started = time.perf_counter()
    response = client.post("/dicomweb/studies", content=body, headers=stow_headers())
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the server's root URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="a bearer token with radiology:upload and radiology:view")
    parser.add_argument("--groups", type=int, default=50, help="measurement groups per report (50)")
    parser.add_argument("--rounds", type=int, default=30, help="pairs of requests (30)")
    args = parser.parse_args()
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=120) as client:
        image_bytes = ct_instance(generate_uid())
        stow(client, image_bytes)
        image = pydicom.dcmread(io.BytesIO(image_bytes))
        times: dict[str, list[float]] = {"report": [], "plain": []}
        for round_number in range(args.rounds + 2):  # two rounds of warm-up
            report, plain = documents(image, args.groups)
            pair = [("report", report), ("plain", plain)]
            for name, data in pair if round_number % 2 else reversed(pair):
                elapsed = stow(client, data)
                if round_number >= 2:
                    times[name].append(elapsed)
        found = client.get(f"/api/radiology/images/{image.SOPInstanceUID}/annotations").json()
    expected = (args.rounds + 2) * args.groups
    assert len(found) == expected, f"{len(found)} annotations, expected {expected}"
    report_ms, plain_ms = statistics.median(times["report"]), statistics.median(times["plain"])
    print(
        f"STOW-RS of one Enhanced SR, {args.rounds} rounds: with {args.groups} measurement groups imported "
        f"median {report_ms:.1f} ms (p90 {statistics.quantiles(times['report'], n=10)[-1]:.1f}), the same document "
        f"not imported {plain_ms:.1f} ms (p90 {statistics.quantiles(times['plain'], n=10)[-1]:.1f}): the import "
        f"adds {report_ms - plain_ms:.1f} ms ({len(found)} annotations made)"
    )


if __name__ == "__main__":
    main()
