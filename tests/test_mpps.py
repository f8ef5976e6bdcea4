"""Modality Performed Procedure Step (dicomweb/dimse/mpps.py): real N-CREATE and N-SET from a pynetdicom SCU move the
order they perform through its status, keep what the modality reports, refuse what PS3.4 Annex F forbids."""

from __future__ import annotations

from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from .conftest import LiveServer, free_port
from .data import ct_instance, multipart, stow_headers
from .test_dimse import register


@pytest.fixture
def server(server_factory: Any) -> LiveServer:
    live: LiveServer = server_factory(dimse_port=free_port())
    register(live, "MODALITY1", "127.0.0.1", 104, ["store", "worklist", "mpps"])
    register(live, "VIEWER", "127.0.0.1", 104, ["find"])
    return live


def schedule(server: LiveServer, **fields: Any) -> dict[str, Any]:
    with server.client() as client:
        response = client.post("/api/radiology/studies", json={"patientId": "P-1", "modality": "CT", **fields})
    assert response.status_code == 201, response.text
    study: dict[str, Any] = response.json()
    return study


def detail(server: LiveServer, study: dict[str, Any]) -> dict[str, Any]:
    with server.client() as client:
        found: dict[str, Any] = client.get(f"/api/radiology/studies/{study['id']}").json()
    return found


