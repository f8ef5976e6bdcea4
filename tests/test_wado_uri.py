"""WADO-URI (PS3.18 §9): Retrieve DICOM Instance and Retrieve Rendered Instance at /wado, against a real server."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from .conftest import LiveServer, store
from .data import CT, JPEG2000, JPEG_BASELINE, MR_BIG_ENDIAN, MULTIFRAME_US, SR, stow_headers
from .data import multipart as multipart_body

FILES = [CT, JPEG_BASELINE, MR_BIG_ENDIAN, MULTIFRAME_US, SR, JPEG2000]
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def stored(session_server: LiveServer) -> LiveServer:
    """The session server with the named test files stored (an earlier module may have stored some already)."""
    store(session_server, (p.read_bytes() for p in FILES))
    return session_server


def uids(path: Path) -> dict[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {"studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID}


def wado(server: LiveServer, path: Path | None, root: str = "", headers: dict[str, str] | None = None, **params: Any):
    """GET /wado with requestType=WADO, the file's UIDs and ``params`` (None drops a parameter)."""
    query: dict[str, Any] = {"requestType": "WADO", **(uids(path) if path else {}), **params}
    query = {k: v for k, v in query.items() if v is not None}
    return httpx.get(f"{server.url}{root}/wado", params=query, headers=headers)


def decoded(response: httpx.Response, media_type: str) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    return Image.open(io.BytesIO(response.content))


