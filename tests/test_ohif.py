"""OHIF v3 in a real browser against the archive (issue #7): the study list, opening a study by URL and from the
list, scrolling a CT stack, compressed series, and the time to the first image of a 200-slice CT series.

The archive runs as ``dicomweb serve`` with authentication on and CORS for the viewer's origin; the prebuilt OHIF
app (npm ``@ohif/app``) is served from another port by a small static server, and ``tests/e2e/ohif.mjs`` drives
it in Debian's Chromium through playwright-core. ``tests/e2e/setup.sh`` installs all three (``.ci/run`` calls it).
Deselect with ``-m "not e2e"``; without the tools the tests skip locally and fail under ``CI=true``.
Screenshots, canvas captures and the request log land in ``tests/e2e/artifacts/<test>/``.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from dicomweb.permissions import Role
from dicomweb.tokens import create_token, load_or_create_secret

from . import browser
from .browser import E2E
from .conftest import ServerProcess, free_port, serve_subprocess
from .data import JPEG2000, JPEG_BASELINE, ct_instance, multipart, stow_headers
from .nginx import NGINX, render, run_nginx

pytestmark = pytest.mark.e2e

OHIF_DIST = E2E / "ohif" / "dist"
DRIVER = E2E / "ohif.mjs"
DEPLOY_VIEWER = Path(__file__).parent.parent / "deploy" / "viewer"

PATIENT_NAME = "Müller^Anna"
PATIENT_ID = "E2E-0001"
STUDY_DATE = "20240315"
STUDY_DESCRIPTION = "E2E CT abdomen"
CT_SERIES_DESCRIPTION = "Moving square"
CT_SLICES = 30
CT_SIZE = 256
SQUARE = 32  # side of the bright square, in pixels of a 256-pixel image (scaled with the image size)


def require_tools() -> None:
    """Skip (locally) or fail (CI) unless the browser tools, the OHIF build and nginx are installed."""
    browser.require_tools(("the OHIF build (tests/e2e/ohif/dist)", OHIF_DIST / "index.html"), ("nginx", NGINX))


# --- the data: a CT stack whose slices each show a bright square in a place of their own ---------------------


def square_position(index: int, count: int) -> tuple[float, float]:
    """Where slice ``index``'s square is centred, as fractions of the image's width and height: left to right
    across the slices and down through the upper half only, so that no flip or rotation of the image, nor a
    reversed slice order, shows another slice's pattern."""
    t = index / max(count - 1, 1)
    return 0.125 + 0.75 * t, 0.125 + 0.25 * t


def ct_slice(
    index: int,
    count: int,
    study_instance_uid: str,
    series_instance_uid: str,
    frame_of_reference_uid: str,
    size: int = CT_SIZE,
    series_number: int = 1,
    series_description: str = CT_SERIES_DESCRIPTION,
) -> bytes:
    """One axial CT slice (signed 16-bit, HU): water (0 HU) with a bone-bright (1000 HU) square."""
    pixels = np.zeros((size, size), dtype=np.int16)
    side = SQUARE * size // CT_SIZE
    x, y = square_position(index, count)
    left, top = round(x * size - side / 2), round(y * size - side / 2)
    pixels[top : top + side, left : left + side] = 1000
    spacing = 204.8 / size
    return ct_instance(
        study_instance_uid,
        series_instance_uid,
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
        size=size,
        FrameOfReferenceUID=frame_of_reference_uid,
        StudyDate=STUDY_DATE,
        SeriesDate=STUDY_DATE,
        ContentDate=STUDY_DATE,
        SeriesTime="101500",
        StudyID="1",
        AccessionNumber="E2E" + study_instance_uid[-8:],
        StudyDescription=STUDY_DESCRIPTION,
        SeriesDescription=series_description,
        BodyPartExamined="ABDOMEN",
        SeriesNumber=series_number,
        InstanceNumber=index + 1,
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        ImagePositionPatient=[-102.4, -102.4, -2.5 * index],
        SliceLocation=-2.5 * index,
        SliceThickness=2.5,
        PixelSpacing=[spacing, spacing],
        PixelRepresentation=1,
        RescaleIntercept=0,
        RescaleSlope=1,
        RescaleType="HU",
        WindowCenter=40,
        WindowWidth=400,
        PixelData=pixels.tobytes(),
    )


