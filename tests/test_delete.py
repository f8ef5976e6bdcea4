"""DELETE of instances, series and studies: rows, files and aggregates stay consistent."""

from __future__ import annotations

from typing import Any

import httpx
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from .data import ct_instance, multipart, stow_headers


class TestDelete:
    """DELETE /studies/{S}[/series/{E}[/instances/{I}]]."""

    def test_instance_series_study(self, server_factory: Any) -> None:
        """Each delete answers 204, removes rows and files, keeps the counts exact; a second delete is 404."""
        server = server_factory()
        study, series_a, series_b = str(generate_uid()), str(generate_uid()), str(generate_uid())
        sops = [str(generate_uid()) for _ in range(3)]
        body = multipart(
            [
                ct_instance(study, series_a, sop_instance_uid=sops[0]),
                ct_instance(study, series_a, sop_instance_uid=sops[1]),
                ct_instance(study, series_b, sop_instance_uid=sops[2], Modality="MR"),
            ]
        )
        assert httpx.post(server.dicomweb + "/studies", content=body, headers=stow_headers()).status_code == 200
        client = DICOMwebClient(server.dicomweb)
        files = server.data_dir / "files"

        client.delete_instance(study, series_a, sops[0])
        assert server.db.value("SELECT number_of_study_related_instances FROM study") == 2
        assert (
            server.db.value(
                "SELECT number_of_series_related_instances FROM series WHERE series_instance_uid = $1", series_a
            )
            == 1
        )
        assert len(list(files.rglob("*.dcm"))) == 2

        client.delete_series(study, series_b)
        row = server.db.fetch("SELECT * FROM study")[0]
        assert (row["number_of_study_related_series"], row["number_of_study_related_instances"]) == (1, 1)
        assert row["modalities_in_study"] == ["CT"]
        assert len(list(files.rglob("*.dcm"))) == 1

        response = httpx.delete(f"{server.dicomweb}/studies/{study}")
        assert response.status_code == 204
        for table in ("instance", "series", "study", "patient", "patient_name_suffix"):
            assert server.db.value(f"SELECT count(*) FROM {table}") == 0, table
        assert not list(files.rglob("*.dcm"))

        again = httpx.delete(f"{server.dicomweb}/studies/{study}")
        assert again.status_code == 404 and study in again.json()["detail"]

    def test_other_studies_untouched(self, server_factory: Any) -> None:
        """Deleting one study of a patient keeps the patient's other study and its files."""
        server = server_factory()
        keep, drop = str(generate_uid()), str(generate_uid())
        body = multipart([ct_instance(keep), ct_instance(drop)])
        assert httpx.post(server.dicomweb + "/studies", content=body, headers=stow_headers()).status_code == 200
        assert httpx.delete(f"{server.dicomweb}/studies/{drop}").status_code == 204
        assert [r[0] for r in server.db.fetch("SELECT study_instance_uid FROM study")] == [keep]
        assert server.db.value("SELECT count(*) FROM patient") == 1
        assert len(list((server.data_dir / "files").rglob("*.dcm"))) == 1

    def test_bad_uid(self, session_server: Any) -> None:
        """A UID that is not a UID: 400."""
        assert httpx.delete(f"{session_server.dicomweb}/studies/x.y").status_code == 400
