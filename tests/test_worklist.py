"""The Modality Worklist (dicomweb/dimse/worklist.py, db/worklist.py): orders scheduled through the reporting API
found by real associations, pynetdicom's and DCMTK's ``findscu -W``, by every matching key."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from .conftest import LiveServer, free_port
from .test_dimse import dcmtk, register

STATION = "CT_ROOM_2"


@pytest.fixture
def server(server_factory: Any) -> LiveServer:
    """A server with MODALITY1 registered as a node that may query the worklist, and four orders: two on CT_ROOM_2
    (one today at 09:30, one tomorrow), one on another station, and one completed."""
    live: LiveServer = server_factory(dimse_port=free_port())
    register(live, "MODALITY1", "127.0.0.1", 104, ["worklist"])
    register(live, "ARCHIVE2", "127.0.0.1", 104, ["find"])
    with live.client() as client:
        for order in ORDERS:
            response = client.post("/api/radiology/studies", json=order)
            assert response.status_code == 201, response.text
            if order["patientId"] == "P-DONE":
                study_id = response.json()["id"]
                for status in ("in_progress", "completed"):
                    changed = client.put(f"/api/radiology/studies/{study_id}/status", json={"status": status})
                    assert changed.status_code == 200, changed.text
    return live


ORDERS: list[dict[str, Any]] = [
    {
        "patientId": "P-1",
        "patientName": "Müller^Anna",
        "patientBirthDate": "1970-02-03",
        "patientSex": "F",
        "modality": "CT",
        "accessionNumber": "ACC-1",
        "scheduledAt": "2026-12-06T09:30:00Z",
        "scheduledStationAETitle": STATION,
        "scheduledStationName": "CT2",
        "scheduledPerformingPhysician": "Doe^Jane",
        "referringPhysician": "Smith^John",
        "requestedProcedureId": "RP-1",
        "requestedProcedureDescription": "CT head",
        "requestedProcedureCode": {"codeValue": "24725-4", "codingSchemeDesignator": "LN", "codeMeaning": "CT Head"},
        "scheduledProcedureStepId": "SPS-1",
        "scheduledProcedureStepDescription": "Head, axial",
        "priority": "STAT",
    },
    {
        "patientId": "P-2",
        "patientName": "Meyer^Bernd",
        "modality": "CT",
        "accessionNumber": "ACC-2",
        "scheduledAt": "2026-12-07T14:00:00Z",
        "scheduledStationAETitle": STATION,
    },
    {
        "patientId": "P-3",
        "patientName": "Moser^Carla",
        "modality": "MR",
        "accessionNumber": "ACC-3",
        "scheduledAt": "2026-12-06T11:00:00Z",
        "scheduledStationAETitle": "MR_ROOM_1",
    },
    {
        "patientId": "P-DONE",
        "patientName": "Done^Dora",
        "modality": "CT",
        "accessionNumber": "ACC-4",
        "scheduledAt": "2026-12-06T08:00:00Z",
        "scheduledStationAETitle": STATION,
    },
]


TOP_KEYS = ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID",
            "ReferringPhysicianName", "PatientBirthDate", "PatientSex", "RequestedProcedureDescription")  # fmt: skip
STEP_KEYS = ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
             "Modality", "ScheduledPerformingPhysicianName", "ScheduledProcedureStepID")  # fmt: skip


def query(**step: Any) -> Dataset:
    """A worklist identifier: the step's keys in the Scheduled Procedure Step Sequence, top-level keys given as
    ``top_<Keyword>``; every other key of Table K.6-1 a modality typically asks for is an empty return key."""
    identifier = Dataset()
    for keyword in TOP_KEYS:
        setattr(identifier, keyword, step.pop(f"top_{keyword}", ""))
    item = Dataset()
    for keyword in STEP_KEYS:
        setattr(item, keyword, step.pop(keyword, ""))
    assert not step, step
    identifier.ScheduledProcedureStepSequence = [item]
    return identifier


def worklist(server: LiveServer, identifier: Dataset, calling: str = "MODALITY1") -> tuple[int, list[Dataset]]:
    """The final status and the items of one MWL C-FIND."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.settings.dimse_port, ae_title="DICOMWEB")
    assert assoc.is_established
    items: list[Dataset] = []
    final = None
    try:
        for status, item in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
            if status.Status in (0xFF00, 0xFF01):
                assert item is not None
                items.append(item)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    assert final is not None
    return final, items


