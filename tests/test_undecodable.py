"""Stored instances whose pixel data cannot be decoded, read through every read path of a real server: each answer is
a clear 4xx naming the instance and the cause, or the others are sent with a Warning; never a 500 or a cut body.

The instances here pass every check the store makes (their fragments parse, their pixel module is complete); only
decoding shows that one JPEG frame is noise. That is the case the read paths must answer on their own.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import httpx
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid
from requests_toolbelt.multipart.decoder import MultipartDecoder

from .conftest import LiveServer
from .data import MULTIFRAME_US, ct_instance, multipart, stow_headers

BROKEN_FRAME = 2  # of the 30 frames of MULTIFRAME_US


def with_noise_frame(study: str, series: str, frame: int, instance_number: int) -> tuple[str, bytes]:
    """MULTIFRAME_US (30 JPEG baseline frames) under new UIDs with frame ``frame`` replaced by random bytes of the
    same length: the fragments and offset table stay sound, the frame does not decode. (SOPInstanceUID, file)."""
    ds = pydicom.dcmread(MULTIFRAME_US)
    jpeg_frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    noise = random.Random(frame).randbytes(len(jpeg_frames[frame - 1]))
    jpeg_frames[frame - 1] = noise
    ds.PixelData = encapsulate(jpeg_frames, has_bot=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = instance_number
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return ds.SOPInstanceUID, buffer.getvalue()


@dataclass(frozen=True)
class Study:
    """A stored study of one series: the broken instance (instance number 1) and a sound CT (number 2)."""

    server: LiveServer
    study: str
    series: str
    broken: str
    sound: str
    broken_file: bytes

    @property
    def series_url(self) -> str:
        return f"{self.server.dicomweb}/studies/{self.study}/series/{self.series}"

    def url(self, sop: str, tail: str = "") -> str:
        return f"{self.series_url}/instances/{sop}{tail}"


@pytest.fixture(scope="module")
def study(session_server: LiveServer) -> Study:
    study, series = generate_uid(), generate_uid()
    broken, broken_file = with_noise_frame(study, series, BROKEN_FRAME, instance_number=1)
    sound = generate_uid()
    ct = ct_instance(study, series, sop_instance_uid=sound, InstanceNumber=2)
    response = httpx.post(
        session_server.dicomweb + "/studies", content=multipart([broken_file, ct]), headers=stow_headers()
    )
    assert response.status_code == 200, response.text
    return Study(session_server, study, series, broken, sound, broken_file)


def error(response: httpx.Response, status: int) -> str:
    """The detail of a JSON error answer of ``status``."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status
    return str(body["detail"])


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related answer, checked to end with its closing delimiter."""
    assert response.status_code == 200, response.text[:300]
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    assert response.content.endswith(f"--{boundary}--\r\n".encode())
    decoded = MultipartDecoder(response.content, response.headers["content-type"])
    return [(p.headers[b"Content-Type"].decode(), p.content) for p in decoded.parts]


class TestInstance:
    """WADO-RS instances: 406 for the one instance, left out of a series with a Warning."""

    def test_single_instance_default_syntax_is_406_naming_the_cause(self, study: Study) -> None:
        """Explicit VR Little Endian (the default) needs every frame decoded: 406 naming the instance and why."""
        detail = error(httpx.get(study.url(study.broken), headers={"Accept": "application/dicom"}), 406)
        assert study.broken in detail and "cannot be decoded" in detail and "transfer-syntax=*" in detail

    def test_single_instance_multipart_is_406(self, study: Study) -> None:
        """The same instance asked for as multipart: nothing to send, so 406 before any body."""
        detail = error(httpx.get(study.url(study.broken)), 406)
        assert study.broken in detail

    def test_as_stored_is_the_bytes_received(self, study: Study) -> None:
        """transfer-syntax=* always works: the stored bytes, untouched."""
        response = httpx.get(study.url(study.broken), headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert response.status_code == 200
        assert response.content == study.broken_file

    def test_series_leaves_the_broken_instance_out_with_a_warning(self, study: Study) -> None:
        """The series in Explicit VR Little Endian: the sound CT is sent, the broken instance is named in a Warning."""
        response = httpx.get(study.series_url)
        [(content_type, data)] = parts(response)
        assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == study.sound
        assert "transfer-syntax=1.2.840.10008.1.2.1" in content_type
        assert response.headers["warning"].startswith("299 ")
        assert study.broken in response.headers["warning"]

    def test_series_as_stored_has_both(self, study: Study) -> None:
        """As stored, nothing needs decoding: both instances, no Warning."""
        response = httpx.get(
            study.series_url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
        )
        assert len(parts(response)) == 2
        assert "warning" not in response.headers


class TestFrames:
    """WADO-RS frames: 406 for the broken frame alone, left out among several."""

    def test_broken_frame_alone_is_406(self, study: Study) -> None:
        detail = error(httpx.get(study.url(study.broken, f"/frames/{BROKEN_FRAME}")), 406)
        assert study.broken in detail and f"frame {BROKEN_FRAME}" in detail

    def test_several_frames_leave_the_broken_one_out(self, study: Study) -> None:
        """Frames 1, 2 and 3 decoded: 1 and 3 are sent, in order; a Warning names frame 2."""
        response = httpx.get(study.url(study.broken, "/frames/1,2,3"))
        sent = parts(response)
        assert len(sent) == 2
        ds = pydicom.dcmread(MULTIFRAME_US)
        size = ds.Rows * ds.Columns * 3
        assert [len(data) for _, data in sent] == [size, size]
        assert f"frame {BROKEN_FRAME}" in response.headers["warning"]

    def test_broken_frame_as_stored_is_sent(self, study: Study) -> None:
        """The frame's stored bytes need no decoding."""
        accept = 'multipart/related; type="image/jpeg"; transfer-syntax=*'
        [(content_type, data)] = parts(
            httpx.get(study.url(study.broken, f"/frames/{BROKEN_FRAME}"), headers={"Accept": accept})
        )
        assert content_type.startswith("image/jpeg") and len(data) > 0