def ct_series(count: int, study_instance_uid: str, size: int = CT_SIZE) -> tuple[str, list[bytes]]:
    series_instance_uid, frame_of_reference_uid = generate_uid(), generate_uid()
    return series_instance_uid, [
        ct_slice(i, count, study_instance_uid, series_instance_uid, frame_of_reference_uid, size) for i in range(count)
    ]


def into_study(path: Path, study_instance_uid: str, series_number: int, series_description: str) -> bytes:
    """A pydicom test file moved into our patient's study as a series of its own; its compressed pixel data is
    kept byte for byte."""
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.StudyDate, ds.StudyTime, ds.StudyDescription = STUDY_DATE, "101500", STUDY_DESCRIPTION
    ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = series_number, 1, series_description
    ds.SpecificCharacterSet = "ISO_IR 192"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --- the viewer: OHIF's static build with our app-config.js, on another origin ------------------------------------


def app_config(dicomweb: str, token: str) -> str:
    """OHIF's app-config.js: one DICOMweb data source on the archive (the README's viewer section shows the same),
    the bearer token on every request, and no investigational-use dialog, tour or service worker."""
    data_source = {
        "friendlyName": "dicomweb archive",
        "name": "dicomweb",
        "qidoRoot": dicomweb,
        "wadoRoot": dicomweb,
        "wadoUriRoot": dicomweb + "/wado",
        "qidoSupportsIncludeField": True,
        "supportsFuzzyMatching": True,
        "supportsWildcard": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "omitQuotationForMultipartRequest": True,
        "bulkDataURI": {"enabled": True},
    }
    return APP_CONFIG.replace("DATA_SOURCE", json.dumps(data_source, indent=2)).replace("TOKEN", json.dumps(token))


APP_CONFIG = """\
// OHIF 3.13 configuration for the dicomweb archive (written by tests/test_ohif.py).
window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [
    {
      // OHIF's DICOMweb data source takes its Authorization header from the user authentication service.
      id: 'dicomweb-bearer-token',
      preRegistration: ({ servicesManager }) => {
        servicesManager.services.userAuthenticationService.setServiceImplementation({
          getAuthorizationHeader: () => ({ Authorization: 'Bearer ' + TOKEN }),
        });
      },
    },
  ],
  modes: [],
  customizationService: { 'ohif.tours': { $set: [] } },
  investigationalUseDialog: { option: 'never' },
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  maxNumberOfWebWorkers: 2,
  defaultDataSourceName: 'dicomweb',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb',
      configuration: DATA_SOURCE,
    },
  ],
};
"""