def accessions(server: LiveServer, identifier: Dataset) -> list[str]:
    status, items = worklist(server, identifier)
    assert status == 0x0000
    return [str(item.AccessionNumber) for item in items]


class TestMatching:
    def test_station_and_date_the_modality_asks_for(self, server: LiveServer) -> None:
        """By station AE title and day: today's item of this station only (not another station's, not the completed
        order's), with everything a modality needs."""
        [item] = worklist(server, query(ScheduledStationAETitle=STATION, ScheduledProcedureStepStartDate="20261206"))[1]
        assert item.AccessionNumber == "ACC-1" and item.PatientID == "P-1"
        assert str(item.PatientName) == "Müller^Anna" and item.SpecificCharacterSet == "ISO_IR 192"
        assert (item.PatientBirthDate, item.PatientSex) == ("19700203", "F")
        assert item.StudyInstanceUID and item.RequestedProcedureID == "RP-1"
        assert item.RequestedProcedureDescription == "CT head" and item.RequestedProcedurePriority == "STAT"
        assert str(item.ReferringPhysicianName) == "Smith^John"
        [code] = item.RequestedProcedureCodeSequence
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("24725-4", "LN", "CT Head")
        [step] = item.ScheduledProcedureStepSequence
        assert (step.ScheduledStationAETitle, step.ScheduledStationName, step.Modality) == (STATION, "CT2", "CT")
        assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20261206", "093000")
        assert str(step.ScheduledPerformingPhysicianName) == "Doe^Jane"
        assert (step.ScheduledProcedureStepID, step.ScheduledProcedureStepStatus) == ("SPS-1", "SCHEDULED")
        assert step.ScheduledProcedureStepDescription == "Head, axial"

    def test_each_key_and_its_negative(self, server: LiveServer) -> None:
        cases: list[tuple[dict[str, Any], list[str]]] = [
            ({}, ["ACC-1", "ACC-3", "ACC-2"]),  # everything scheduled, earliest first; the completed order is not
            ({"ScheduledStationAETitle": STATION}, ["ACC-1", "ACC-2"]),
            ({"ScheduledStationAETitle": "NOWHERE"}, []),
            ({"ScheduledProcedureStepStartDate": "20261207-"}, ["ACC-2"]),
            ({"ScheduledProcedureStepStartDate": "-20261205"}, []),
            ({"ScheduledProcedureStepStartTime": "0900-1030"}, ["ACC-1"]),
            ({"Modality": "MR"}, ["ACC-3"]),
            ({"Modality": "US"}, []),
            ({"ScheduledPerformingPhysicianName": "doe*"}, ["ACC-1"]),
            ({"ScheduledProcedureStepID": "SPS-1"}, ["ACC-1"]),
            ({"top_PatientName": "MULLER*"}, ["ACC-1"]),  # case- and accent-insensitive
            ({"top_PatientName": "M*"}, ["ACC-1", "ACC-3", "ACC-2"]),
            ({"top_PatientName": "Nobody*"}, []),
            ({"top_PatientID": "P-2"}, ["ACC-2"]),
            ({"top_AccessionNumber": "ACC-3"}, ["ACC-3"]),
            ({"top_AccessionNumber": "ACC-4"}, []),  # completed: not on the worklist
            ({"top_RequestedProcedureID": "RP-1"}, ["ACC-1"]),
            ({"top_ReferringPhysicianName": "smith^john"}, ["ACC-1"]),
            ({"top_ReferringPhysicianName": "Jones*"}, []),
        ]
        for keys, expected in cases:
            assert accessions(server, query(**keys)) == expected, keys

    def test_an_invalid_value_is_a_failure(self, server: LiveServer) -> None:
        status, items = worklist(server, query(ScheduledProcedureStepStartDate="2026-12-06"))
        assert status == 0xA900 and items == []

    def test_utf8_declared_for_a_value_inside_a_sequence(self, server: LiveServer) -> None:
        """Only the requested procedure code's meaning needs UTF-8 (a nested value): it is declared all the same."""
        code = {"codeValue": "XC", "codingSchemeDesignator": "LOCAL", "codeMeaning": "Tête, coupes axiales"}
        order = {"patientId": "P-9", "patientName": "Plain^Ascii", "modality": "CT", "accessionNumber": "ACC-9"}
        with server.client() as client:
            response = client.post("/api/radiology/studies", json={**order, "requestedProcedureCode": code})
        assert response.status_code == 201, response.text
        [item] = worklist(server, query(top_AccessionNumber="ACC-9"))[1]
        assert item.SpecificCharacterSet == "ISO_IR 192"
        assert item.RequestedProcedureCodeSequence[0].CodeMeaning == "Tête, coupes axiales"

    def test_started_orders_are_listed_as_started(self, server: LiveServer) -> None:
        with server.client() as client:
            [study] = client.get("/api/radiology/studies", params={"accessionNumber": "ACC-2"}).json()["items"]
            client.put(f"/api/radiology/studies/{study['id']}/status", json={"status": "in_progress"})
        [item] = worklist(server, query(top_AccessionNumber="ACC-2"))[1]
        assert item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"


