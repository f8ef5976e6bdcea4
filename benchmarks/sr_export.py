"""Annotation export benchmark: ``POST /api/radiology/studies/{id}/annotations/sr`` over a study's 50 annotations.

Against a running server without authentication (``DICOMWEB_AUTH=disabled``), at ``BASE_URL`` (the server root, e.g.
``http://127.0.0.1:8080``): it stores ``--slices`` 512x512 CT slices (``stow.py``'s, ~525 KB each) in a new workflow
study, draws ``--annotations`` annotations on them through the API (the five types in turn, spread over the slices,
so that each export reads that many image headers for its evidence and Image Library), then times ``--repeat``
exports one after another (each a new SR in the study's Annotations series naming the previous one as predecessor):
the request's wall time as the client sees it, median, p95 and max, and with ``--server-pid`` the server's CPU time
per export (its process and children: on a shared machine, what the export costs whatever else runs). Every answer
must be 201 with that many groups.

    DICOMWEB_AUTH=disabled dicomweb serve &
    python benchmarks/sr_export.py http://127.0.0.1:8080 --server-pid "$(pgrep -of 'dicomweb serve')"
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pydicom

sys.path.insert(0, str(Path(__file__).parent))
from stow import UidSource, content_type, make_instances, multipart_body

BOUNDARY = b"sr-export-benchmark"


def shapes(n: int) -> dict[str, Any]:
    """The n-th annotation: measurement, arrow, circle, roi, text in turn, somewhere on a 512x512 image."""
    x, y = 40.0 + (n * 37) % 400, 40.0 + (n * 53) % 400
    points = [{"x": x, "y": y}, {"x": x + 30, "y": y + 20}, {"x": x + 10, "y": y + 50}]
    return [
        {"type": "measurement", "coordinates": {"points": points[:2]}, "label": f"length {n}"},
        {"type": "arrow", "coordinates": {"points": points[:2]}, "label": f"arrow {n}"},
        {"type": "circle", "coordinates": {"center": points[0], "radius": 12}},
        {"type": "roi", "coordinates": {"points": points}},
        {"type": "text", "coordinates": {"points": points[:1]}, "label": f"note {n}"},
    ][n % 5]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url")
    parser.add_argument("--slices", type=int, default=50, help="CT slices stored (the annotations spread over them)")
    parser.add_argument("--annotations", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--server-pid", type=int, help="report the CPU time this process (and children) spends")
    args = parser.parse_args()
    server = psutil.Process(args.server_pid) if args.server_pid else None

    def cpu_seconds() -> float:
        if server is None:
            return 0.0
        processes = [server, *server.children(recursive=True)]
        return sum(p.cpu_times().user + p.cpu_times().system for p in processes)

    instances = make_instances(args.slices, 512, UidSource(), np.random.default_rng(17))
    headers = [pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True) for data in instances]
    study_instance_uid = str(headers[0].StudyInstanceUID)
    with httpx.Client(base_url=args.base_url.rstrip("/"), timeout=120) as client:
        response = client.post(
            "/api/radiology/studies",
            json={"patientId": str(headers[0].PatientID), "modality": "CT", "studyInstanceUID": study_instance_uid},
        )
        assert response.status_code == 201, response.text
        study_id = response.json()["id"]
        body = multipart_body(instances, BOUNDARY)
        response = client.post("/dicomweb/studies", content=body, headers={"content-type": content_type(BOUNDARY)})
        assert response.status_code == 200, response.text
        for n in range(args.annotations):
            image = headers[n % len(headers)].SOPInstanceUID
            response = client.post(f"/api/radiology/images/{image}/annotations", json=shapes(n))
            assert response.status_code == 201, response.text

        timings, cpu = [], []
        for round_ in range(args.warmup + args.repeat):
            started, cpu_started = time.perf_counter(), cpu_seconds()
            response = client.post(f"/api/radiology/studies/{study_id}/annotations/sr")
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 201 and response.json()["annotations"] == args.annotations, response.text
            if round_ >= args.warmup:
                timings.append(elapsed)
                cpu.append((cpu_seconds() - cpu_started) * 1000)
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    print(
        f"export of {args.annotations} annotations on {min(args.slices, args.annotations)} images, "
        f"{len(timings)} rounds: median {statistics.median(timings):.0f} ms, p95 {p95:.0f} ms, max {timings[-1]:.0f} ms"
        + (f"; server CPU per export: median {statistics.median(cpu):.0f} ms" if server else "")
        + f" (load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
