"""WADO-RS (PS3.18 §10.4): instances, metadata, transcoding, errors, against a real server."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from requests_toolbelt.multipart.decoder import MultipartDecoder

from dicomweb.zerocopy import HTTP_PROTOCOL

from .conftest import LiveServer, store
from .data import (
    CT,
    DEFLATED,
    JPEG2000,
    JPEG_BASELINE,
    MR_BIG_ENDIAN,
    MULTIFRAME_US,
    RT_DOSE,
    SR,
    TEST_FILES,
    ct_instance,
    stow_headers,
)
from .data import multipart as multipart_body

# (MR_small in its several encodings shares one SOP Instance UID: only the big endian one is stored here.)
RLE = TEST_FILES / "SC_rgb_rle.dcm"  # MR_small_RLE.dcm shares MR_small's SOP Instance UID
FILES = [CT, JPEG2000, JPEG_BASELINE, MR_BIG_ENDIAN, RLE, DEFLATED, MULTIFRAME_US, SR, RT_DOSE]
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def stored(session_server: LiveServer) -> LiveServer:
    """The session server with the named test files stored (an earlier test may have stored some already)."""
    store(session_server, (p.read_bytes() for p in FILES))
    return session_server


def instance_url(server: LiveServer, path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return (
        f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    assert response.status_code == 200, response.text
    decoded = MultipartDecoder(response.content, response.headers["content-type"])
    return [(p.headers[b"Content-Type"].decode(), p.content) for p in decoded.parts]


class TestInstances:
    """Retrieve instances: stored bytes, or transcoded losslessly."""

    @pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
    def test_as_stored_is_byte_exact(self, stored: LiveServer, path: Path) -> None:
        """transfer-syntax=* returns exactly the bytes STOW received."""
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        [(content_type, body)] = parts(httpx.get(instance_url(stored, path), headers={"Accept": accept}))
        assert body == path.read_bytes()
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert content_type == f"application/dicom; transfer-syntax={syntax}"

    @pytest.mark.parametrize("path", [JPEG2000, JPEG_BASELINE, RLE, MR_BIG_ENDIAN, RT_DOSE, CT], ids=lambda p: p.name)
    def test_default_is_explicit_little_endian(self, stored: LiveServer, path: Path) -> None:
        """No transfer-syntax parameter: Explicit VR Little Endian (PS3.18 §8.7.3.5.2), same pixels, same UID."""
        [(content_type, body)] = parts(
            httpx.get(instance_url(stored, path), headers={"Accept": 'multipart/related; type="application/dicom"'})
        )
        assert content_type == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
        original, received = pydicom.dcmread(path), pydicom.dcmread(io.BytesIO(body))
        assert received.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert received.SOPInstanceUID == original.SOPInstanceUID
        assert (received.pixel_array == original.pixel_array).all()

    def test_single_part_implicit(self, stored: LiveServer) -> None:
        """Accept: application/dicom with a transfer syntax returns one bare PS3.10 file."""
        response = httpx.get(
            instance_url(stored, RLE), headers={"Accept": f"application/dicom; transfer-syntax={IMPLICIT_LE}"}
        )
        assert response.headers["content-type"] == f"application/dicom; transfer-syntax={IMPLICIT_LE}"
        received = pydicom.dcmread(io.BytesIO(response.content))
        assert received.file_meta.TransferSyntaxUID == IMPLICIT_LE
        assert (received.pixel_array == pydicom.dcmread(RLE).pixel_array).all()

    def test_unconvertible_syntax_is_406(self, stored: LiveServer) -> None:
        """A lossy target the archive cannot produce: 406 saying what is available."""
        accept = "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
        response = httpx.get(instance_url(stored, JPEG2000), headers={"Accept": accept})
        assert response.status_code == 406
        assert "transfer-syntax=*" in response.json()["detail"]

    def test_study_and_series(self, stored: LiveServer) -> None:
        """A whole study and a series stream as multipart/related, every part a stored file."""
        ds = pydicom.dcmread(MULTIFRAME_US, stop_before_pixels=True)
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        study = parts(httpx.get(f"{stored.dicomweb}/studies/{ds.StudyInstanceUID}", headers={"Accept": accept}))
        series = parts(
            httpx.get(
                f"{stored.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}",
                headers={"Accept": accept},
            )
        )
        assert MULTIFRAME_US.read_bytes() in [body for _, body in study]
        assert [body for _, body in series] == [MULTIFRAME_US.read_bytes()]

    def test_dicomweb_client(self, stored: LiveServer) -> None:
        """dicomweb-client retrieves an instance and a study."""
        client = DICOMwebClient(stored.dicomweb)
        ds = pydicom.dcmread(CT)
        received = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert received.SOPInstanceUID == ds.SOPInstanceUID
        assert (received.pixel_array == ds.pixel_array).all()
        assert len(client.retrieve_study(ds.StudyInstanceUID)) >= 1


class TestWholeStudy:
    """A study as stored: one multipart body with a Content-Length, its files written by the kernel (sendfile, in
    batches of 32) on the server's own protocol, or read in worker threads where the server offers no zero-copy
    send (uvicorn's own httptools and h11 protocols here, as behind TLS)."""

    PROTOCOLS = {"sendfile": HTTP_PROTOCOL, "read": "httptools", "h11": "h11"}
    ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

    @pytest.fixture(params=list(PROTOCOLS))
    def study(self, request: pytest.FixtureRequest, server_factory: Any) -> tuple[LiveServer, str, list[bytes]]:
        """40 small CT instances and one of 2.6 MB (more than one read chunk) in the middle, stored in order."""
        server: LiveServer = server_factory(http=self.PROTOCOLS[request.param])
        study, series = generate_uid(), generate_uid()
        instances = [ct_instance(study, series, InstanceNumber=n, size=1140 if n == 20 else 64) for n in range(1, 42)]
        store(server, instances)
        return server, f"{server.dicomweb}/studies/{study}", instances

    def test_every_part_in_order(self, study: tuple[LiveServer, str, list[bytes]]) -> None:
        """Every part byte-exact and in instance order; the Content-Length is the body's length."""
        _, url, instances = study
        response = httpx.get(url, headers={"Accept": self.ACCEPT})
        assert int(response.headers["content-length"]) == len(response.content)
        assert [body for _, body in parts(response)] == instances

    def test_head(self, study: tuple[LiveServer, str, list[bytes]]) -> None:
        """HEAD: the GET's status and Content-Length, no body."""
        _, url, _ = study
        length = httpx.get(url, headers={"Accept": self.ACCEPT}).headers["content-length"]
        response = httpx.head(url, headers={"Accept": self.ACCEPT})
        assert response.status_code == 200 and response.headers["content-length"] == length
        assert response.content == b""

    def test_client_gone_half_way(self, study: tuple[LiveServer, str, list[bytes]]) -> None:
        """A client that stops reading after the first bytes leaves a server that answers the next request whole."""
        _, url, instances = study
        for _ in range(3):
            with httpx.stream("GET", url, headers={"Accept": self.ACCEPT}) as response:
                next(response.iter_raw(4096))
        assert [body for _, body in parts(httpx.get(url, headers={"Accept": self.ACCEPT}))] == instances

    def test_the_kernel_writes_the_files(
        self, study: tuple[LiveServer, str, list[bytes]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On the server's own protocol the files go through zerocopy's batches (two for 41 files), not Python."""
        from dicomweb import zerocopy

        server, url, instances = study
        batches: list[int] = []
        seen: list[Any] = []
        copy = zerocopy._copy

        def counting(socket_fd: int, files: list[Any], progress: Any) -> bool:
            if all(known is not progress for known in seen):  # a batch's first call (later ones continue it)
                seen.append(progress)
                batches.append(len(files))
            return copy(socket_fd, files, progress)

        monkeypatch.setattr(zerocopy, "_copy", counting)
        assert [body for _, body in parts(httpx.get(url, headers={"Accept": self.ACCEPT}))] == instances
        assert batches == ([32, 9] if server.http == HTTP_PROTOCOL else [])


class TestSlowClients:
    """Studies sent by the kernel to clients that do not read them (zerocopy.py)."""

    def test_slow_clients_hold_no_worker_thread(self, server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """Clients that stop reading a study hold no worker thread while the server waits for them: with twice as
        many of them as threads, the server still reads files for others; each then gets its whole study."""
        from dicomweb import archive

        monkeypatch.setattr(archive, "WORKER_THREADS", 4)
        server: LiveServer = server_factory()
        study, series = generate_uid(), generate_uid()
        instances = [ct_instance(study, series, InstanceNumber=n, size=1200) for n in range(1, 5)]  # 11.5 MB
        store(server, instances)
        host, port = server.url.removeprefix("http://").split(":")
        request = (
            f"GET /dicomweb/studies/{study} HTTP/1.1\r\nHost: {host}\r\nAccept: {TestWholeStudy.ACCEPT}\r\n\r\n"
        ).encode()
        slow = []
        for _ in range(8):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the study cannot fit in the buffers
            client.connect((host, int(port)))
            client.sendall(request)
            slow.append(client)
        try:
            time.sleep(1.0)
            sop = pydicom.dcmread(io.BytesIO(instances[0])).SOPInstanceUID
            started = time.monotonic()
            response = httpx.get(f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}",
                                 headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)  # fmt: skip
            assert response.content == instances[0] and time.monotonic() - started < 5
            for client in slow:
                assert [body for _, body in _raw_parts(client)] == instances
        finally:
            for client in slow:
                client.close()


def _raw_parts(client: socket.socket) -> list[tuple[str, bytes]]:
    """The parts of the one response a raw socket receives."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += client.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    length = int(headers["content-length"])
    while len(body) < length:
        body += client.recv(1 << 20)
    response = httpx.Response(200, headers={"content-type": headers["content-type"]}, content=body)
    return parts(response)


class TestMetadata:
    """Metadata from the database, without opening files."""

    def test_series_metadata(self, stored: LiveServer) -> None:
        """DICOM JSON of each instance; BulkDataURIs absolute and honouring X-Forwarded-*."""
        ds = pydicom.dcmread(CT, stop_before_pixels=True)
        url = f"{stored.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
        response = httpx.get(url, headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"})
        assert response.headers["content-type"] == "application/dicom+json"
        [metadata] = response.json()
        assert metadata["00080018"]["Value"] == [ds.SOPInstanceUID]
        assert metadata["00100010"]["Value"] == [{"Alphabetic": str(ds.PatientName)}]
        bulk = metadata["7FE00010"]["BulkDataURI"]
        assert bulk.startswith(f"https://pacs.example.org/dicomweb/studies/{ds.StudyInstanceUID}/series/")
        assert bulk.endswith(f"/instances/{ds.SOPInstanceUID}/bulk/7FE00010")

    def test_round_trip_through_pydicom(self, stored: LiveServer) -> None:
        """pydicom reads the metadata back with the original values."""
        client = DICOMwebClient(stored.dicomweb)
        ds = pydicom.dcmread(RT_DOSE, stop_before_pixels=True)
        metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        received = pydicom.Dataset.from_json(metadata, bulk_data_uri_handler=lambda *args: b"")
        assert received.NumberOfFrames == ds.NumberOfFrames
        assert list(received.GridFrameOffsetVector) == list(ds.GridFrameOffsetVector)

    def test_etag(self, stored: LiveServer) -> None:
        """An unchanged series answers If-None-Match with 304."""
        ds = pydicom.dcmread(CT, stop_before_pixels=True)
        url = f"{stored.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
        etag = httpx.get(url).headers["etag"]
        again = httpx.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag

    def test_ohif_combined_accept(self, stored: LiveServer) -> None:
        """OHIF's combined Accept header gets JSON, not 406."""
        ds = pydicom.dcmread(CT, stop_before_pixels=True)
        accept = "application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*"
        response = httpx.get(f"{stored.dicomweb}/studies/{ds.StudyInstanceUID}/metadata", headers={"Accept": accept})
        assert response.status_code == 200 and response.headers["content-type"] == "application/dicom+json"


class TestErrors:
    """Unknown resources, bad UIDs, missing files."""

    @pytest.mark.parametrize(
        "path",
        [
            "/studies/1.2.3",
            "/studies/1.2.3/metadata",
            "/studies/1.2.3/series/1.2.4",
            "/studies/1.2.3/series/1.2.4/instances/1.2.5",
        ],
    )
    def test_unknown_is_404(self, stored: LiveServer, path: str) -> None:
        """404 with a body naming what is missing."""
        response = httpx.get(stored.dicomweb + path)
        assert response.status_code == 404
        assert "1.2.3" in response.json()["detail"]

    def test_bad_uid_is_400(self, stored: LiveServer) -> None:
        """A UID that is not a UID: 400."""
        assert httpx.get(stored.dicomweb + "/studies/abc/metadata").status_code == 400

    def test_missing_file_is_500(self, server_factory: Any) -> None:
        """A stored file gone from the disk: 500 for that request, the server keeps serving."""
        server = server_factory()
        body = multipart_body([CT.read_bytes()])
        assert httpx.post(server.dicomweb + "/studies", content=body, headers=stow_headers()).status_code == 200
        path = server.data_dir / server.db.value("SELECT file_path FROM instance")
        path.unlink()
        response = httpx.get(instance_url(server, CT), headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert response.status_code == 500
        assert "missing" in response.json()["detail"]
        assert httpx.get(server.url + "/healthz").status_code == 200


class TestBulkData:
    """Every BulkDataURI the metadata hands out resolves, with Range support."""

    def bulk_uri(self, server: LiveServer, path: Path, tag: str) -> str:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        url = f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
        [metadata] = [m for m in httpx.get(url).json() if m["00080018"]["Value"] == [ds.SOPInstanceUID]]
        element = metadata
        for step in tag.split("/"):
            element = element["Value"][int(step)] if len(step) < 8 else element[step]
        return str(element["BulkDataURI"])

    def test_pixel_data_single_part(self, stored: LiveServer) -> None:
        """Accept: application/octet-stream gets the raw value."""
        response = httpx.get(self.bulk_uri(stored, CT, "7FE00010"), headers={"Accept": "application/octet-stream"})
        assert response.status_code == 200
        assert response.content == pydicom.dcmread(CT).PixelData

    def test_range(self, stored: LiveServer) -> None:
        """Range: bytes=100-199 gets 206 with Content-Range."""
        uri = self.bulk_uri(stored, CT, "7FE00010")
        response = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=100-199"})
        pixels = pydicom.dcmread(CT).PixelData
        assert response.status_code == 206
        assert response.content == pixels[100:200]
        assert response.headers["content-range"] == f"bytes 100-199/{len(pixels)}"
        outside = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": f"bytes={len(pixels)}-"})
        assert outside.status_code == 416

    def test_multipart_by_default(self, stored: LiveServer) -> None:
        """Without a single-part Accept the value comes as multipart/related; type=application/octet-stream."""
        [(content_type, body)] = parts(httpx.get(self.bulk_uri(stored, CT, "7FE00010")))
        assert content_type == "application/octet-stream"
        assert body == pydicom.dcmread(CT).PixelData

    def test_value_inside_a_sequence(self, stored: LiveServer) -> None:
        """WaveformData inside WaveformSequence item 0."""
        from .data import WAVEFORM

        body = multipart_body([WAVEFORM.read_bytes()])
        assert httpx.post(stored.dicomweb + "/studies", content=body, headers=stow_headers()).status_code == 200
        uri = self.bulk_uri(stored, WAVEFORM, "54000100/0/54001010")
        assert uri.endswith("/bulk/54000100/0/54001010")
        response = httpx.get(uri, headers={"Accept": "application/octet-stream"})
        assert response.content == pydicom.dcmread(WAVEFORM).WaveformSequence[0].WaveformData

    def test_unknown_path(self, stored: LiveServer) -> None:
        """A path naming no element: 404."""
        uri = self.bulk_uri(stored, CT, "7FE00010").replace("7FE00010", "00091234")
        assert httpx.get(uri).status_code == 404


class TestFrames:
    """Frames as OHIF and Cornerstone3D ask for them."""

    OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"

    def frames_url(self, server: LiveServer, path: Path, frames: str) -> str:
        return f"{instance_url(server, path)}/frames/{frames}"

    def test_native_frame_as_ohif_asks(self, stored: LiveServer) -> None:
        """A native frame: octet-stream labelled Explicit VR Little Endian, the exact pixel bytes."""
        [(content_type, body)] = parts(httpx.get(self.frames_url(stored, CT, "1"), headers={"Accept": self.OHIF}))
        assert content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        assert body == pydicom.dcmread(CT).PixelData

    def test_compressed_frames_as_stored(self, stored: LiveServer) -> None:
        """JPEG frames keep their bytes and media type, each labelled with its transfer syntax."""
        ds = pydicom.dcmread(MULTIFRAME_US)
        expected = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        received = parts(httpx.get(self.frames_url(stored, MULTIFRAME_US, "3,1,30"), headers={"Accept": self.OHIF}))
        assert [body for _, body in received] == [expected[2], expected[0], expected[29]]
        assert {content_type for content_type, _ in received} == {
            f"image/jpeg; transfer-syntax={ds.file_meta.TransferSyntaxUID}"
        }

    def test_compressed_frame_decoded_on_request(self, stored: LiveServer) -> None:
        """type=application/octet-stream without transfer-syntax: the frame decoded to native pixels."""
        accept = "multipart/related; type=application/octet-stream"
        [(content_type, body)] = parts(httpx.get(self.frames_url(stored, JPEG2000, "1"), headers={"Accept": accept}))
        assert content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        pixels = pydicom.dcmread(JPEG2000).pixel_array
        assert body == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()

    def test_rle_frame_decoded_on_request(self, stored: LiveServer) -> None:
        """A colour RLE frame (decoded in a worker thread, being small) as native pixels, RGB by pixel as pydicom
        gives them."""
        accept = "multipart/related; type=application/octet-stream"
        [(content_type, body)] = parts(httpx.get(self.frames_url(stored, RLE, "1"), headers={"Accept": accept}))
        assert content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        pixels = pydicom.dcmread(RLE).pixel_array
        assert body == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()

    def test_monochrome_rle_frame_decoded_from_its_bytes(
        self, stored: LiveServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A monochrome RLE frame is decoded from the bytes read at its recorded location: the file is not parsed
        again. Signed 16-bit pixels, equal to pydicom's."""
        from dicomweb import transcode

        def no_parsing(path: Path, numbers: list[int]) -> list[bytes]:
            raise AssertionError(f"{path} was parsed")

        monkeypatch.setattr(transcode, "decode_frames", no_parsing)
        ds = pydicom.dcmread(TEST_FILES / "MR_small_RLE.dcm")
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        store(stored, [buffer.getvalue()])
        url = f"{stored.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
        accept = "multipart/related; type=application/octet-stream"
        [(_, body)] = parts(httpx.get(f"{url}{ds.SOPInstanceUID}/frames/1", headers={"Accept": accept}))
        pixels = ds.pixel_array
        assert body == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()

    @pytest.mark.parametrize("frames", ["0", "31", "a", "1,,2", "-1"])
    def test_bad_frame_lists(self, stored: LiveServer, frames: str) -> None:
        """0, beyond NumberOfFrames, not a number: 400."""
        response = httpx.get(self.frames_url(stored, MULTIFRAME_US, frames), headers={"Accept": self.OHIF})
        assert response.status_code == 400, frames
        assert "frame" in response.json()["detail"]

    def test_no_pixel_data(self, stored: LiveServer) -> None:
        """An SR has no frames: 404."""
        assert httpx.get(self.frames_url(stored, SR, "1"), headers={"Accept": self.OHIF}).status_code == 404

    def test_frames_read_from_the_index_recorded_at_store(
        self, stored: LiveServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With frame locations recorded at store time, frames are served without parsing the file (the parsing
        path is switched off here); the index is in the database."""
        from dicomweb import frames as frames_module

        def no_parsing(path: Path, numbers: list[int]) -> list[Any]:
            raise AssertionError(f"{path} was parsed")

        monkeypatch.setattr(frames_module, "read_frames", no_parsing)
        ds = pydicom.dcmread(MULTIFRAME_US)
        expected = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        received = parts(httpx.get(self.frames_url(stored, MULTIFRAME_US, "30,2"), headers={"Accept": self.OHIF}))
        assert [body for _, body in received] == [expected[29], expected[1]]
        [(_, body)] = parts(httpx.get(self.frames_url(stored, CT, "1"), headers={"Accept": self.OHIF}))
        assert body == pydicom.dcmread(CT).PixelData
        index = stored.db.value("SELECT frame_index FROM instance WHERE sop_instance_uid = $1", ds.SOPInstanceUID)
        assert index is not None and len(orjson.loads(index)) == 30

    def test_frame_locations_kept_in_memory_follow_the_archive(self, server_factory: Any) -> None:
        """Frame locations a server keeps in memory never serve what is gone: a replaced instance
        (DICOMWEB_DUPLICATES=overwrite) gives its new pixels, a deleted one 404."""
        server: LiveServer = server_factory(duplicates="overwrite")
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        url = f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
        for pixel in (b"\x01\x00", b"\x02\x00"):
            instance = ct_instance(study, series, sop_instance_uid=sop, PixelData=pixel * 64 * 64)
            store(server, [instance])
            [(_, body)] = parts(httpx.get(url + "/frames/1", headers={"Accept": self.OHIF}))
            assert body == pixel * 64 * 64
        assert httpx.delete(url).status_code == 204
        assert httpx.get(url + "/frames/1", headers={"Accept": self.OHIF}).status_code == 404

    @pytest.mark.parametrize("whole_series", [1000, 3])
    def test_locations_of_a_series_in_one_query(
        self, stored: LiveServer, monkeypatch: pytest.MonkeyPatch, whole_series: int
    ) -> None:
        """The first frame asked for in a series brings the locations of all its instances (one query for a viewer
        reading the series), unless the series has more instances than SERIES_LOCATIONS: then one query each."""
        from dicomweb.db import retrieve
        from dicomweb.services import retrieve as retrieve_service

        monkeypatch.setattr(retrieve_service, "SERIES_LOCATIONS", whole_series)
        queries: list[str] = []
        query = retrieve.instance_frames

        async def counting(conn: Any, study: str, series: str, sop: str, whole: int = 0) -> Any:
            queries.append(sop)
            return await query(conn, study, series, sop, whole)

        monkeypatch.setattr(retrieve, "instance_frames", counting)
        study, series = generate_uid(), generate_uid()
        instances = [ct_instance(study, series, InstanceNumber=n) for n in range(1, 6)]
        store(stored, instances)
        for instance in instances:
            sop = pydicom.dcmread(io.BytesIO(instance)).SOPInstanceUID
            url = f"{stored.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/1"
            [(_, body)] = parts(httpx.get(url, headers={"Accept": self.OHIF}))
            assert body == pydicom.dcmread(io.BytesIO(instance)).PixelData
        assert len(queries) == (1 if whole_series >= 5 else 5)

    def test_range_on_one_frame(self, stored: LiveServer) -> None:
        """Range on a single frame (Cornerstone3D progressive loading): 206 with Content-Range of the frame."""
        ds = pydicom.dcmread(MULTIFRAME_US)
        frame = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))[4]
        headers = {"Accept": self.OHIF, "Range": "bytes=0-1023"}
        response = httpx.get(self.frames_url(stored, MULTIFRAME_US, "5"), headers=headers)
        assert response.status_code == 206
        assert response.content == frame[:1024]
        assert response.headers["content-range"] == f"bytes 0-1023/{len(frame)}"
        assert response.headers["content-type"] == f"image/jpeg; transfer-syntax={ds.file_meta.TransferSyntaxUID}"
