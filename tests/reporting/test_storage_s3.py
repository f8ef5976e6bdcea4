"""The reporting API on an archive whose instances are objects in S3 (DICOMWEB_STORAGE=s3, a real radosgw): an
exported measurement report reads its image's header from the bucket and is stored there; the image's file and the
report's are downloaded from the bucket."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomweb.permissions import Role
from dicomweb.tokens import load_or_create_secret

from ..conftest import shared_server
from ..test_storage_s3 import objects, path_of, s3_settings  # noqa: F401 (s3_settings: a fixture)
from .conftest import Api
from .test_sr_export import SHAPES, annotate, export, stored_file, study_with_image


@pytest.fixture(scope="module")
def api(postgres_url: str, tmp_path_factory: pytest.TempPathFactory, s3_settings: dict[str, Any]) -> Iterator[Api]:  # noqa: F811
    """The reporting API of a server on a bucket of its own."""
    data_dir = tmp_path_factory.mktemp("reporting-s3")
    with shared_server(postgres_url, data_dir, auth="enabled", **s3_settings) as live:
        yield Api(live, load_or_create_secret(data_dir))


def test_export_and_download_on_s3(api: Api, tmp_path: Path) -> None:
    """The image's file comes from its object; the exported SR is an object of the bucket, downloaded whole."""
    with api.client(Role.ADMIN) as admin, api.client(Role.RADIOLOGIST, "dr-s3") as radiologist:
        study, image = study_with_image(api, admin)
        image_file = admin.get(f"/images/{image}/file")
        assert image_file.status_code == 200, image_file.text
        assert pydicom.dcmread(io.BytesIO(image_file.content)).SOPInstanceUID == image
        annotate(radiologist, image, SHAPES["length"])
        body = export(radiologist, study)
        assert body["annotations"] == 1
        path = path_of(api.server, body["sopInstanceUID"])
        assert path in objects(api.server)
        report = pydicom.dcmread(stored_file(radiologist, body["sopInstanceUID"], tmp_path))
        assert report.SOPInstanceUID == body["sopInstanceUID"]
        assert report.PatientID == pydicom.dcmread(io.BytesIO(image_file.content)).PatientID
    assert not (api.server.data_dir / "files").exists()
    assert not list((api.server.data_dir / "tmp").glob("*"))
