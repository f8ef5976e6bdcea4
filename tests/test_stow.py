"""STOW-RS (PS3.18 §10.5) against a real server on a real socket, with real DICOM files and clients."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from requests_toolbelt.multipart.encoder import MultipartEncoder

from dicomweb.status import FailureReason

from .conftest import LiveServer
from .data import (
    CHARSET_FILES,
    CT,
    DEFLATED,
    JPEG2000,
    MR,
    MR_BIG_ENDIAN,
    ct_instance,
    multipart,
    readable_test_files,
    stow_headers,
)
from .test_frame_index import value_tell
from .test_instance import REFUSED_TEST_FILES, command_element

REFERENCED = "00081199"
FAILED = "00081198"
RETRIEVE_URL = "00081190"
SOP_INSTANCE = "00081155"
FAILURE_REASON = "00081197"


def post(
    server: LiveServer, body: bytes, headers: dict[str, str] | None = None, path: str = "/studies"
) -> httpx.Response:
    return httpx.post(server.dicomweb + path, content=body, headers=headers or stow_headers(), timeout=60)


def failures(response: httpx.Response) -> list[tuple[str | None, int]]:
    items = response.json().get(FAILED, {}).get("Value", [])
    return [(i.get(SOP_INSTANCE, {}).get("Value", [None])[0], i[FAILURE_REASON]["Value"][0]) for i in items]


def stored(response: httpx.Response) -> list[str]:
    return [i[SOP_INSTANCE]["Value"][0] for i in response.json().get(REFERENCED, {}).get("Value", [])]


def post_together(server: LiveServer, bodies: list[bytes]) -> list[int]:
    """POST each body from a thread of its own, all released at the same moment; the statuses."""
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def client(body: bytes) -> None:
        barrier.wait()
        statuses.append(post(server, body).status_code)

    threads = [threading.Thread(target=client, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@contextmanager
def partly_sent(server: LiveServer, body: bytes, sent: int) -> Iterator[socket.socket]:
    """A STOW-RS request on a raw socket that declares all of ``body`` and has sent its first ``sent`` bytes."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"POST /dicomweb/studies HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {stow_headers()['Content-Type']}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:sent])
        yield sock


def temp_files(server: LiveServer) -> list[Path]:
    return list((server.data_dir / "tmp").iterdir())