def in_progress(scheduled: dict[str, str], status: str = "IN PROGRESS") -> Dataset:
    """An N-CREATE attribute list as a CT sends it (PS3.4 Table F.7.2-1, abridged)."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedStationAETitle = "MODALITY1"
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedProcedureStepStartDate = "20261206"
    ds.PerformedProcedureStepStartTime = "093100"
    ds.PerformedProcedureStepDescription = "CT head"
    ds.PatientID = "P-1"
    ds.Modality = "CT"
    step = Dataset()
    for keyword, value in scheduled.items():
        setattr(step, keyword, value)
    ds.ScheduledStepAttributesSequence = [step]
    ds.PerformedSeriesSequence = []
    return ds


def series(uid: str, images: list[str]) -> Dataset:
    item = Dataset()
    item.SeriesInstanceUID = uid
    item.SeriesDescription = "Head 1mm"
    refs = []
    for sop in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ref.ReferencedSOPInstanceUID = sop
        refs.append(ref)
    item.ReferencedImageSequence = refs
    return item


class Modality:
    """One association of MODALITY1 (or another calling AE title) for MPPS."""

    def __init__(self, server: LiveServer, calling: str = "MODALITY1") -> None:
        ae = AE(ae_title=calling)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        self.assoc = ae.associate("127.0.0.1", server.settings.dimse_port, ae_title="DICOMWEB")
        assert self.assoc.is_established

    def create(self, attributes: Dataset, uid: str | None = None) -> tuple[int, str | None]:
        status, _ = self.assoc.send_n_create(attributes, ModalityPerformedProcedureStep, uid)
        return int(status.Status), uid

    def set(self, uid: str, changes: Dataset) -> int:
        status, _ = self.assoc.send_n_set(changes, ModalityPerformedProcedureStep, uid)
        return int(status.Status)

    def close(self) -> None:
        self.assoc.release()


def ended(status: str, **more: Any) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261206"
    ds.PerformedProcedureStepEndTime = "094500"
    for keyword, value in more.items():
        setattr(ds, keyword, value)
    return ds


class TestLifecycle:
    def test_in_progress_then_completed_with_its_series(self, server: LiveServer) -> None:
        """N-CREATE moves the order in progress; N-SET lists a series, COMPLETED completes the order; the API
        shows the step and whether its series has arrived in full; a further N-SET is refused, nothing changed."""
        study = schedule(server)
        series_uid = pydicom.uid.generate_uid()
        sops = [str(pydicom.uid.generate_uid()) for _ in range(2)]
        modality = Modality(server)
        uid = pydicom.uid.generate_uid()
        try:
            assert modality.create(in_progress({"StudyInstanceUID": study["studyInstanceUID"]}), uid)[0] == 0x0000
            assert detail(server, study)["status"] == "in_progress"
            assert modality.set(uid, ended("IN PROGRESS", PerformedSeriesSequence=[series(series_uid, sops)])) == 0
            assert modality.set(uid, ended("COMPLETED")) == 0x0000
            assert modality.set(uid, ended("DISCONTINUED")) == 0x0110  # a step that ended is not changed
        finally:
            modality.close()
        shown = detail(server, study)
        assert shown["status"] == "completed"
        [step] = shown["performedProcedureSteps"]
        assert (step["sopInstanceUID"], step["status"], step["stationAETitle"]) == (uid, "COMPLETED", "MODALITY1")
        assert (step["startDate"], step["startTime"], step["endTime"]) == ("2026-12-06", "09:31:00", "09:45:00")
        [performed] = step["performedSeries"]
        assert (performed["images"], performed["storedImages"], performed["complete"]) == (2, 0, False)
        parts = [ct_instance(study["studyInstanceUID"], series_uid, sop_instance_uid=sop) for sop in sops]
        with server.client() as client:
            stored = client.post("/dicomweb/studies", content=multipart(parts), headers=stow_headers())
        assert stored.status_code == 200, stored.text
        [performed] = detail(server, study)["performedProcedureSteps"][0]["performedSeries"]
        assert (performed["storedImages"], performed["complete"]) == (2, True)

    def test_discontinued_puts_the_order_back(self, server: LiveServer) -> None:
        study = schedule(server)
        modality = Modality(server)
        uid = pydicom.uid.generate_uid()
        reason = Dataset()
        reason.CodeValue, reason.CodingSchemeDesignator, reason.CodeMeaning = (
            "110514",
            "DCM",
            "Incorrect worklist entry",
        )
        try:
            assert modality.create(in_progress({"AccessionNumber": study["accessionNumber"]}), uid)[0] == 0
            assert detail(server, study)["status"] == "in_progress"  # found by its accession number
            changes = ended("DISCONTINUED", PerformedProcedureStepDiscontinuationReasonCodeSequence=[reason])
            assert modality.set(uid, changes) == 0x0000
        finally:
            modality.close()
        shown = detail(server, study)
        assert shown["status"] == "scheduled"
        assert shown["performedProcedureSteps"][0]["discontinuationReason"] == "Incorrect worklist entry"

    def test_unscheduled_is_kept(self, server: LiveServer) -> None:
        """An MPPS that names no order the archive knows is kept as an unscheduled procedure."""
        modality = Modality(server)
        uid = pydicom.uid.generate_uid()
        try:
            assert modality.create(in_progress({"AccessionNumber": "NOT-ORDERED"}), uid)[0] == 0x0000
            assert modality.set(uid, ended("COMPLETED")) == 0x0000
        finally:
            modality.close()
        [row] = server.db.fetch("SELECT study_id, status, accession_number FROM performed_procedure_step")
        assert tuple(row) == (None, "COMPLETED", "NOT-ORDERED")
        study = schedule(server)
        scheduled = Modality(server)
        try:
            assert scheduled.create(in_progress({"StudyInstanceUID": study["studyInstanceUID"]}), "2.25.9")[0] == 0
        finally:
            scheduled.close()
        with server.client() as client:
            listed = client.get("/api/radiology/performed-procedure-steps", params={"unscheduled": "true"}).json()
            everything = client.get("/api/radiology/performed-procedure-steps").json()
        [unscheduled] = listed["items"]
        assert (unscheduled["sopInstanceUID"], unscheduled["studyId"], unscheduled["accessionNumber"]) == (
            uid,
            None,
            "NOT-ORDERED",
        )
        assert listed["total"] == 1 and everything["total"] == 2
        assert everything["items"][0]["studyId"] == study["id"]  # newest first

    def test_the_archive_makes_the_uid_when_the_modality_does_not(self, server: LiveServer) -> None:
        modality = Modality(server)
        try:
            status, _ = modality.assoc.send_n_create(in_progress({}), ModalityPerformedProcedureStep, None)
        finally:
            modality.close()
        assert status.Status == 0x0000
        [row] = server.db.fetch("SELECT sop_instance_uid FROM performed_procedure_step")
        assert row["sop_instance_uid"].startswith("2.25.")


class TestRefused:
    def test_each_refusal_with_its_status(self, server: LiveServer) -> None:
        modality = Modality(server)
        uid = pydicom.uid.generate_uid()
        missing = in_progress({})
        del missing.PerformedProcedureStepStatus
        try:
            assert modality.create(in_progress({}, status="COMPLETED"), uid)[0] == 0x0106  # not IN PROGRESS
            assert modality.create(missing, uid)[0] == 0x0120
            assert modality.set(uid, ended("COMPLETED")) == 0x0112  # no such MPPS yet
            assert modality.create(in_progress({}), uid)[0] == 0x0000
            assert modality.create(in_progress({}), uid)[0] == 0x0111  # duplicate
            assert modality.set(uid, ended("DONE")) == 0x0106
        finally:
            modality.close()

    def test_a_node_without_the_mpps_permission(self, server: LiveServer) -> None:
        study = schedule(server)
        viewer = Modality(server, calling="VIEWER")
        try:
            assert viewer.create(in_progress({"StudyInstanceUID": study["studyInstanceUID"]}))[0] == 0x0124
        finally:
            viewer.close()
        assert detail(server, study)["status"] == "scheduled"