class TestRetrieveDicomInstance:
    """contentType=application/dicom (PS3.18 §9.4)."""

    @pytest.mark.parametrize("path", [CT, JPEG_BASELINE, MR_BIG_ENDIAN, SR], ids=lambda p: p.name)
    def test_as_stored_is_byte_exact(self, stored: LiveServer, path: Path) -> None:
        """transferSyntax=* (what Cornerstone's wadouri loader sends) returns the stored bytes."""
        response = wado(stored, path, contentType="application/dicom", transferSyntax="*")
        assert response.status_code == 200
        assert response.content == path.read_bytes()
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert response.headers["content-type"] == f"application/dicom; transfer-syntax={syntax}"

    def test_default_explicit_little_endian_as_stored(self, stored: LiveServer) -> None:
        """Without transferSyntax the default is Explicit VR Little Endian: CT_small is stored so, byte for byte."""
        response = wado(stored, CT, contentType="application/dicom")
        assert response.content == CT.read_bytes()
        assert response.headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"

    @pytest.mark.parametrize("path", [JPEG_BASELINE, MR_BIG_ENDIAN, JPEG2000], ids=lambda p: p.name)
    def test_default_explicit_little_endian_transcoded(self, stored: LiveServer, path: Path) -> None:
        """Other stored syntaxes are converted to Explicit VR Little Endian, same pixels, same UID."""
        response = wado(stored, path, contentType="application/dicom")
        assert response.headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
        received, original = pydicom.dcmread(io.BytesIO(response.content)), pydicom.dcmread(path)
        assert received.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert received.SOPInstanceUID == original.SOPInstanceUID
        assert (received.pixel_array == original.pixel_array).all()

    def test_requested_syntax(self, stored: LiveServer) -> None:
        """transferSyntax=Implicit VR Little Endian is honoured."""
        response = wado(stored, JPEG_BASELINE, contentType="application/dicom", transferSyntax=IMPLICIT_LE)
        received = pydicom.dcmread(io.BytesIO(response.content))
        assert received.file_meta.TransferSyntaxUID == IMPLICIT_LE
        assert (received.pixel_array == pydicom.dcmread(JPEG_BASELINE).pixel_array).all()

    def test_unavailable_syntax_falls_back(self, stored: LiveServer) -> None:
        """A syntax the archive cannot produce (lossy JPEG from CT): Explicit VR Little Endian instead."""
        response = wado(stored, CT, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50")
        assert response.status_code == 200
        assert response.headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
        assert response.content == CT.read_bytes()

    def test_accept_header_selects_dicom(self, stored: LiveServer) -> None:
        """No contentType: the Accept header decides (PS3.18 §9.3)."""
        response = wado(stored, CT, headers={"Accept": "application/dicom"})
        assert response.headers["content-type"].startswith("application/dicom")
        assert response.content == CT.read_bytes()

    def test_under_dicomweb_root(self, stored: LiveServer) -> None:
        """/dicomweb/wado answers as /wado does."""
        response = wado(stored, CT, root="/dicomweb", contentType="application/dicom", transferSyntax="*")
        assert response.content == CT.read_bytes()


class TestRetrieveRenderedInstance:
    """contentType=image/jpeg, image/png, image/gif (PS3.18 §9.5)."""

    @pytest.mark.parametrize("headers", [None, {"Accept": "*/*"}])
    def test_default_is_jpeg(self, stored: LiveServer, headers: dict[str, str] | None) -> None:
        """No contentType and Accept */* (or none): image/jpeg (PS3.18 §9.3)."""
        image = decoded(wado(stored, CT, headers=headers), "image/jpeg")
        assert image.format == "JPEG" and image.size == (128, 128) and image.mode == "L"

    @pytest.mark.parametrize("media_type", ["image/png", "image/gif"])
    def test_other_types(self, stored: LiveServer, media_type: str) -> None:
        """PNG and GIF by contentType."""
        assert decoded(wado(stored, CT, contentType=media_type), media_type).size == (128, 128)

    @pytest.mark.parametrize(
        ("params", "size"),
        [({"rows": 64}, (64, 64)), ({"columns": 32}, (32, 32)), ({"rows": 64, "columns": 32}, (32, 32))],
    )
    def test_rows_and_columns(self, stored: LiveServer, params: dict[str, Any], size: tuple[int, int]) -> None:
        """rows and columns are maxima; the aspect ratio is kept (PS3.18 §9.5.1.2)."""
        assert decoded(wado(stored, CT, contentType="image/png", **params), "image/png").size == size
        # JPEG2000.dcm is 256 columns by 1024 rows.
        assert decoded(wado(stored, JPEG2000, rows=512), "image/jpeg").size == (128, 512)

    def test_window(self, stored: LiveServer) -> None:
        """windowCenter/windowWidth: the linear window of PS3.3 C.11.2.1.2.1 over the rescaled values."""
        image = decoded(wado(stored, CT, contentType="image/png", windowCenter=40, windowWidth=400), "image/png")
        ds = pydicom.dcmread(CT)
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        expected = np.clip(((values - 39.5) / 399 + 0.5), 0, 1) * 255
        assert float(np.abs(np.asarray(image, dtype=np.float64) - expected).mean()) < 0.51

    def test_frame_number(self, stored: LiveServer) -> None:
        """frameNumber picks the frame of a multi-frame instance."""
        first = decoded(wado(stored, MULTIFRAME_US, contentType="image/png"), "image/png")
        tenth = decoded(wado(stored, MULTIFRAME_US, contentType="image/png", frameNumber=10), "image/png")
        expected = pydicom.dcmread(MULTIFRAME_US).pixel_array[9]
        assert (np.asarray(tenth) == expected).all()
        assert (np.asarray(first) != np.asarray(tenth)).any()

    def test_image_quality(self, stored: LiveServer) -> None:
        """imageQuality sets the JPEG quality."""
        low, high = wado(stored, CT, imageQuality=5), wado(stored, CT, imageQuality=100)
        assert len(low.content) < len(high.content) / 2

    def test_region(self, stored: LiveServer) -> None:
        """region=x0,y0,x1,y1 (fractions) crops before the size is fitted."""
        whole = np.asarray(decoded(wado(stored, CT, contentType="image/png"), "image/png"))
        quarter = decoded(wado(stored, CT, contentType="image/png", region="0.5,0,1,0.5"), "image/png")
        assert quarter.size == (64, 64)
        assert (np.asarray(quarter) == whole[:64, 64:]).all()
        scaled = decoded(wado(stored, CT, contentType="image/png", region="0,0,0.5,0.5", rows=128), "image/png")
        assert scaled.size == (128, 128)

    def test_colour(self, stored: LiveServer) -> None:
        """A colour instance is rendered in colour."""
        image = decoded(wado(stored, JPEG_BASELINE, contentType="image/png"), "image/png")
        assert image.mode == "RGB"
        assert (np.asarray(image) == pydicom.dcmread(JPEG_BASELINE).pixel_array).all()


class TestErrors:
    """400 naming what is wrong, 404 for unknown instances, 406 for unsupported content types."""

    @pytest.mark.parametrize("request_type", [None, "WADO-RS", "wado"])
    def test_request_type(self, stored: LiveServer, request_type: str | None) -> None:
        """requestType other than WADO (or none): 400 (PS3.18 §9.1.2.1.1)."""
        response = wado(stored, CT, requestType=request_type)
        assert response.status_code == 400 and "requestType" in response.json()["detail"]

    def test_missing_uids(self, stored: LiveServer) -> None:
        """Every missing UID parameter is named."""
        response = wado(stored, CT, objectUID=None)
        assert response.status_code == 400 and response.json()["detail"].endswith("objectUID")
        response = wado(stored, None)
        assert response.status_code == 400
        assert response.json()["detail"].endswith("studyUID, seriesUID, objectUID")

    def test_bad_uid(self, stored: LiveServer) -> None:
        """A UID that is not a UID: 400 naming the parameter."""
        response = wado(stored, CT, seriesUID="1.2.x")
        assert response.status_code == 400 and response.json()["detail"].startswith("seriesUID")

    def test_unknown_instance_is_404(self, stored: LiveServer) -> None:
        """An unknown object, or one asked for under another series: 404 naming it."""
        response = wado(stored, CT, objectUID="1.2.3.4")
        assert response.status_code == 404 and "1.2.3.4" in response.json()["detail"]
        assert wado(stored, CT, seriesUID="1.2.3.5", contentType="application/dicom").status_code == 404

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({"windowCenter": 40}, "windowCenter"),
            ({"windowCenter": "x", "windowWidth": 400}, "windowCenter"),
            ({"windowCenter": 40, "windowWidth": 0}, "windowWidth"),
            ({"rows": 0}, "rows"),
            ({"columns": "wide"}, "columns"),
            ({"frameNumber": 0}, "frameNumber"),
            ({"frameNumber": 2}, "frameNumber"),
            ({"imageQuality": 101}, "imageQuality"),
            ({"region": "0,0,1"}, "region"),
            ({"region": "0.5,0,0.4,1"}, "region"),
            ({"anonymize": "yes"}, "anonymize"),
            ({"contentType": "application/dicom", "transferSyntax": "abc"}, "transferSyntax"),
        ],
    )
    def test_bad_parameter_is_400(self, stored: LiveServer, params: dict[str, Any], named: str) -> None:
        """The detail names the parameter."""
        response = wado(stored, CT, **params)
        assert response.status_code == 400
        assert response.json()["detail"].startswith(named)

    @pytest.mark.parametrize("content_type", ["text/html", "application/pdf", "image/jp2"])
    def test_unsupported_content_type_is_406(self, stored: LiveServer, content_type: str) -> None:
        """Only application/dicom, image/jpeg, image/png and image/gif are offered."""
        response = wado(stored, CT, contentType=content_type)
        assert response.status_code == 406 and "application/dicom" in response.json()["detail"]

    def test_rendered_sr_is_406(self, stored: LiveServer) -> None:
        """An SR has no rendered image (it is retrievable as application/dicom)."""
        response = wado(stored, SR, contentType="image/jpeg")
        assert response.status_code == 406 and "no pixel data" in response.json()["detail"]

    def test_missing_file_is_500(self, server_factory: Any) -> None:
        """A stored file gone from the disk: 500, logged, for both transactions."""
        server = server_factory()
        body = multipart_body([CT.read_bytes()])
        assert httpx.post(server.dicomweb + "/studies", content=body, headers=stow_headers()).status_code == 200
        (server.data_dir / server.db.value("SELECT file_path FROM instance")).unlink()
        for content_type in ("application/dicom", "image/jpeg"):
            response = wado(server, CT, contentType=content_type)
            assert response.status_code == 500 and "missing" in response.json()["detail"]
