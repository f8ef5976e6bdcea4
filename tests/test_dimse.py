"""The DIMSE listener (dicomweb/dimse/): real associations on real sockets, from pynetdicom and from DCMTK's tools,
onto the same archive as DICOMweb."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind as PatientRootFind,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind as StudyRootFind,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet as StudyRootGet,
)

from .conftest import LiveServer, free_port, serve_subprocess
from .data import (
    CT,
    DEFLATED,
    JPEG2000,
    JPEG_BASELINE,
    MR_BIG_ENDIAN,
    MULTIFRAME_US,
    SR,
    TEST_FILES,
    ct_instance,
    multipart,
    stow_headers,
)

CALLING = "MODALITY1"
DCMTK = Path("/usr/bin")  # Debian's dcmtk (.ci/run installs it); pynetdicom puts apps of the same names in the venv


def dcmtk(tool: str) -> str:
    return str(DCMTK / tool)


# One SOP Instance UID each (MR_small_RLE.dcm shares MR_small's: the colour RLE file stands in).
FILES = [CT, DEFLATED, JPEG2000, JPEG_BASELINE, MR_BIG_ENDIAN, MULTIFRAME_US, TEST_FILES / "SC_rgb_rle.dcm", SR]


@pytest.fixture
def server(server_factory: Any) -> LiveServer:
    """A server with its DIMSE listener on a free port, AE title DICOMWEB."""
    live: LiveServer = server_factory(dimse_port=free_port())
    return live


def associate(server: LiveServer, contexts: list[tuple[str, str]], called: str = "DICOMWEB") -> Any:
    ae = AE(ae_title=CALLING)
    for abstract_syntax, transfer_syntax in contexts:
        ae.add_requested_context(abstract_syntax, transfer_syntax)
    return ae.associate("127.0.0.1", server.settings.dimse_port, ae_title=called)


def retrieve(server: LiveServer, ds: Dataset) -> pydicom.Dataset:
    url = f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    response = httpx.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert response.status_code == 200, response.text
    return pydicom.dcmread(io.BytesIO(response.content))


class TestEcho:
    """C-ECHO, and who may associate at all."""

    def test_echo(self, server: LiveServer) -> None:
        assoc = associate(server, [(Verification, "1.2.840.10008.1.2")])
        assert assoc.is_established
        try:
            assert assoc.send_c_echo().Status == 0x0000
        finally:
            assoc.release()

    def test_another_called_ae_title_is_rejected(self, server: LiveServer) -> None:
        """A-ASSOCIATE-RJ: called AE title not recognised (PS3.8 §9.3.4, reason 7)."""
        assoc = associate(server, [(Verification, "1.2.840.10008.1.2")], called="ELSEWHERE")
        assert assoc.is_rejected

    @pytest.mark.skipif(not (DCMTK / "echoscu").exists(), reason="DCMTK is installed by .ci/run")
    def test_dcmtk_echoscu(self, server: LiveServer) -> None:
        result = subprocess.run(
            [dcmtk("echoscu"), "-aet", CALLING, "-aec", "DICOMWEB", "127.0.0.1", str(server.settings.dimse_port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


class TestStore:
    """C-STORE: through the same store as STOW-RS, the data set back identical through WADO-RS."""

    def test_pydicom_files_come_back_identical(self, server: LiveServer) -> None:
        """Each file sent in its own transfer syntax is stored as sent; its data set comes back equal, with the
        calling AE title as Source Application Entity Title."""
        datasets = [pydicom.dcmread(path) for path in FILES]
        assoc = associate(server, [(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets])
        assert assoc.is_established
        try:
            for ds in datasets:
                assert assoc.send_c_store(ds).Status == 0x0000, ds.SOPInstanceUID
        finally:
            assoc.release()
        for ds in datasets:
            stored = retrieve(server, ds)
            assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
            assert stored.file_meta.SourceApplicationEntityTitle == CALLING
            assert stored == ds  # every element of the data set, pixel data included

    def test_same_instance_twice_is_a_success_and_stored_once(self, server: LiveServer) -> None:
        ds = pydicom.dcmread(io.BytesIO(ct_instance()))
        assoc = associate(server, [(ds.SOPClassUID, "1.2.840.10008.1.2.1")])
        try:
            assert [assoc.send_c_store(ds).Status for _ in range(2)] == [0x0000, 0x0000]
        finally:
            assoc.release()
        found = httpx.get(f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/instances").json()
        assert len(found) == 1

    def test_broken_pixel_data_is_cannot_understand(self, server: LiveServer) -> None:
        """The store's checks apply: pixel data without Bits Allocated is refused with 0xC000 and a reason."""
        ds = pydicom.dcmread(io.BytesIO(ct_instance()))
        del ds.BitsAllocated
        assoc = associate(server, [(ds.SOPClassUID, "1.2.840.10008.1.2.1")])
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        assert status.Status == 0xC000
        assert "BitsAllocated" in status.ErrorComment

    @pytest.mark.skipif(not (DCMTK / "storescu").exists(), reason="DCMTK is installed by .ci/run")
    def test_dcmtk_storescu(self, server: LiveServer, tmp_path: Path) -> None:
        """DCMTK's storescu sends a folder; every file is then found by QIDO-RS and audited with the AE title."""
        folder = tmp_path / "send"
        folder.mkdir()
        study = pydicom.uid.generate_uid()
        for number in range(5):
            (folder / f"{number}.dcm").write_bytes(ct_instance(study, InstanceNumber=number))
        result = subprocess.run(
            [dcmtk("storescu"), "-aet", CALLING, "-aec", "DICOMWEB", "+sd",
             "127.0.0.1", str(server.settings.dimse_port), str(folder)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert len(httpx.get(f"{server.dicomweb}/studies/{study}/instances").json()) == 5
        events = server.db.fetch(
            "SELECT subject, method, status, client FROM audit_event WHERE study_instance_uid = $1 AND route = 'dimse'",
            study,
        )
        assert len(events) == 5
        assert {(e["subject"], e["method"], e["status"], e["client"]) for e in events} == {
            (CALLING, "C-STORE", 0, "127.0.0.1")
        }


class TestStoreConcurrency:
    """Several associations at once, and one that ends in the middle of an instance."""

    def test_eight_associations_into_one_new_series(self, server: LiveServer) -> None:
        """8 associations store 10 instances each into one new series at the same time: 80 stored, counted exactly."""
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()

        def send(worker: int) -> list[int]:
            datasets = [
                pydicom.dcmread(io.BytesIO(ct_instance(study, series, InstanceNumber=worker * 10 + n, size=32)))
                for n in range(10)
            ]
            assoc = associate(server, [(datasets[0].SOPClassUID, "1.2.840.10008.1.2.1")])
            try:
                return [int(assoc.send_c_store(ds).Status) for ds in datasets]
            finally:
                assoc.release()

        with ThreadPoolExecutor(8) as pool:
            statuses = [status for result in pool.map(send, range(8)) for status in result]
        assert statuses == [0x0000] * 80
        [found] = httpx.get(f"{server.dicomweb}/studies/{study}/series").json()
        assert found["00201209"]["Value"] == [80]  # NumberOfSeriesRelatedInstances
        assert len(httpx.get(f"{server.dicomweb}/studies/{study}/instances", params={"limit": 200}).json()) == 80

    def test_association_aborted_in_the_middle_of_an_instance(self, server: LiveServer) -> None:
        """The connection cut while an instance is arriving (the SCU sends its PDUs slowly, then its socket is shut:
        a modality switched off, a cable pulled): the instance acknowledged before it is stored, the one cut off is
        not, and nothing of it stays in the archive's storage."""
        study = pydicom.uid.generate_uid()
        first = pydicom.dcmread(io.BytesIO(ct_instance(study, InstanceNumber=1)))
        cut_off = pydicom.dcmread(io.BytesIO(ct_instance(study, InstanceNumber=2, size=512)))  # about 32 PDUs
        assoc = associate(server, [(first.SOPClassUID, "1.2.840.10008.1.2.1")])
        assert assoc.send_c_store(first).Status == 0x0000
        send = assoc.dul.socket.send

        def slowly(data: bytes) -> None:
            time.sleep(0.05)
            send(data)

        assoc.dul.socket.send = slowly
        sending = threading.Thread(target=lambda: assoc.send_c_store(cut_off))
        sending.start()
        time.sleep(0.5)  # some of its PDUs have arrived, most have not
        raw = assoc.dul.socket.socket
        assert raw is not None
        raw.shutdown(socket.SHUT_RDWR)
        sending.join(timeout=60)
        assoc.abort()
        raw.close()
        time.sleep(1)
        found = httpx.get(f"{server.dicomweb}/studies/{study}/instances").json()
        assert [item["00080018"]["Value"][0] for item in found] == [first.SOPInstanceUID]
        assert not [p for p in (server.data_dir / "tmp").rglob("*") if p.is_file()]
        assert len(list((server.data_dir / "files").rglob("*.dcm"))) == 1


class TestWorkers:
    """``--workers N``: the DIMSE port is served exactly once."""

    def test_two_workers_one_listener(self, tmp_path: Path) -> None:
        port = free_port()
        env = {"DICOMWEB_DATABASE_URL": "", "DICOMWEB_WORKERS": "2", "DICOMWEB_DIMSE_PORT": str(port)}
        with serve_subprocess(env, tmp_path / "archive") as process:
            ae = AE(ae_title=CALLING)
            ae.add_requested_context(Verification)
            for _ in range(3):
                assoc = ae.associate("127.0.0.1", port, ae_title="DICOMWEB")
                assert assoc.is_established
                assert assoc.send_c_echo().Status == 0x0000
                assoc.release()
            log = process.log
        assert log.count("DIMSE listening on") == 1
        assert log.count("is served by another worker process") == 1


def stow(server: LiveServer, parts: list[bytes]) -> None:
    response = httpx.post(server.dicomweb + "/studies", content=multipart(parts), headers=stow_headers())
    assert response.status_code == 200, response.text


def qido(server: LiveServer, path: str, **params: str) -> set[str]:
    """The UIDs QIDO-RS finds (the unique key of the level searched), for comparison with C-FIND."""
    tag = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}[path.rsplit("/", 1)[-1]]
    found = httpx.get(f"{server.dicomweb}/{path}", params={**params, "limit": "1000"}).json()
    return {item[tag]["Value"][0] for item in found}


def c_find(server: LiveServer, model: str, **keys: Any) -> list[Dataset]:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    assoc = associate(server, [(model, "1.2.840.10008.1.2.1")])
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(identifier, model))
    finally:
        assoc.release()
    statuses = [int(status.Status) for status, _ in responses]
    assert statuses[-1] == 0x0000 and set(statuses[:-1]) <= {0xFF00}, statuses
    return [found for status, found in responses if int(status.Status) == 0xFF00]


