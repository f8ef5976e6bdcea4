"""The whole IHE Scheduled Workflow loop, as a hospital runs it (README "DICOM networking"): an order scheduled over
the JSON API reaches the modality's worklist, the modality's MPPS moves it in progress, its images arrive by C-STORE
with the worklist's identifiers, MPPS COMPLETED completes it, storage commitment vouches for the images, and a
verified report makes it reported."""

from __future__ import annotations

import datetime
import io
from typing import Any

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
)

from .conftest import LiveServer, free_port
from .data import ct_instance
from .test_commitment import INSTANCE, Reports, request
from .test_dimse import register
from .test_mpps import ended, in_progress, series
from .test_worklist import query


def test_schedule_worklist_mpps_store_commit_report(server_factory: Any) -> None:
    server: LiveServer = server_factory(dimse_port=free_port())
    register(server, "CT1", "127.0.0.1", 104, ["store", "worklist", "mpps", "commit"])
    today = datetime.datetime.now(datetime.UTC).date()  # DICOMWEB_TIMEZONE is UTC here
    client = server.client()
    order = client.post(
        "/api/radiology/studies",
        json={"patientId": "P-77", "patientName": "Doe^Jane", "modality": "CT", "scheduledStationAETitle": "CT1",
              "scheduledAt": f"{today.isoformat()}T10:00:00Z", "requestedProcedureDescription": "CT chest"},
    ).json()  # fmt: skip
    study_url = f"/api/radiology/studies/{order['id']}"

    ae = AE(ae_title="CT1")
    for context in (ModalityWorklistInformationFind, ModalityPerformedProcedureStep, StorageCommitmentPushModel):
        ae.add_requested_context(context)
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    reports = Reports()
    assoc = ae.associate("127.0.0.1", server.settings.dimse_port, ae_title="DICOMWEB",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])  # fmt: skip
    assert assoc.is_established
    try:
        # The worklist, by the modality's station and today.
        items = [
            item
            for status, item in assoc.send_c_find(
                query(ScheduledStationAETitle="CT1", ScheduledProcedureStepStartDate=today.strftime("%Y%m%d")),
                ModalityWorklistInformationFind,
            )
            if status.Status in (0xFF00, 0xFF01)
        ]
        [item] = items
        assert item is not None and item.AccessionNumber == order["accessionNumber"]
        study_uid, accession = str(item.StudyInstanceUID), str(item.AccessionNumber)

        # MPPS IN PROGRESS.
        mpps_uid = pydicom.uid.generate_uid()
        status, _ = assoc.send_n_create(
            in_progress({"StudyInstanceUID": study_uid, "AccessionNumber": accession}),
            ModalityPerformedProcedureStep,
            mpps_uid,
        )
        assert status.Status == 0x0000
        assert client.get(study_url).json()["status"] == "in_progress"

        # The images, with the worklist's identifiers.
        series_uid = str(pydicom.uid.generate_uid())
        sent = []
        for number in range(3):
            ds = pydicom.dcmread(
                io.BytesIO(ct_instance(study_uid, series_uid, patient_id="P-77", InstanceNumber=number))
            )
            ds.AccessionNumber = accession
            assert assoc.send_c_store(ds).Status == 0x0000
            sent.append(str(ds.SOPInstanceUID))

        # MPPS COMPLETED with the series it made.
        changes = ended("COMPLETED", PerformedSeriesSequence=[series(series_uid, sent)])
        status, _ = assoc.send_n_set(changes, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0x0000
        shown = client.get(study_url).json()
        assert shown["status"] == "completed" and shown["numberOfImages"] == 3
        assert shown["performedProcedureSteps"][0]["performedSeries"][0]["complete"] is True

        # Storage commitment: all committed, on this association.
        status, _ = assoc.send_n_action(request("2.25.77", sent), 1, StorageCommitmentPushModel, INSTANCE)
        assert status.Status == 0x0000
        event_type, report = reports.one()
        assert event_type == 1 and [str(i.ReferencedSOPInstanceUID) for i in report.ReferencedSOPSequence] == sent
    finally:
        assoc.release()

    # The radiologist's report, verified: the order is reported.
    written = client.post(f"{study_url}/report", json={"findings": "No acute findings.", "impression": "Normal."})
    assert written.status_code == 201, written.text
    verified = client.post(f"/api/radiology/reports/{written.json()['id']}/verify")
    assert verified.status_code == 200, verified.text
    assert client.get(study_url).json()["status"] == "reported"
    client.close()