class ViewerHandler(http.server.SimpleHTTPRequestHandler):
    """OHIF's dist/ as it is, our app-config.js, index.html for the app's routes (/viewer...), no service worker."""

    config = b""
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm"}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self._send(200, "application/javascript", self.config)
        elif path == "/init-service-worker.js":
            self._send(200, "application/javascript", b"// no service worker\n")
        elif path == "/sw.js":
            self._send(404, "text/plain", b"no service worker\n")
        elif path != "/" and not Path(self.translate_path(path)).exists():
            self.path = "/index.html"
            super().do_GET()
        else:
            super().do_GET()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_viewer(port: int, config: str) -> Iterator[str]:
    handler = type("Handler", (ViewerHandler,), {"config": config.encode()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(OHIF_DIST)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@dataclass
class Stack:
    """The archive, tokens for it, and the viewer serving OHIF against it."""

    server: ServerProcess
    viewer: str
    upload_token: str
    artifacts: Path
    # Where the viewer's requests to the archive go: the archive itself, or the viewer's origin when it proxies it.
    archive_origin: str = ""
    viewer_token: str = ""  # given in the first URL, for an app-config that takes it from there

    @property
    def dicomweb(self) -> str:
        return self.server.url + "/dicomweb"

    def store(self, parts: list[bytes]) -> None:
        """STOW in requests of 50 instances (a 200-slice 512x512 CT is above the 100 MiB default body limit)."""
        headers = {**stow_headers(), "Authorization": f"Bearer {self.upload_token}"}
        for start in range(0, len(parts), 50):
            body = multipart(parts[start : start + 50])
            response = httpx.post(self.dicomweb + "/studies", content=body, headers=headers, timeout=120)
            assert response.status_code == 200, response.text

    def drive(self, job: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
        """Run tests/e2e/ohif.mjs with the job; its JSON report (also saved in the artifacts)."""
        job = {
            **job,
            "viewer": self.viewer,
            "server": self.archive_origin or self.server.url,
            "artifacts": str(self.artifacts),
            "token": self.viewer_token or None,
        }
        return browser.drive(DRIVER, job, self.artifacts, timeout)


@pytest.fixture(scope="session")
def e2e_tools() -> None:
    """Checked before anything else starts (the session's PostgreSQL included)."""
    require_tools()


@dataclass
class Prepared:
    """What both stacks start from: a clean artifacts folder, a data folder whose signing secret exists before the
    server starts (which then verifies tokens with it), and the viewer's and the uploader's tokens."""

    artifacts: Path
    data_dir: Path
    viewer_token: str
    upload_token: str


def prepare(tmp_path: Path, request: pytest.FixtureRequest) -> Prepared:
    artifacts = browser.artifacts_of(request)
    data_dir = tmp_path / "archive"
    data_dir.mkdir()
    secret = load_or_create_secret(data_dir)
    viewer_token = create_token(secret, "e2e", [Role.DOCTOR], 3600, "dicomweb")
    upload_token = create_token(secret, "e2e-upload", [Role.RADIOLOGY_TECH], 3600, "dicomweb")
    return Prepared(artifacts, data_dir, viewer_token, upload_token)


@contextmanager
def serve_stack(ready: Prepared, database_url: str, viewer_token: str) -> Iterator[Stack]:
    """The archive and, on another origin (CORS), OHIF with ``viewer_token`` in its app-config; the server's log
    saved in the artifacts afterwards."""
    viewer_port = free_port()
    env = {
        "DICOMWEB_AUTH": "enabled",
        "DICOMWEB_CORS_ORIGINS": f"http://127.0.0.1:{viewer_port}",
        "DICOMWEB_DATABASE_URL": database_url,
    }
    with serve_subprocess(env, ready.data_dir) as server:
        config = app_config(server.url + "/dicomweb", viewer_token)
        (ready.artifacts / "app-config.js").write_text(config)
        with serve_viewer(viewer_port, config) as viewer:
            yield Stack(server, viewer, ready.upload_token, ready.artifacts)
        (ready.artifacts / "server.log").write_text(server.log)


@pytest.fixture
def stack(e2e_tools: None, new_database: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The archive and OHIF with the viewer's (DOCTOR) token."""
    ready = prepare(tmp_path, request)
    with serve_stack(ready, new_database().url, ready.viewer_token) as running:
        yield running


@contextmanager
def serve_deployed_viewer(port: int, archive: str, work: Path) -> Iterator[str]:
    """deploy/viewer as docker compose runs it, without containers: its nginx.conf (the archive's upstream, the
    listening port and the root replaced) in Debian's nginx, serving OHIF's dist/ with deploy/viewer/app-config.js."""
    root = work / "html"
    root.mkdir()
    for entry in OHIF_DIST.iterdir():
        if entry.name not in ("app-config.js", "sw.js"):  # the image's Dockerfile removes sw.js as well
            (root / entry.name).symlink_to(entry)
    shutil.copy(DEPLOY_VIEWER / "app-config.js", root / "app-config.js")
    server_block = render(
        (DEPLOY_VIEWER / "nginx.conf").read_text(),
        [
            ("listen 80;", f"listen 127.0.0.1:{port};"),
            ("root /usr/share/nginx/html;", f"root {root};"),
            ("http://proxy:8080", archive),
        ],
    )
    origin = f"http://127.0.0.1:{port}"
    with run_nginx(server_block, work, origin + "/app-config.js"):
        yield origin


@pytest.fixture
def deployed(e2e_tools: None, new_database: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The archive behind deploy/viewer's nginx on one origin (no CORS), the viewer given its token by URL."""
    ready = prepare(tmp_path, request)
    env = {"DICOMWEB_AUTH": "enabled", "DICOMWEB_DATABASE_URL": new_database().url}
    with (
        serve_subprocess(env, ready.data_dir) as server,
        serve_deployed_viewer(free_port(), server.url, tmp_path) as viewer,
    ):
        yield Stack(
            server, viewer, ready.upload_token, ready.artifacts, archive_origin=viewer, viewer_token=ready.viewer_token
        )
    (ready.artifacts / "server.log").write_text(server.log)


# --- judging what the viewer showed ------------------------------------------------------------------------------


def shown_image(stack: Stack, step: dict[str, Any], rows: int, columns: int) -> np.ndarray:
    """The part of a canvas capture that shows the image (cornerstone fits it to the viewport and centres it),
    resampled to the image's own rows and columns: an RGB array."""
    canvas = Image.open(stack.artifacts / step["canvasFile"]).convert("RGB")
    width, height = canvas.size
    scale = min(width / columns, height / rows)
    left, top = (width - columns * scale) / 2, (height - rows * scale) / 2
    box = (round(left), round(top), round(left + columns * scale), round(top + rows * scale))
    return np.asarray(canvas.crop(box).resize((columns, rows), Image.Resampling.BILINEAR), dtype=np.float64)


def shown_slice(image: np.ndarray, count: int) -> int:
    """Which slice of the moving-square stack the image is, from where its bright square is."""
    gray = image.mean(axis=2)
    rows, columns = gray.shape
    # 0 HU at window 40/400 is grey (about 102 of 255): the VOI was applied, and this is not a blank canvas.
    assert 80 < np.median(gray) < 125, f"background grey {np.median(gray)}, expected about 102"
    bright = gray > 200
    expected_area = (SQUARE / CT_SIZE) ** 2
    assert 0.7 * expected_area < bright.mean() < 1.3 * expected_area, f"bright area {bright.mean():.4f}"
    ys, xs = np.nonzero(bright)
    centre = np.array([(xs.mean() + 0.5) / columns, (ys.mean() + 0.5) / rows])
    places = np.array([square_position(i, count) for i in range(count)])
    distances = np.hypot(*(places - centre).T)
    index = int(distances.argmin())
    step = float(np.hypot(*(places[1] - places[0])))
    assert distances[index] < step / 4, f"square at {centre}, {distances[index]:.4f} from slice {index}'s"
    return index


def instance_number(step: dict[str, Any]) -> int:
    """The instance number OHIF's overlay shows (``I:8 (8/30)``)."""
    match = re.search(r"I:\s*(\d+)\s*\(\d+/\d+\)", step["overlay"])
    assert match, step["overlay"]
    return int(match.group(1))


def assert_no_errors(stack: Stack, report: dict[str, Any]) -> None:
    """No request of the viewer failed or got 4xx/5xx, as the browser saw it and as the server logged it."""
    seen = [f"{r['method']} {r['url']} -> {r['status'] or r['failure']}" for r in report["requests"]]
    # A static file of the viewer whose load the next navigation aborted (the token page is left as soon as the
    # network is idle for 500 ms, which a slow machine reaches while it still parses the app) and that the next page
    # loads again is no failure; the archive's own requests get no such allowance.
    loaded_later = [
        any(later["url"] == r["url"] and 200 <= (later["status"] or 0) < 400 for later in report["requests"][n + 1 :])
        for n, r in enumerate(report["requests"])
    ]
    superseded = [
        r["failure"] == "net::ERR_ABORTED" and not r["url"].startswith(("/dicomweb/", "/api/")) and again
        for r, again in zip(report["requests"], loaded_later, strict=True)
    ]
    bad = [
        line
        for r, line, skipped in zip(report["requests"], seen, superseded, strict=True)
        if (r["failure"] and not skipped) or (r["status"] or 0) >= 400
    ]
    logged = re.findall(r'"([A-Z]+) (/\S*)" (\d{3}) ', stack.server.log)
    assert any(path.startswith("/dicomweb/") for _, path, _ in logged), "no request lines in the server log"
    bad += [f"server log: {m} {p} -> {s}" for m, p, s in logged if int(s) >= 400 and p != "/readyz"]
    assert not bad, "requests that failed:\n" + "\n".join(bad) + "\n\nall requests:\n" + "\n".join(seen)
    assert report["error"] is None, (
        f"{report['error']}\n\nrequests:\n" + "\n".join(seen) + f"\n\npage errors: {report['pageErrors']}"
    )


class TestOhif:
    """OHIF 3.13 in headless Chromium against the archive, as a radiologist uses it."""

    def test_deployed_viewer(self, deployed: Stack) -> None:
        """deploy/viewer (docker compose's viewer service) run without containers: OHIF and the archive on one
        origin through its nginx, the token given once in the URL; a CT stack opens, every slice loads, no error."""
        study_instance_uid = generate_uid()
        series_instance_uid, parts = ct_series(CT_SLICES, study_instance_uid)
        deployed.store(parts)
        report = deployed.drive(
            {"scenario": "timing", "studyInstanceUID": study_instance_uid, "ctSeriesInstanceUID": series_instance_uid}
        )
        assert_no_errors(deployed, report)
        step = report["steps"]["timing-first"]
        assert step["images"] == step["loaded"] == CT_SLICES
        assert shown_slice(shown_image(deployed, step, CT_SIZE, CT_SIZE), CT_SLICES) == instance_number(step) - 1
        archive_requests = [r for r in report["requests"] if r["url"].startswith("/dicomweb/")]
        assert len([r for r in archive_requests if "/frames/" in r["url"]]) == CT_SLICES
        assert not [r for r in report["requests"] if r["method"] == "OPTIONS"], "one origin: no CORS preflight"

    def test_study_list_open_scroll_and_compressed_series(self, stack: Stack) -> None:
        """The study list, the study opened by URL and from the list, a scroll through the CT stack, and a JPEG
        and a JPEG 2000 series, with every request answered without error."""
        study_instance_uid = generate_uid()
        ct_series_instance_uid, parts = ct_series(CT_SLICES, study_instance_uid)
        jpeg = into_study(JPEG_BASELINE, study_instance_uid, 2, "JPEG colour bars")
        jpeg2000 = into_study(JPEG2000, study_instance_uid, 3, "JPEG 2000 bone scan")
        stack.store([*parts, jpeg, jpeg2000])
        other_series = []
        for name, data in (("jpeg", jpeg), ("jpeg2000", jpeg2000)):
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            other_series.append(
                {"name": name, "description": ds.SeriesDescription, "seriesInstanceUID": ds.SeriesInstanceUID}
            )
        scroll_ticks = 7

        report = stack.drive(
            {
                "scenario": "viewer",
                "studyInstanceUID": study_instance_uid,
                "ctSeriesInstanceUID": ct_series_instance_uid,
                "ctSeriesDescription": CT_SERIES_DESCRIPTION,
                "studyDescription": STUDY_DESCRIPTION,
                "scrollTicks": scroll_ticks,
                "otherSeries": other_series,
            }
        )
        assert_no_errors(stack, report)
        steps = report["steps"]

        # The study list: name, date, modalities, description and instance count, as OHIF formats them.
        patient, date, modalities, description, instances = steps["study-list"]["cells"][:5]
        assert (patient, modalities, description, instances) == ("Müller, Anna", "CT\\NM\\OT", STUDY_DESCRIPTION, "32")
        assert date.startswith("15-Mar-2024"), date
        panel = " ".join(steps["study-list-selected"]["panel"].split())
        for text in (PATIENT_ID, f"CT {CT_SERIES_DESCRIPTION} 30", "OT JPEG colour bars 1", "NM JPEG 2000 bone scan 1"):
            assert text in panel, panel

        # Opened by URL: a slice of the stack, the one the overlay names; all 30 slices loaded.
        first = steps["url-first"]
        assert ct_series_instance_uid in first["imageId"]
        assert first["images"] == CT_SLICES and first["allLoadedAt"] > first["shownAt"]
        first_slice = shown_slice(shown_image(stack, first, CT_SIZE, CT_SIZE), CT_SLICES)
        assert first_slice == instance_number(first) - 1

        # Scrolled: another slice, moved by as many slices as wheel ticks, again the one the overlay names.
        scrolled = steps["url-scrolled"]
        assert abs(scrolled["imageIndex"] - first["imageIndex"]) == scroll_ticks
        scrolled_slice = shown_slice(shown_image(stack, scrolled, CT_SIZE, CT_SIZE), CT_SLICES)
        assert scrolled_slice == instance_number(scrolled) - 1
        assert abs(scrolled_slice - first_slice) == scroll_ticks

        # The JPEG baseline colour bars and the JPEG 2000 bone scan, decoded in the browser, look like pydicom's.
        bars = pydicom.dcmread(io.BytesIO(jpeg)).pixel_array.astype(np.float64)
        shown = shown_image(stack, steps["jpeg"], *bars.shape[:2])
        assert np.median(np.abs(shown - bars)) < 10, np.abs(shown - bars).mean(axis=(1, 2))
        scan = pydicom.dcmread(io.BytesIO(jpeg2000)).pixel_array.astype(np.float64)
        shown = shown_image(stack, steps["jpeg2000"], *scan.shape).mean(axis=2)
        correlation = np.corrcoef(shown.ravel(), scan.ravel())[0, 1]
        assert correlation > 0.95, correlation

        # Opened from the study list: the stack again.
        from_list = steps["list-first"]
        assert ct_series_instance_uid in from_list["imageId"]
        assert shown_slice(shown_image(stack, from_list, CT_SIZE, CT_SIZE), CT_SLICES) == instance_number(from_list) - 1

        # What OHIF asked for: every CT slice's frame, with the Accept header of PS3.18 §8.7.3.5 that OHIF sends.
        frames = {r["url"] for r in report["requests"] if ct_series_instance_uid in r["url"] and "/frames/" in r["url"]}
        assert len(frames) == CT_SLICES
        assert all("transfer-syntax=*" in r["accept"] for r in report["requests"] if "/frames/" in r["url"]), (
            "frames asked for without transfer-syntax=*"
        )

    def test_time_to_first_image_of_a_200_slice_ct(self, stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
        """Opening a 200-slice 512x512 CT by URL: time to the first image and from it to every slice loaded."""
        count = 200
        study_instance_uid = generate_uid()
        series_instance_uid, parts = ct_series(count, study_instance_uid, size=512)
        for start in range(0, count, 50):
            stack.store(parts[start : start + 50])
        report = stack.drive(
            {
                "scenario": "timing",
                "studyInstanceUID": study_instance_uid,
                "ctSeriesInstanceUID": series_instance_uid,
            }
        )
        assert_no_errors(stack, report)
        step = report["steps"]["timing-first"]
        assert step["images"] == step["loaded"] == count
        shown_slice(shown_image(stack, step, 512, 512), count)
        frames = [r for r in report["requests"] if "/frames/" in r["url"]]
        assert len({r["url"] for r in frames}) == count
        # performance.now() in the page counts from the navigation start, at performance.timeOrigin.
        asked = min(r["startedAt"] for r in report["requests"]) - step["timeOrigin"]
        first_frame = min(r["startedAt"] for r in frames) - step["timeOrigin"]
        latencies = [r["ms"] for r in frames]
        with capsys.disabled():
            print(
                f"\nOHIF, {count}-slice 512x512 CT opened by URL: first image {step['shownAt']:.0f} ms after the "
                f"navigation (OHIF's first request to the archive at {asked:.0f} ms, first frame request at "
                f"{first_frame:.0f} ms); all {count} slices loaded {step['allLoadedAt'] - step['shownAt']:.0f} ms "
                f"after the first image; frame requests median {np.median(latencies):.0f} ms, "
                f"p95 {np.percentile(latencies, 95):.0f} ms"
            )


# --- the archive's own Structured Report in the viewer (issue 17) ------------------------------------------------

DRIVER_SR = E2E / "ohif_sr.mjs"
SR_SLICES = 5
SR_MEASURED = (64.0, 64.0), (192.0, 160.0)  # a length across the middle slice, in pixels
SR_SPACING = 204.8 / CT_SIZE  # mm per pixel of ct_slice's images


def test_exported_annotation_sr_shown(stack: Stack) -> None:
    """A length annotated through the API on a CT slice and exported as an SR (POST .../annotations/sr): OHIF lists
    the SR series in the study browser; opened, it shows the measured slice and offers to track the SR's
    measurements; accepted, the length is an editable OHIF Length on that slice, drawn and labelled with its value in
    mm (screenshots study-opened.png, sr-viewport.png and hydrated.png in the artifacts)."""
    study_instance_uid = generate_uid()
    api = httpx.Client(
        base_url=stack.server.url + "/api/radiology",
        headers={"authorization": f"Bearer {stack.upload_token}"},  # a technologist: creates, uploads, annotates
        timeout=60,
    )
    with api:
        response = api.post(
            "/studies", json={"patientId": PATIENT_ID, "modality": "CT", "studyInstanceUID": study_instance_uid}
        )
        assert response.status_code == 201, response.text
        study = response.json()
        series_instance_uid, parts = ct_series(SR_SLICES, study_instance_uid)
        stack.store(parts)
        measured = pydicom.dcmread(io.BytesIO(parts[SR_SLICES // 2]), stop_before_pixels=True).SOPInstanceUID
        points = [{"x": x, "y": y} for x, y in SR_MEASURED]
        response = api.post(
            f"/images/{measured}/annotations", json={"type": "measurement", "coordinates": {"points": points}}
        )
        assert response.status_code == 201, response.text
        response = api.post(f"/studies/{study['id']}/annotations/sr")
        assert response.status_code == 201, response.text
        exported = response.json()
    (a, b) = SR_MEASURED
    length = float(np.hypot(b[0] - a[0], b[1] - a[1]) * SR_SPACING)
    expected = f"{length:.2f} mm"  # as OHIF labels an SR's NUM (two decimals and the unit's code)
    job = {
        "scenario": "sr",
        "viewer": stack.viewer,
        "server": stack.server.url,
        "artifacts": str(stack.artifacts),
        "studyInstanceUID": study_instance_uid,
        "ctSeriesInstanceUID": series_instance_uid,
        "srSeriesDescription": "Annotations",
        "measuredSOPInstanceUID": measured,
        "expectedText": expected,
    }
    report = browser.drive(DRIVER_SR, job, stack.artifacts, 240)
    assert_no_errors(stack, report)
    opened = report["steps"]["study-opened"]["body"]
    assert "Annotations" in opened and "SR" in opened, opened
    # The SR opened: its measured slice, and OHIF's offer to track its measurements, made only when its tools can
    # take them (cornerstone-dicom-sr isRehydratable). The SR's own drawing of the length (DICOMSRDisplay, labelled
    # "128.00 mm") is recorded but not required: OHIF 3.13 sometimes leaves it undrawn (a race of its own).
    (opened_sr,) = [v for v in report["steps"]["sr-viewport"]["viewports"] if measured in (v["imageId"] or "")]
    assert "continue tracking measurements" in opened_sr["paneText"], opened_sr
    assert any(exported["seriesInstanceUID"] in r["url"] for r in report["requests"]), "the SR series was not read"
    # Accepted for tracking, the SR's group becomes an editable Length of OHIF's own, as long as the one exported.
    hydrated = report["steps"]["hydrated"]
    (editable,) = hydrated["annotations"]
    assert measured in editable["imageId"] and editable["unit"] == "mm", editable
    assert editable["length"] == pytest.approx(length, rel=0.01)
    (viewport,) = [v for v in hydrated["viewports"] if measured in (v["imageId"] or "")]
    assert f"{length:.0f} mm" in viewport["svgText"], viewport


def test_length_saved_in_ohif_becomes_an_annotation(
    e2e_tools: None, new_database: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """In OHIF's measurement tracking, a Length drawn on a CT slice and the report saved ("Create SR"): the archive
    answers the STOW with 200, and the slice's annotations then list a measurement of the length OHIF shows (within
    1%), from the SR OHIF wrote (reporting/sr_import.py).

    The viewer's token holds RADIOLOGIST and RADIOLOGY_TECH: storing an SR needs radiology:upload, which the
    RADIOLOGIST role alone does not grant (permissions.py)."""
    ready = prepare(tmp_path, request)
    secret = load_or_create_secret(ready.data_dir)
    measuring = create_token(secret, "dr-ohif", [Role.RADIOLOGIST, Role.RADIOLOGY_TECH], 3600, "dicomweb")
    with serve_stack(ready, new_database().url, measuring) as stack:
        study_instance_uid = generate_uid()
        series_instance_uid, parts = ct_series(CT_SLICES, study_instance_uid)
        stack.store(parts)
        report = stack.drive(
            {
                "scenario": "measure",
                "studyInstanceUID": study_instance_uid,
                "ctSeriesInstanceUID": series_instance_uid,
                "reportName": "E2E lengths",
            }
        )
        step = report["steps"].get("measure", {})
        assert report["error"] is None, f"{report['error']}\n{report['pageErrors']}"
        assert step["stowStatus"] == 200, step["stowBody"]
        slices = [pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID for part in parts]
        [measured] = [uid for uid in slices if uid in step["imageId"]]
        headers = {"Authorization": f"Bearer {measuring}"}
        response = httpx.get(f"{stack.server.url}/api/radiology/images/{measured}/annotations", headers=headers)
    assert response.status_code == 200, response.text
    [annotation] = response.json()
    shown = re.search(r"(\d+(?:\.\d+)?) mm", step["shownText"])
    assert shown, step["shownText"]
    assert annotation["type"] == "measurement" and annotation["unit"] == "mm"
    assert annotation["value"] == pytest.approx(float(shown.group(1)), rel=0.01)
    assert annotation["createdBy"] == "dr-ohif" and annotation["trackingUid"] and annotation["sourceSopInstanceUid"]