class TestRendered:
    """Rendered images and thumbnails: 422 for what cannot be decoded; a study passes over it."""

    def test_rendered_broken_frame_is_422(self, study: Study) -> None:
        detail = error(httpx.get(study.url(study.broken, f"/frames/{BROKEN_FRAME}/rendered")), 422)
        assert study.broken in detail and "cannot be decoded" in detail

    def test_rendered_sound_frame_of_the_same_instance(self, study: Study) -> None:
        response = httpx.get(study.url(study.broken, "/frames/1/rendered"))
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"

    def test_thumbnail_of_a_series_passes_over_an_instance_that_does_not_decode(
        self, session_server: LiveServer
    ) -> None:
        """A series whose middle instance's first frame is noise: its thumbnail is the next instance's, and the
        broken instance's own thumbnail is a 422."""
        study, series = generate_uid(), generate_uid()
        broken, broken_file = with_noise_frame(study, series, 1, instance_number=1)
        ct = ct_instance(study, series, InstanceNumber=2)
        response = httpx.post(
            session_server.dicomweb + "/studies", content=multipart([broken_file, ct]), headers=stow_headers()
        )
        assert response.status_code == 200, response.text
        series_url = f"{session_server.dicomweb}/studies/{study}/series/{series}"
        thumbnail = httpx.get(series_url + "/thumbnail", headers={"Accept": "image/png"})
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
        detail = error(httpx.get(f"{series_url}/instances/{broken}/thumbnail"), 422)
        assert broken in detail

    def test_multipart_rendered_frames_leave_the_broken_one_out(self, study: Study) -> None:
        accept = 'multipart/related; type="image/jpeg"'
        response = httpx.get(study.url(study.broken, "/frames/1,2,3/rendered"), headers={"Accept": accept})
        assert len(parts(response)) == 2
        assert study.broken in response.headers["warning"]


class TestWadoUri:
    """WADO-URI: a legacy client gets a file (as stored) rather than an error; a rendered frame 2 is a 422."""

    def query(self, study: Study, **params: str) -> httpx.Response:
        uids = {"studyUID": study.study, "seriesUID": study.series, "objectUID": study.broken}
        return httpx.get(study.server.dicomweb + "/wado", params={"requestType": "WADO", **uids, **params})

    def test_dicom_falls_back_to_the_stored_bytes(self, study: Study) -> None:
        response = self.query(study, contentType="application/dicom")
        assert response.status_code == 200
        assert response.content == study.broken_file
        assert "transfer-syntax=1.2.840.10008.1.2.4.50" in response.headers["content-type"]

    def test_rendered_broken_frame_is_422(self, study: Study) -> None:
        detail = error(self.query(study, frameNumber=str(BROKEN_FRAME)), 422)
        assert study.broken in detail