class TestStore:
    """Storing instances: response, rows, and bytes on disk."""

    def test_dicomweb_client_stores_a_ct(self, session_server: LiveServer) -> None:
        """dicomweb-client's store_instances gets 200 with an absolute RetrieveURL that names the real port."""
        client = DICOMwebClient(session_server.dicomweb)
        ds = pydicom.dcmread(CT)
        result = client.store_instances([ds])
        referenced = result.ReferencedSOPSequence[0]
        assert referenced.ReferencedSOPInstanceUID == ds.SOPInstanceUID
        port = session_server.url.rsplit(":", 1)[1]
        assert referenced.RetrieveURL == (
            f"http://127.0.0.1:{port}/dicomweb/studies/{ds.StudyInstanceUID}"
            f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )
        assert result.RetrieveURL.endswith(f"/dicomweb/studies/{ds.StudyInstanceUID}")

    def test_stored_bytes_are_the_received_bytes(self, session_server: LiveServer) -> None:
        """The file on disk is byte-identical to the part, File Meta Information included."""
        original = JPEG2000.read_bytes()
        response = post(session_server, multipart([original]))
        assert response.status_code in (200, 202) or response.status_code == 409  # may be stored by another test
        ds = pydicom.dcmread(JPEG2000)
        row = session_server.db.fetch(
            "SELECT file_path, file_size, transfer_syntax_uid, sop_class_uid FROM instance WHERE sop_instance_uid = $1",
            ds.SOPInstanceUID,
        )[0]
        assert (session_server.data_dir / row["file_path"]).read_bytes() == original
        assert row["file_size"] == len(original)
        assert row["transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID
        assert row["sop_class_uid"] == ds.SOPClassUID

    def test_index_rows_and_counts(self, server_factory: Any) -> None:
        """Three instances in two series make one patient, one study and exact aggregates."""
        server = server_factory()
        study = pydicom.uid.generate_uid()
        series_a, series_b = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        parts = [ct_instance(study, series_a), ct_instance(study, series_a), ct_instance(study, series_b)]
        response = post(server, multipart(parts))
        assert response.status_code == 200, response.text
        assert len(stored(response)) == 3
        row = server.db.fetch("SELECT * FROM study WHERE study_instance_uid = $1", study)[0]
        assert row["number_of_study_related_series"] == 2
        assert row["number_of_study_related_instances"] == 3
        assert row["modalities_in_study"] == ["CT"]
        assert str(row["study_date"]) == "2024-03-15"
        assert server.db.value("SELECT count(*) FROM patient") == 1
        counts = server.db.fetch(
            "SELECT number_of_series_related_instances FROM series ORDER BY number_of_series_related_instances"
        )
        assert [r[0] for r in counts] == [1, 2]

    def test_metadata_stored_as_dicom_json(self, session_server: LiveServer) -> None:
        """The DICOM JSON metadata is kept per instance, pixel data as a relative BulkDataURI."""
        body = ct_instance()
        response = post(session_server, multipart([body]))
        assert response.status_code == 200
        uid = stored(response)[0]
        metadata = session_server.db.value("SELECT metadata FROM instance WHERE sop_instance_uid = $1", uid)
        import orjson

        parsed = orjson.loads(metadata)
        assert parsed["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
        assert parsed["7FE00010"]["BulkDataURI"].endswith(f"/instances/{uid}/bulk/7FE00010")
        assert parsed["7FE00010"]["BulkDataURI"].startswith("studies/")

    def test_single_part_application_dicom(self, session_server: LiveServer) -> None:
        """A bare application/dicom body is one instance."""
        response = post(session_server, ct_instance(), {"Content-Type": "application/dicom"})
        assert response.status_code == 200
        assert len(stored(response)) == 1

    def test_store_to_study_url(self, session_server: LiveServer) -> None:
        """POST /studies/{StudyInstanceUID} stores instances of that study."""
        study = pydicom.uid.generate_uid()
        response = post(session_server, multipart([ct_instance(study)]), path=f"/studies/{study}")
        assert response.status_code == 200
        assert response.json()[RETRIEVE_URL]["Value"][0].endswith(f"/studies/{study}")

    def test_requests_toolbelt_and_chunked_generator_body(self, session_server: LiveServer) -> None:
        """A chunked body (no Content-Length) in small pieces is parsed across chunk boundaries."""
        body = multipart([ct_instance(), ct_instance()], boundary="abc123")

        def chunks() -> Any:
            for start in range(0, len(body), 997):
                yield body[start : start + 997]

        response = httpx.post(
            session_server.dicomweb + "/studies", content=chunks(), headers=stow_headers("abc123"), timeout=60
        )
        assert response.status_code == 200
        assert len(stored(response)) == 2

    def test_accept_json(self, session_server: LiveServer) -> None:
        """Accept: application/json gets the same DICOM JSON body."""
        headers = {**stow_headers(), "Accept": "application/json"}
        response = post(session_server, multipart([ct_instance()]), headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"


CONTENT_TYPES = [
    'multipart/related; type="application/dicom"; boundary="{b}"',
    "multipart/related; type=application/dicom; boundary={b}",
    'multipart/related; boundary={b}; type="application/dicom"',
    'Multipart/Related; Type="Application/DICOM"; Boundary={b}',
    "multipart/related;boundary={b};type=application/dicom",
    "multipart/related; boundary={b}",
]


class TestContentType:
    """Content-Type variants that real clients send are all accepted."""

    @pytest.mark.parametrize("template", CONTENT_TYPES)
    def test_variant(self, session_server: LiveServer, template: str) -> None:
        """Quoted or not, any order and case, with or without the type parameter."""
        boundary = "----=_Part_0_1804289383.1714"
        headers = {"Content-Type": template.format(b=boundary)}
        response = post(session_server, multipart([ct_instance()], boundary=boundary), headers)
        assert response.status_code == 200, response.text

    def test_requests_toolbelt_encoder(self, session_server: LiveServer) -> None:
        """requests-toolbelt's MultipartEncoder output (with Content-Disposition headers) is accepted."""
        encoder = MultipartEncoder(fields={"file": ("ct.dcm", ct_instance(), "application/dicom")})
        content_type = encoder.content_type.replace(
            "multipart/form-data", 'multipart/related; type="application/dicom"'
        )
        response = post(session_server, encoder.to_string(), {"Content-Type": content_type})
        assert response.status_code == 200, response.text


class TestEveryTestFile:
    """Every file under pydicom's test data that pydicom reads is stored, or refused for a stated reason."""

    def test_all_readable_files(self, server_factory: Any) -> None:
        """Files with the four required UIDs are stored; the others fail with 0xA900 (missing UID) or 0xC000."""
        server = server_factory()
        files = readable_test_files() + sorted(CHARSET_FILES.glob("*.dcm"))
        expected_stored: set[str] = set()
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            required = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
            if all(str(ds.get(k, "")).strip() for k in required) and path.name not in REFUSED_TEST_FILES:
                expected_stored.add(str(ds.SOPInstanceUID))
        seen: set[str] = set()
        failed: list[tuple[str | None, int]] = []
        for start in range(0, len(files), 20):
            response = post(server, multipart(p.read_bytes() for p in files[start : start + 20]))
            assert response.status_code in (200, 202, 409), response.text
            seen.update(stored(response))
            failed.extend(failures(response))
        # Several test files share SOP Instance UIDs with different bytes (MR_small vs MR_small_bigendian):
        # the first one is stored, the later ones are refused as duplicates.
        assert seen == expected_stored
        reasons = {reason for _, reason in failed}
        assert reasons <= {
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            FailureReason.CANNOT_UNDERSTAND,
            FailureReason.DUPLICATE_SOP_INSTANCE,
        }
        assert server.db.value("SELECT count(*) FROM instance") == len(expected_stored)
        assert not temp_files(server)

    def test_non_ascii_patient_names(self, server_factory: Any) -> None:
        """Names in ISO_IR 100/144/192, ISO 2022 and GB18030 are stored decoded, and folded for matching."""
        server = server_factory()
        response = post(
            server,
            multipart(
                [(CHARSET_FILES / n).read_bytes() for n in ("chrGerm.dcm", "chrX1.dcm", "chrH31.dcm", "chrRuss.dcm")]
            ),
        )
        assert response.status_code == 200, response.text
        names = {r[0]: r[1] for r in server.db.fetch("SELECT patient_name, patient_name_folded FROM patient")}
        assert names["Äneas^Rüdiger"] == "aneas^rudiger"
        assert "Wang^XiaoDong=王^小東" in names
        assert "Yamada^Tarou=山田^太郎=やまだ^たろう" in names
        assert "Люкceмбypг" in names


class TestDuplicates:
    """A SOP Instance UID stored twice never damages the stored copy."""

    def test_identical_bytes_are_a_success(self, server_factory: Any) -> None:
        """Sending the same instance again succeeds and stores nothing new."""
        server = server_factory()
        body = ct_instance()
        assert post(server, multipart([body])).status_code == 200
        again = post(server, multipart([body]))
        assert again.status_code == 200
        assert server.db.value("SELECT count(*) FROM instance") == 1
        assert server.db.value("SELECT number_of_study_related_instances FROM study") == 1

    def test_different_bytes_are_refused(self, server_factory: Any) -> None:
        """Other bytes under a stored SOP Instance UID: 409, failure 0x0111, stored file untouched."""
        server = server_factory()
        assert post(server, multipart([MR.read_bytes()])).status_code == 200
        path = server.data_dir / server.db.value("SELECT file_path FROM instance")
        response = post(server, multipart([MR_BIG_ENDIAN.read_bytes()]))
        assert response.status_code == 409
        assert failures(response) == [(pydicom.dcmread(MR).SOPInstanceUID, FailureReason.DUPLICATE_SOP_INSTANCE)]
        assert "already stored" in response.headers["warning"]
        assert path.read_bytes() == MR.read_bytes()

    def test_overwrite_policy_replaces(self, server_factory: Any) -> None:
        """With DICOMWEB_DUPLICATES=overwrite the new bytes replace the old file; counts stay exact."""
        server = server_factory(duplicates="overwrite")
        assert post(server, multipart([MR.read_bytes()])).status_code == 200
        old = server.data_dir / server.db.value("SELECT file_path FROM instance")
        assert post(server, multipart([MR_BIG_ENDIAN.read_bytes()])).status_code == 200
        new = server.data_dir / server.db.value("SELECT file_path FROM instance")
        assert new.read_bytes() == MR_BIG_ENDIAN.read_bytes()
        assert not old.exists()
        assert server.db.value("SELECT count(*) FROM instance") == 1
        assert server.db.value("SELECT number_of_study_related_instances FROM study") == 1
        assert server.db.value("SELECT number_of_series_related_instances FROM series") == 1


class TestPartialFailures:
    """Bad parts become failure entries; the good parts of the same request are stored."""

    def test_wrong_study_and_garbage_part(self, server_factory: Any) -> None:
        """In /studies/{S}: an instance of another study fails 0xA900, a garbage part 0xC000, the rest is stored."""
        server = server_factory()
        study = pydicom.uid.generate_uid()
        good, other = ct_instance(study), ct_instance()
        response = post(server, multipart([good, other, b"this is not DICOM" * 100]), path=f"/studies/{study}")
        assert response.status_code == 202, response.text
        assert len(stored(response)) == 1
        reasons = sorted(reason for _, reason in failures(response))
        assert reasons == [FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, FailureReason.CANNOT_UNDERSTAND]
        assert "differs from" in response.headers["warning"]
        assert server.db.value("SELECT count(*) FROM instance") == 1

    def test_file_cut_in_half(self, server_factory: Any) -> None:
        """A DICOM file cut in half is refused with 0xC000; nothing is stored, no file left behind."""
        server = server_factory()
        data = CT.read_bytes()
        response = post(server, multipart([data[: len(data) // 2]]))
        assert response.status_code == 409
        assert [reason for _, reason in failures(response)] == [FailureReason.CANNOT_UNDERSTAND]
        assert server.db.value("SELECT count(*) FROM instance") == 0
        assert not list((server.data_dir / "files").rglob("*.dcm"))
        assert not temp_files(server)

    def test_uid_with_path_traversal(self, server_factory: Any) -> None:
        """A StudyInstanceUID like '../../x' never reaches the file system: failure 0xA900."""
        server = server_factory()
        ds = pydicom.dcmread(DEFLATED)
        ds.StudyInstanceUID = "../../../../tmp/evil"

        buffer = io.BytesIO()
        ds.save_as(buffer)
        response = post(server, multipart([buffer.getvalue()]))
        assert response.status_code == 409
        assert [reason for _, reason in failures(response)] == [FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS]
        assert not list((server.data_dir / "files").rglob("*"))


class TestUnreadableInstances:
    """What the store-time checks refuse (instance.py, frame_index.py) gets 0xC000 and its reason in the Warning
    header; PS3.18 Table I.1-1 gives a FailedSOPSequence item no text attribute, so the item carries only the code."""

    def test_garbled_fragment_refused(self, server_factory: Any) -> None:
        """JPEG2000.dcm with its fragment's item tag overwritten: 409, 0xC000 (49152), the reason and the instance
        in the Warning header, nothing stored and no file left behind."""
        server = server_factory()
        content = bytearray(JPEG2000.read_bytes())
        position = value_tell(JPEG2000) + 8
        content[position : position + 4] = b"JUNK"
        response = post(server, multipart([bytes(content)]))
        assert response.status_code == 409
        uid = pydicom.dcmread(JPEG2000).SOPInstanceUID
        assert failures(response) == [(uid, 49152)]
        [item] = response.json()[FAILED]["Value"]
        assert set(item) == {"00081150", SOP_INSTANCE, FAILURE_REASON}
        warning = response.headers["warning"]
        assert warning.startswith(f'299 127.0.0.1 "{uid}: the fragments of the encapsulated pixel data do not parse')
        assert warning.endswith('(0xc000)"')
        assert server.db.value("SELECT count(*) FROM instance") == 0
        assert not list((server.data_dir / "files").rglob("*.dcm"))
        assert not temp_files(server)

    def test_command_element_refused_beside_a_stored_instance(self, server_factory: Any) -> None:
        """A CT with Error Comment (0000,0902) is refused and named; the valid instance of the same request is
        stored (202)."""
        server = server_factory()
        good, bad = ct_instance(), command_element(ct_instance())
        response = post(server, multipart([good, bad]))
        assert response.status_code == 202, response.text
        assert stored(response) == [pydicom.dcmread(io.BytesIO(good)).SOPInstanceUID]
        bad_uid = pydicom.dcmread(io.BytesIO(bad)).SOPInstanceUID
        assert failures(response) == [(bad_uid, FailureReason.CANNOT_UNDERSTAND)]
        assert f"{bad_uid}: the data set holds (0000,0902): group 0000 (DIMSE command)" in response.headers["warning"]
        assert server.db.value("SELECT count(*) FROM instance") == 1


class TestBadRequests:
    """Malformed requests get the status PS3.18 names and a body that says what is wrong; nothing is stored."""

    @pytest.mark.parametrize(
        ("headers", "status", "words"),
        [
            ({"Content-Type": "multipart/related; type=application/dicom"}, 400, "boundary"),
            ({"Content-Type": 'multipart/related; type="application/dicom+json"; boundary=x'}, 415, "type"),
            ({"Content-Type": "text/plain"}, 415, "text/plain"),
            ({}, 415, "missing"),
            ({**stow_headers(), "Accept": "application/xml"}, 406, "application/xml"),
        ],
    )
    def test_headers(self, session_server: LiveServer, headers: dict[str, str], status: int, words: str) -> None:
        """Missing boundary 400, wrong type 415, other media types 415, unacceptable Accept 406."""
        response = httpx.post(session_server.dicomweb + "/studies", content=multipart([ct_instance()]), headers=headers)
        assert response.status_code == status
        body = response.json()
        assert body["status"] == status
        assert words in body["detail"]

    def test_garbage_multipart_body(self, session_server: LiveServer) -> None:
        """A body that is not multipart at all: 400."""
        response = post(session_server, b"\x00garbage" * 1000)
        assert response.status_code == 400
        assert "multipart" in response.json()["detail"]

    def test_truncated_multipart(self, server_factory: Any) -> None:
        """A body without its closing boundary: 400; the complete parts before it are not stored either."""
        server = server_factory()
        body = multipart([ct_instance(), ct_instance()])
        response = post(server, body[: len(body) - 200])
        assert response.status_code == 400
        assert "closing boundary" in response.json()["detail"]
        assert server.db.value("SELECT count(*) FROM instance") == 0
        assert not temp_files(server)

    def test_invalid_study_uid_in_url(self, session_server: LiveServer) -> None:
        """A path-traversal attempt in the URL's StudyInstanceUID: 400 naming it."""
        response = post(session_server, multipart([ct_instance()]), path="/studies/..%2F..%2Fetc")
        assert response.status_code in (400, 404)
        response = post(session_server, multipart([ct_instance()]), path="/studies/1.2.abc")
        assert response.status_code == 400
        assert "StudyInstanceUID" in response.json()["detail"]

    def test_over_size_limit_declared(self, server_factory: Any) -> None:
        """A Content-Length over DICOMWEB_MAX_UPLOAD_MB: 413 before reading the body."""
        server = server_factory(max_upload_mb=1)
        response = post(server, multipart([ct_instance(size=512), ct_instance(size=512)]))
        assert response.status_code == 413
        assert "MiB" in response.json()["detail"]

    def test_over_size_limit_chunked(self, server_factory: Any) -> None:
        """A chunked body that grows past the limit: 413, nothing stored, no temp file left."""
        server = server_factory(max_upload_mb=1)
        body = multipart([ct_instance(size=512), ct_instance(size=512)])
        response = httpx.post(server.dicomweb + "/studies", content=iter([body]), headers=stow_headers(), timeout=60)
        assert response.status_code == 413
        assert server.db.value("SELECT count(*) FROM instance") == 0
        assert not temp_files(server)


class TestRequestLimits:
    """DICOMWEB_MAX_PARTS and DICOMWEB_MAX_PART_HEADER_BYTES over a real socket: the whole request is refused."""

    def test_too_many_parts(self, server_factory: Any) -> None:
        """One part over DICOMWEB_MAX_PARTS, sent chunked part by part: 413 naming the limit, nothing stored."""
        server = server_factory(max_parts=2)
        parts = multipart([ct_instance(), ct_instance(), ct_instance()])
        pieces = [parts[i : i + 1000] for i in range(0, len(parts), 1000)]
        response = httpx.post(server.dicomweb + "/studies", content=iter(pieces), headers=stow_headers(), timeout=60)
        assert response.status_code == 413
        error = response.json()
        assert set(error) == {"status", "error", "detail"} and error["status"] == 413
        assert error["detail"] == "the request has more than 2 parts; send at most 2 per request"
        assert server.db.value("SELECT count(*) FROM instance") == 0
        assert not temp_files(server)
        assert post(server, multipart([ct_instance(), ct_instance()])).status_code == 200

    def test_part_headers_too_large(self, server_factory: Any) -> None:
        """A part with more header bytes than DICOMWEB_MAX_PART_HEADER_BYTES: 400, nothing stored."""
        server = server_factory(max_part_header_bytes=1024)
        body = multipart([ct_instance()], content_type="application/dicom\r\nContent-Description: " + "d" * 2000)
        response = post(server, body)
        assert response.status_code == 400
        assert response.json()["detail"] == "a multipart part has more than 1024 bytes of headers"
        assert server.db.value("SELECT count(*) FROM instance") == 0
        assert not temp_files(server)

    def test_preamble(self, session_server: LiveServer) -> None:
        """A short preamble is ignored (RFC 2046 §5.1.1); a long one is 400."""
        body = multipart([ct_instance()])
        assert post(session_server, b"This is a multi-part message in MIME format.\r\n" + body).status_code == 200
        response = post(session_server, b"x" * 20_000 + b"\r\n" + body)
        assert response.status_code == 400
        assert response.json()["detail"] == "the multipart body has more than 16384 bytes before its first boundary"

    """A client that goes away mid-upload leaves no partial file and no row."""

    def test_disconnect_mid_body(self, server_factory: Any) -> None:
        """Half a declared body, then the socket closes: no rows, no files, no temp files."""
        import time

        server = server_factory()
        body = multipart([ct_instance(size=256), ct_instance(size=256)])
        with partly_sent(server, body, len(body) * 3 // 4):
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while temp_files(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not temp_files(server)
        assert server.db.value("SELECT count(*) FROM instance") == 0
        assert not list((server.data_dir / "files").rglob("*.dcm"))


class TestPlacement:
    """A request's files go into files/ only once its body is complete, right before their commit."""

    def test_no_file_in_place_while_the_body_arrives(self, server_factory: Any) -> None:
        """The first part is received and parsed while the second is still on its way: nothing of the request is in
        files/ yet (so ``dicomweb check`` beside the server can never take it for an orphan); the end of the body
        stores both."""
        import time

        server = server_factory()
        body = multipart([ct_instance(size=256), ct_instance(size=256)])
        with partly_sent(server, body, len(body) * 3 // 4) as sock:
            time.sleep(1.0)  # the first part arrived whole: spooled and parsed
            assert list((server.data_dir / "tmp").glob("*.part"))
            assert not list((server.data_dir / "files").rglob("*.dcm"))
            sock.sendall(body[len(body) * 3 // 4 :])
            answer = sock.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 200"), answer[:200]
        assert len(list((server.data_dir / "files").rglob("*.dcm"))) == 2
        assert server.db.value("SELECT count(*) FROM instance") == 2


class TestConcurrency:
    """Concurrent stores into one new study and series keep one row each and exact counts."""

    def test_eight_clients_same_new_series(self, server_factory: Any) -> None:
        """8 clients at the same moment, 5 instances each: all 200; one patient, study, series; counts 40."""
        server = server_factory()
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        bodies = [multipart([ct_instance(study, series) for _ in range(5)]) for _ in range(8)]
        assert post_together(server, bodies) == [200] * 8
        assert server.db.value("SELECT count(*) FROM patient") == 1
        assert server.db.value("SELECT count(*) FROM study") == 1
        assert server.db.value("SELECT count(*) FROM series") == 1
        assert server.db.value("SELECT number_of_series_related_instances FROM series") == 40
        row = server.db.fetch("SELECT * FROM study")[0]
        assert (row["number_of_study_related_instances"], row["number_of_study_related_series"]) == (40, 1)


class TestStoragePaths:
    """Stored paths never leave the storage folder."""

    @pytest.mark.parametrize("path", ["../etc/passwd", "files/../../x", "/etc/passwd", "files//x", "tmp/x", "files"])
    def test_absolute_refuses_escapes(self, tmp_path: Path, path: str) -> None:
        """A relative path that is not plainly under files/ is refused."""
        from dicomweb.storage import FileStorage

        with pytest.raises(ValueError, match="outside"):
            FileStorage(tmp_path).absolute(path)

    def test_new_path_refuses_invalid_uids(self, tmp_path: Path) -> None:
        """Only valid UIDs become path components."""
        from dicomweb.storage import FileStorage

        storage = FileStorage(tmp_path)
        assert storage.new_path("1.2", "1.3", "1.4").startswith("files/1.2/1.3/1.4.")
        with pytest.raises(ValueError, match="invalid UID"):
            storage.new_path("1.2", "..", "1.4")


class TestBatchRetry:
    """A batch transaction that fails after its files were placed is retried instance by instance."""

    def test_failure_after_placing(self, server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """The first COUNT update fails: every instance is still stored, once, with its file and exact counts."""
        import asyncpg

        from dicomweb.db import index

        original = index.add_counts
        calls = []

        async def failing_once(*args: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise asyncpg.exceptions.SerializationError("simulated failure after the files were placed")
            await original(*args)

        monkeypatch.setattr(index, "add_counts", failing_once)
        server = server_factory()
        study = pydicom.uid.generate_uid()
        response = post(server, multipart([ct_instance(study) for _ in range(3)]))
        assert response.status_code == 200, response.text
        assert len(calls) == 4  # the batch, then each instance alone
        rows = server.db.fetch("SELECT file_path FROM instance")
        assert len(rows) == 3 and all((server.data_dir / r[0]).is_file() for r in rows)
        assert server.db.value("SELECT number_of_study_related_instances FROM study") == 3
        assert len(list((server.data_dir / "files").rglob("*.dcm"))) == 3
        assert not temp_files(server)


class TestTempSweep:
    """Start-up sweeps crash leftovers from tmp/, never a file another worker is writing."""

    def test_sweep_keeps_recent_files(self, tmp_path: Path) -> None:
        """An old .part file goes; a fresh one (an upload in flight in another worker) stays."""
        import os
        import time

        from dicomweb.storage import STALE_TEMP_SECONDS, FileStorage

        storage = FileStorage(tmp_path)
        storage.prepare()
        old, fresh = storage.tmp / "old.part", storage.tmp / "fresh.part"
        old.write_bytes(b"x")
        fresh.write_bytes(b"y")
        past = time.time() - STALE_TEMP_SECONDS - 60
        os.utime(old, (past, past))
        storage.prepare()
        assert not old.exists() and fresh.exists()
