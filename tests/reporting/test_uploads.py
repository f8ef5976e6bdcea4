"""reporting/uploads.py and images.py: DICOM files and JPEG/PNG pictures uploaded into workflow studies, seen through
DICOMweb, and the stored file of an image."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from requests_toolbelt.multipart.decoder import MultipartDecoder

from dicomweb.permissions import Role

from ..conftest import LiveServer
from ..data import ct_instance, multipart, stow_headers
from .conftest import Api, new_study

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DICOM_PARTS = 'multipart/related; type="application/dicom"'


def picture(format: str, mode: str = "RGB", size: tuple[int, int] = (48, 32)) -> tuple[bytes, np.ndarray]:
    """An encoded picture and the pixels it decodes to."""
    columns, rows = size
    values = (np.arange(rows * columns).reshape(rows, columns) * 5) % 256
    array = np.stack([values, 255 - values, values // 2], axis=-1) if mode == "RGB" else values
    image = Image.fromarray(array.astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format)
    data = buffer.getvalue()
    return data, np.asarray(Image.open(io.BytesIO(data)))


def upload(
    client: httpx.Client, path: str, data: bytes, content_type: str = "application/octet-stream", **fields: Any
) -> httpx.Response:
    form = {name: str(value) for name, value in fields.items()}
    return client.post(path, files={"file": ("upload.bin", data, content_type)}, data=form)


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    image: dict[str, Any] = response.json()["image"]
    return image


def assert_error(response: httpx.Response, status: int, detail: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and detail in body["detail"], body
    return body


def retrieve(api: Api, image: dict[str, Any]) -> pydicom.Dataset:
    """The instance through WADO-RS (PS3.18 §10.4), as a multipart/related application/dicom part."""
    path = f"/studies/{image['studyInstanceUID']}/series/{image['seriesInstanceUID']}/instances/{image['id']}"
    with api.dicomweb() as client:
        response = client.get(path, headers={"accept": DICOM_PARTS})
    assert response.status_code == 200, response.text
    parts = MultipartDecoder(response.content, response.headers["content-type"]).parts
    assert len(parts) == 1
    return pydicom.dcmread(io.BytesIO(parts[0].content))


def stored_count(api: Api, study: dict[str, Any], admin: httpx.Client) -> int:
    count: int = admin.get(f"/studies/{study['id']}").json()["numberOfImages"]
    return count


def no_temp_files(server: LiveServer) -> bool:
    return not list((server.data_dir / "tmp").glob("*.part"))


@pytest.fixture(scope="module")
def tech(api: Api) -> Iterator[httpx.Client]:
    with api.client(Role.RADIOLOGY_TECH, "tech-1") as client:
        yield client


class TestPictures:
    """JPEG and PNG pictures become Secondary Capture instances of the study, visible through DICOMweb."""

    def test_png_into_study_then_wado(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """The converted instance has the study's patient and UIDs, and every pixel of the PNG; the scheduled study
        is in progress once it arrives."""
        study = new_study(admin, patientId="P-PNG", patientName="Doe^John", studyDescription="Wound photo")
        assert study["status"] == "scheduled"
        data, pixels = picture("PNG")
        response = upload(tech, f"/studies/{study['id']}/upload", data, "image/png")
        image = created(response)
        assert response.json()["convertedFrom"] == "image/png"
        assert image["sopClassUID"] == SECONDARY_CAPTURE and image["studyInstanceUID"] == study["studyInstanceUID"]
        assert (image["instanceNumber"], image["rows"], image["columns"]) == (1, 32, 48)
        assert image["transferSyntaxUID"] == pydicom.uid.ExplicitVRLittleEndian
        ds = retrieve(api, image)
        assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.SOPInstanceUID == image["id"]
        assert image["id"].startswith("2.25.")
        assert (ds.PatientID, ds.PatientName, ds.AccessionNumber) == ("P-PNG", "Doe^John", study["accessionNumber"])
        assert (ds.StudyDescription, ds.ConversionType, ds.Modality) == ("Wound photo", "WSD", "OT")
        np.testing.assert_array_equal(ds.pixel_array, pixels)
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "in_progress"

    def test_jpeg_into_announced_series(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """A JPEG sent to an announced series takes its UID, number and modality, and the next instance numbers
        unless instanceNumber says; the metadata shows it as a Secondary Capture."""
        study = new_study(admin, modality="US")
        series = admin.post(f"/studies/{study['id']}/series", json={"seriesNumber": 5, "seriesDescription": "Cam"})
        uid = series.json()["seriesInstanceUID"]
        data, pixels = picture("JPEG")
        first = created(upload(tech, f"/series/{uid}/images", data, "image/jpeg"))
        second = created(upload(tech, f"/series/{uid}/images", data))
        third = created(upload(tech, f"/series/{uid}/images", data, instanceNumber=40))
        fourth = created(upload(tech, f"/series/{uid}/images", data))
        assert [i["instanceNumber"] for i in (first, second, third, fourth)] == [1, 2, 40, 41]
        assert {i["seriesInstanceUID"] for i in (first, second)} == {uid} and first["seriesNumber"] == 5
        ds = retrieve(api, first)
        assert (ds.Modality, ds.SeriesNumber, ds.SeriesDescription) == ("US", 5, "Cam")
        assert ds.LossyImageCompression == "01"
        np.testing.assert_array_equal(ds.pixel_array, pixels)
        with api.dicomweb() as client:
            metadata = client.get(first["links"]["metadata"]).json()[0]
        assert metadata["00080016"]["Value"] == [SECONDARY_CAPTURE]
        assert metadata["00100020"]["Value"] == ["P-1"]

    def test_default_and_numbered_series(self, tech: httpx.Client, admin: httpx.Client) -> None:
        """Pictures without seriesNumber share one 'Uploaded pictures' series; a new seriesNumber announces a series,
        a known one is reused."""
        study = new_study(admin)
        png, _ = picture("PNG", "L")
        one = created(upload(tech, f"/studies/{study['id']}/upload", png))
        two = created(upload(tech, f"/studies/{study['id']}/upload", png))
        assert one["seriesInstanceUID"] == two["seriesInstanceUID"] and one["seriesNumber"] == 1
        assert [one["instanceNumber"], two["instanceNumber"]] == [1, 2]
        seven = created(upload(tech, f"/studies/{study['id']}/upload", png, seriesNumber=7, instanceNumber=3))
        again = created(upload(tech, f"/studies/{study['id']}/upload", png, seriesNumber=7))
        assert seven["seriesInstanceUID"] == again["seriesInstanceUID"] != one["seriesInstanceUID"]
        assert (seven["seriesNumber"], seven["instanceNumber"], again["instanceNumber"]) == (7, 3, 4)
        detail = admin.get(f"/studies/{study['id']}").json()
        assert [(s["seriesNumber"], s["numberOfImages"]) for s in detail["series"]] == [(1, 2), (7, 2)]
        assert detail["series"][0]["seriesDescription"] == "Uploaded pictures"
        assert [i["id"] for i in admin.get(f"/studies/{study['id']}/images").json()] == [
            one["id"],
            two["id"],
            seven["id"],
            again["id"],
        ]

    def test_patient_from_the_archive(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """When the archive holds images of the study, the picture carries the archive's patient (same PatientID,
        birth date and sex as the modality's images), not the order's."""
        uid = f"2.25.{uuid.uuid4().int}"
        with api.dicomweb() as client:
            stowed = client.post(
                "/studies", content=multipart([ct_instance(uid, patient_id="PAT-9")]), headers=stow_headers()
            )
        assert stowed.status_code == 200, stowed.text
        study = new_study(admin, studyInstanceUID=uid, patientId="ERP-9", patientName="Other^Name")
        ds = retrieve(api, created(upload(tech, f"/studies/{study['id']}/upload", picture("PNG")[0])))
        assert (ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex) == (
            "PAT-9",
            "Doe^Jane",
            "19700101",
            "F",
        )

    def test_not_a_picture(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """Neither DICOM nor JPEG/PNG is 415 naming what is accepted, whatever the Content-Type claims; a broken
        picture is 400; nothing is stored either way."""
        study = new_study(admin)
        path = f"/studies/{study['id']}/upload"
        gif = io.BytesIO()
        Image.new("L", (4, 4)).save(gif, "GIF")
        for data, content_type in [(b"hello", "image/png"), (gif.getvalue(), "image/gif"), (b"", "image/jpeg")]:
            assert_error(upload(tech, path, data, content_type), 415, "JPEG (image/jpeg) or a PNG (image/png)")
        assert_error(upload(tech, path, picture("PNG")[0][:-100]), 400, "cannot be decoded")
        assert_error(upload(tech, path, b"\xff\xd8\xff" + bytes(1000)), 400, "cannot be decoded")
        assert stored_count(api, study, admin) == 0 and no_temp_files(api.server)
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "scheduled"


class TestDicom:
    """DICOM files are stored as STOW-RS stores them, if they belong to the study (and series)."""

    def test_into_study_and_series_then_file(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """Both endpoints store the file unchanged (not converted); the file endpoint returns its exact bytes."""
        study = new_study(admin)
        uid = study["studyInstanceUID"]
        data = ct_instance(uid)
        response = upload(tech, f"/studies/{study['id']}/upload", data, "application/dicom", seriesNumber=9)
        image = created(response)
        assert response.json()["convertedFrom"] is None and image["sopClassUID"] == pydicom.uid.CTImageStorage
        assert image["seriesNumber"] == 1  # the file's own
        series = image["seriesInstanceUID"]
        second = created(upload(tech, f"/series/{series}/images", ct_instance(uid, series)))
        assert second["seriesInstanceUID"] == series
        file = tech.get(f"/images/{image['id']}/file")
        assert file.status_code == 200 and file.content == data
        assert file.headers["content-type"] == "application/dicom"
        assert file.headers["content-disposition"] == f'attachment; filename="{image["id"]}.dcm"'
        assert image["links"]["file"].endswith(f"/api/radiology/images/{image['id']}/file")
        assert admin.get(f"/studies/{study['id']}").json()["status"] == "in_progress"

    def test_same_file_twice(self, tech: httpx.Client, admin: httpx.Client) -> None:
        """The identical file again is a success with nothing new (200); other content under its UID is 409."""
        study = new_study(admin)
        data = ct_instance(study["studyInstanceUID"])
        first = created(upload(tech, f"/studies/{study['id']}/upload", data))
        again = upload(tech, f"/studies/{study['id']}/upload", data)
        assert again.status_code == 200 and again.json()["image"]["id"] == first["id"]
        sop, series = first["id"], first["seriesInstanceUID"]
        other = ct_instance(study["studyInstanceUID"], series, sop_instance_uid=sop, PatientSex="M")
        assert_error(upload(tech, f"/studies/{study['id']}/upload", other), 409, "already stored")

    def test_uid_mismatch_refused(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """A file of another study, or of another series sent to a series, is 409 and nothing is stored."""
        study = new_study(admin)
        stranger = ct_instance()
        assert_error(upload(tech, f"/studies/{study['id']}/upload", stranger), 409, "StudyInstanceUID")
        announced = admin.post(f"/studies/{study['id']}/series", json={}).json()["seriesInstanceUID"]
        elsewhere = ct_instance(study["studyInstanceUID"])
        assert_error(upload(tech, f"/series/{announced}/images", elsewhere), 409, "SeriesInstanceUID")
        assert_error(upload(tech, f"/series/{announced}/images", stranger), 409, "StudyInstanceUID")
        assert stored_count(api, study, admin) == 0 and no_temp_files(api.server)
        for data in (stranger, elsewhere):
            sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
            assert_error(tech.get(f"/images/{sop}/file"), 404)

    def test_broken_dicom(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """A cut-off DICOM file is 400 with the reader's reason; so is one without preamble sent as DICOM."""
        study = new_study(admin)
        data = ct_instance(study["studyInstanceUID"])
        assert_error(upload(tech, f"/studies/{study['id']}/upload", data[:-1000]), 400, "cut short")
        assert_error(upload(tech, f"/studies/{study['id']}/upload", data[132:], "application/dicom"), 400)
        assert stored_count(api, study, admin) == 0 and no_temp_files(api.server)