class TestFind:
    """C-FIND by the same search as QIDO-RS: the same entities at every level."""

    @pytest.fixture
    def archive(self, server: LiveServer) -> tuple[LiveServer, list[str]]:
        """Three studies: two of patient FIND-1 (one of two series), one of FIND-2 with a name that needs UTF-8."""
        studies = [str(pydicom.uid.generate_uid()) for _ in range(3)]
        series = pydicom.uid.generate_uid()
        stow(server, [
            ct_instance(studies[0], series, patient_id="FIND-1", patient_name="Doe^Jane", InstanceNumber=1),
            ct_instance(studies[0], series, patient_id="FIND-1", patient_name="Doe^Jane", InstanceNumber=2),
            ct_instance(studies[0], patient_id="FIND-1", patient_name="Doe^Jane", StudyDate="20240101"),
            ct_instance(studies[1], patient_id="FIND-1", patient_name="Doe^Jane", StudyDate="20240301"),
            ct_instance(studies[2], patient_id="FIND-2", patient_name="Müller^Jürgen", StudyDate="20240302"),
        ])  # fmt: skip
        return server, studies

    def test_study_level_as_qido(self, archive: tuple[LiveServer, list[str]]) -> None:
        server, studies = archive
        found = c_find(server, StudyRootFind, QueryRetrieveLevel="STUDY", PatientID="FIND-1", StudyInstanceUID="",
                       StudyDate="", PatientName="")  # fmt: skip
        assert {ds.StudyInstanceUID for ds in found} == qido(server, "studies", PatientID="FIND-1") == set(studies[:2])
        assert {str(ds.PatientName) for ds in found} == {"Doe^Jane"}
        assert all(ds.QueryRetrieveLevel == "STUDY" and ds.RetrieveAETitle == "DICOMWEB" for ds in found)

    def test_date_range_and_wildcard(self, archive: tuple[LiveServer, list[str]]) -> None:
        server, studies = archive
        found = c_find(server, StudyRootFind, QueryRetrieveLevel="STUDY", StudyDate="20240201-20240331",
                       PatientName="*", StudyInstanceUID="")  # fmt: skip
        expected = qido(server, "studies", StudyDate="20240201-20240331")
        assert {ds.StudyInstanceUID for ds in found} == expected >= set(studies[1:])

    def test_series_and_image_levels_as_qido(self, archive: tuple[LiveServer, list[str]]) -> None:
        server, studies = archive
        series = c_find(server, StudyRootFind, QueryRetrieveLevel="SERIES", StudyInstanceUID=studies[0],
                        SeriesInstanceUID="", Modality="")  # fmt: skip
        assert {ds.SeriesInstanceUID for ds in series} == qido(server, f"studies/{studies[0]}/series")
        assert len(series) == 2
        images = c_find(server, StudyRootFind, QueryRetrieveLevel="IMAGE", StudyInstanceUID=studies[0],
                        SeriesInstanceUID="", SOPInstanceUID="")  # fmt: skip
        assert {ds.SOPInstanceUID for ds in images} == qido(server, f"studies/{studies[0]}/instances")
        assert len(images) == 3

    def test_patient_level_and_utf8(self, archive: tuple[LiveServer, list[str]]) -> None:
        """Patient Root, PATIENT level: one answer per patient; a name beyond ASCII is sent as UTF-8."""
        server, _ = archive
        [patient] = c_find(server, PatientRootFind, QueryRetrieveLevel="PATIENT", PatientID="FIND-2",
                           PatientName="")  # fmt: skip
        assert patient.SpecificCharacterSet == "ISO_IR 192"
        assert str(patient.PatientName) == "Müller^Jürgen"
        [one] = c_find(server, PatientRootFind, QueryRetrieveLevel="PATIENT", PatientID="FIND-1")
        assert one.PatientID == "FIND-1"

    def test_pages(self, archive: tuple[LiveServer, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
        """An answer longer than a page is fetched page by page; every match comes once."""
        from dicomweb.dimse import find

        monkeypatch.setattr(find, "PAGE", 1)
        server, studies = archive
        found = c_find(server, StudyRootFind, QueryRetrieveLevel="STUDY", PatientID="FIND-1", StudyInstanceUID="")
        assert sorted(ds.StudyInstanceUID for ds in found) == sorted(studies[:2])

    def test_an_invalid_key_is_a_failure(self, archive: tuple[LiveServer, list[str]]) -> None:
        server, _ = archive
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyDate = "2024-01-01"
        assoc = associate(server, [(StudyRootFind, "1.2.840.10008.1.2.1")])
        try:
            [(status, _)] = list(assoc.send_c_find(identifier, StudyRootFind))
        finally:
            assoc.release()
        assert status.Status == 0xA900 and "StudyDate" in status.ErrorComment

    @pytest.mark.skipif(not (DCMTK / "findscu").exists(), reason="DCMTK is installed by .ci/run")
    def test_dcmtk_findscu(self, archive: tuple[LiveServer, list[str]], tmp_path: Path) -> None:
        server, studies = archive
        result = subprocess.run(
            [dcmtk("findscu"), "-S", "-aet", CALLING, "-aec", "DICOMWEB", "-k", "QueryRetrieveLevel=STUDY",
             "-k", "PatientID=FIND-1", "-k", "StudyInstanceUID", "-X", "-od", str(tmp_path),
             "127.0.0.1", str(server.settings.dimse_port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        found = {pydicom.dcmread(path).StudyInstanceUID for path in tmp_path.glob("rsp*.dcm")}
        assert found == set(studies[:2])


class TestFindCancel:
    """C-CANCEL stops a C-FIND between two pending responses."""

    def test_cancel(self, server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
        from dicomweb.dimse import find

        patient = f"CANCEL-{pydicom.uid.generate_uid()[-8:]}"
        stow(server, [ct_instance(patient_id=patient) for _ in range(5)])  # five studies
        search = find.search  # type: ignore[attr-defined]

        async def slowly(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.3)  # a page takes a while: the cancel arrives in between
            return await search(*args, **kwargs)

        monkeypatch.setattr(find, "PAGE", 1)
        monkeypatch.setattr(find, "search", slowly)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientID = patient
        identifier.StudyInstanceUID = ""
        assoc = associate(server, [(StudyRootFind, "1.2.840.10008.1.2.1")])
        try:
            responses = assoc.send_c_find(identifier, StudyRootFind, msg_id=7)
            statuses = [int(next(responses)[0].Status)]
            assoc.send_c_cancel(7, query_model=StudyRootFind)
            statuses += [int(status.Status) for status, _ in responses]
        finally:
            assoc.release()
        assert statuses[0] == 0xFF00 and statuses[-1] == 0xFE00, statuses
        assert statuses.count(0xFF00) < 5


class TestGet:
    """C-GET: the instances sent back on the same association, as stored or converted, counted exactly."""

    def get(self, server: LiveServer, identifier: Dataset, contexts: list[tuple[str, str]]) -> tuple[Any, list[Any]]:
        received: list[Any] = []

        def store(event: Any) -> int:
            received.append(event.dataset)
            return 0x0000

        ae = AE(ae_title=CALLING)
        ae.add_requested_context(StudyRootGet)
        roles: list[Any] = []
        for abstract_syntax, transfer_syntax in contexts:
            ae.add_requested_context(abstract_syntax, transfer_syntax)
            roles.append(build_role(abstract_syntax, scp_role=True))
        assoc = ae.associate("127.0.0.1", server.settings.dimse_port, ae_title="DICOMWEB", ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, store)])  # fmt: skip
        assert assoc.is_established
        try:
            responses = list(assoc.send_c_get(identifier, StudyRootGet))
        finally:
            assoc.release()
        final = responses[-1][0]
        return final, received

    def test_study_as_stored(self, server: LiveServer) -> None:
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        parts = [ct_instance(study, series, InstanceNumber=n) for n in range(3)]
        stow(server, parts)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study
        final, received = self.get(server, identifier, [(CTImageStorage, "1.2.840.10008.1.2.1")])
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
        sent = {pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID: pydicom.dcmread(io.BytesIO(part)) for part in parts}
        assert {ds.SOPInstanceUID for ds in received} == set(sent)
        assert all(ds == sent[ds.SOPInstanceUID] for ds in received)

    def test_converted_when_the_stored_syntax_was_not_accepted(self, server: LiveServer) -> None:
        """A JPEG 2000 instance to a requester that accepts only Explicit VR Little Endian: the same pixels;
        to one that accepts neither: a failed sub-operation, counted."""
        original = pydicom.dcmread(JPEG2000)
        stow(server, [JPEG2000.read_bytes()])
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID = original.StudyInstanceUID
        identifier.SeriesInstanceUID = original.SeriesInstanceUID
        identifier.SOPInstanceUID = original.SOPInstanceUID
        final, [received] = self.get(server, identifier, [(original.SOPClassUID, "1.2.840.10008.1.2.1")])
        assert final.Status == 0x0000
        assert received.SOPInstanceUID == original.SOPInstanceUID
        np.testing.assert_array_equal(received.pixel_array, original.pixel_array)
        final, received_none = self.get(server, identifier, [(CTImageStorage, "1.2.840.10008.1.2.1")])
        assert received_none == [] and final.NumberOfFailedSuboperations == 1

    def test_unknown_study_sends_nothing(self, server: LiveServer) -> None:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = pydicom.uid.generate_uid()
        final, received = self.get(server, identifier, [(CTImageStorage, "1.2.840.10008.1.2.1")])
        assert final.Status == 0x0000 and received == []