class TestOwnStation:
    def test_a_query_naming_no_station_gets_the_callers_own(self, server: LiveServer) -> None:
        """A node set to worklistOwnStation that names no station (empty, "*" or no sequence) gets what is
        scheduled on its own AE title; one that names a station gets that station's; other nodes get every
        station's."""
        register(server, STATION, "127.0.0.1", 104, ["worklist"])
        server.db.fetch("UPDATE dicom_node SET worklist_own_station = true WHERE ae_title = $1", STATION)
        no_sequence = query()
        del no_sequence.ScheduledProcedureStepSequence
        for identifier in (query(), query(ScheduledStationAETitle="*"), no_sequence):
            status, items = worklist(server, identifier, calling=STATION)
            assert status == 0 and [str(i.AccessionNumber) for i in items] == ["ACC-1", "ACC-2"]
        items = worklist(server, query(ScheduledStationAETitle="MR_ROOM_1"), calling=STATION)[1]
        assert [str(i.AccessionNumber) for i in items] == ["ACC-3"]
        assert accessions(server, query()) == ["ACC-1", "ACC-3", "ACC-2"]  # MODALITY1 is not set so

    def test_twenty_modalities_at_once(self, server: LiveServer) -> None:
        """20 associations query the worklist at the same time; each gets the whole answer."""
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: accessions(server, query(ScheduledStationAETitle=STATION)), range(20)))
        assert answers == [["ACC-1", "ACC-2"]] * 20


class TestAccess:
    def test_a_node_without_the_worklist_permission_is_refused(self, server: LiveServer) -> None:
        status, items = worklist(server, query(), calling="ARCHIVE2")
        assert status == 0x0124 and items == []

    def test_unknown_callers_only_when_allowed(self, server_factory: Any) -> None:
        for policy, expected in (("store", 0x0124), ("worklist", 0x0000)):
            live = server_factory(dimse_port=free_port(), dimse_unknown=policy)
            assert worklist(live, query(), calling="UNKNOWN9")[0] == expected, policy

    def test_audited(self, server: LiveServer) -> None:
        worklist(server, query(ScheduledStationAETitle=STATION))
        rows = server.db.fetch("SELECT subject, method, action, status, query FROM audit_event WHERE route = 'dimse'")
        [event] = [r for r in rows if r["method"] == "MWL C-FIND"]
        assert (event["subject"], event["action"], event["status"]) == ("MODALITY1", "search", 0)
        assert "matches=2" in event["query"]
        with server.client() as client:
            metrics = client.get("/metrics").text
        assert 'dimse_operations_total{service="MWL C-FIND",status="0x0000"} 1.0' in metrics


class TestDcmtk:
    def test_findscu_worklist(self, server: LiveServer, tmp_path: Path) -> None:
        """DCMTK's ``findscu -W`` (the Modality Worklist model) by station and date, as a modality sends it."""
        keys = ["-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=" + STATION,
                "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261206",
                "-k", "ScheduledProcedureStepSequence[0].Modality", "-k", "PatientName", "-k", "PatientID",
                "-k", "AccessionNumber", "-k", "StudyInstanceUID"]  # fmt: skip
        result = subprocess.run(
            [dcmtk("findscu"), "-W", "-aet", "MODALITY1", "-aec", "DICOMWEB", "-X", "-od", str(tmp_path),
             *keys, "127.0.0.1", str(server.settings.dimse_port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        [answer] = [pydicom.dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
        assert answer.AccessionNumber == "ACC-1" and answer.PatientID == "P-1"
        assert answer.ScheduledProcedureStepSequence[0].Modality == "CT"