class TestRequests:
    """The form, the targets, the permissions and the size limit."""

    def test_unknown_targets(self, tech: httpx.Client) -> None:
        """Unknown series or study (or a malformed study id), unknown image file: 404."""
        data = picture("PNG")[0]
        assert_error(upload(tech, f"/series/2.25.{uuid.uuid4().int}/images", data), 404, "announce it")
        assert_error(upload(tech, f"/studies/{uuid.uuid4()}/upload", data), 404)
        assert_error(upload(tech, "/studies/not-a-uuid/upload", data), 404)
        assert_error(tech.get("/images/1.2.3.4/file"), 404)

    def test_archive_series_outside_the_workflow(self, api: Api, tech: httpx.Client) -> None:
        """A series the archive holds for no workflow study is not a target."""
        data = ct_instance()
        with api.dicomweb() as client:
            assert client.post("/studies", content=multipart([data]), headers=stow_headers()).status_code == 200
        series = pydicom.dcmread(io.BytesIO(data)).SeriesInstanceUID
        assert_error(upload(tech, f"/series/{series}/images", picture("PNG")[0]), 404)

    def test_form_errors(self, api: Api, tech: httpx.Client, admin: httpx.Client) -> None:
        """Unknown or invalid fields are listed; no file, two files, or another media type are refused."""
        study = new_study(admin)
        path = f"/studies/{study['id']}/upload"
        data = picture("PNG")[0]
        error = assert_error(upload(tech, path, data, instanceNumber="x", colour="red", seriesNumber=-1), 400)
        assert {e["field"] for e in error["errors"]} == {"instanceNumber", "colour", "seriesNumber"}
        series = admin.post(f"/studies/{study['id']}/series", json={}).json()["seriesInstanceUID"]
        error = assert_error(upload(tech, f"/series/{series}/images", data, seriesNumber=1), 400)
        assert [e["field"] for e in error["errors"]] == ["seriesNumber"]
        assert_error(tech.post(path, data={"seriesNumber": "1"}, files={"other": ("a", b"x")}), 400, "no file field")
        two = [("file", ("a.png", data, "image/png")), ("file", ("b.png", data, "image/png"))]
        assert_error(tech.post(path, files=two), 400, "one file")
        assert_error(upload(tech, path, data, seriesNumber="1" * 2000), 400, "longer than")
        latin: list[tuple[str, Any]] = [("file", ("a.png", data, "image/png")), ("seriesNumber", (None, b"\xff\xfe"))]
        assert_error(tech.post(path, files=latin), 400, "UTF-8")
        assert_error(tech.post(path, content=data, headers={"content-type": "image/png"}), 415, "multipart/form-data")
        assert_error(tech.post(path, json={"file": "x"}), 415)
        assert stored_count(api, study, admin) == 0 and no_temp_files(api.server)

    def test_permissions(self, api: Api, admin: httpx.Client) -> None:
        """Uploading needs radiology:upload (not a radiologist's or a doctor's); a doctor reads the file."""
        study = new_study(admin)
        image = created(upload(admin, f"/studies/{study['id']}/upload", ct_instance(study["studyInstanceUID"])))
        for role in (Role.DOCTOR, Role.RADIOLOGIST):
            with api.client(role, "someone") as client:
                assert_error(upload(client, f"/studies/{study['id']}/upload", picture("PNG")[0]), 403, "upload")
        with api.client(Role.DOCTOR, "dr-d") as doctor:
            assert doctor.get(f"/images/{image['id']}/file").status_code == 200

    def test_size_limit(self, server_factory: Any) -> None:
        """Over DICOMWEB_MAX_UPLOAD_MB: 413 from Content-Length, and while reading a body without one."""
        server: LiveServer = server_factory(max_upload_mb=1)
        big = bytes(1024 * 1024)
        with httpx.Client(base_url=server.url + "/api/radiology", timeout=60) as client:
            study = new_study(client)
            path = f"/studies/{study['id']}/upload"
            assert_error(upload(client, path, big), 413, "1 MiB")
            boundary = "upload-test"
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'.encode()

            def chunks() -> Iterator[bytes]:
                yield head
                for _ in range(20):
                    yield bytes(64 * 1024)
                yield f"\r\n--{boundary}--\r\n".encode()

            headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
            assert_error(client.post(path, content=chunks(), headers=headers), 413, "1 MiB")
            small = created(upload(client, path, picture("PNG")[0]))
            assert small["sopClassUID"] == SECONDARY_CAPTURE
        assert no_temp_files(server)
