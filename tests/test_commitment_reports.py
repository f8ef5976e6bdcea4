"""Storage commitment reports that outlive the process that accepted the request (dicomweb/dimse/commitment_reports.py),
with real pynetdicom modalities: a report whose node does not listen yet is sent once it does; one whose server
process was killed (SIGKILL) before sending it is sent by another `dicomweb serve` process on the same database; two
servers on one database send each report once; one that cannot be sent within DICOMWEB_COMMIT_RETRY_HOURS is abandoned
with a warning."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dicomweb.config import Settings
from dicomweb.dimse.commitment_reports import retry_seconds

from .conftest import Database, LiveServer, free_port, free_ports, serve_in_thread, serve_subprocess, wait_until
from .test_commitment import Reports, ask, committed, failures, request, stored_instances
from .test_dimse import register

RETRY_SECONDS = 1  # DICOMWEB_COMMIT_RETRY_SECONDS of these tests: a failed attempt is repeated a second later
LEASE_SECONDS = 3  # DICOMWEB_COMMIT_LEASE_SECONDS: a killed process's hold on a request ends this long after it began


@contextmanager
def listening(ae_title: str, port: int, reports: Reports, answer_after: float = 0) -> Iterator[None]:
    """A modality's storage commitment SCU on ``port``, taking the reports the archive sends as SCP (J.3.3), each
    answered ``answer_after`` seconds after it arrived."""

    def handler(event: Any) -> tuple[int, None]:
        answer = reports.handler(event)
        time.sleep(answer_after)
        return answer

    ae = AE(ae_title=ae_title)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, handler)])
    assert server is not None
    try:
        yield
    finally:
        server.shutdown()


def row(db: Database) -> Any:
    [found] = db.fetch("SELECT * FROM storage_commitment")
    return found


class TestRetries:
    """A report that could not be sent is tried again, by whichever process, until it is sent or given up."""

    def test_waits_double_up_to_an_hour(self) -> None:
        """DICOMWEB_COMMIT_RETRY_SECONDS after the first failed attempt, doubled after each, at most an hour (or the
        setting, when it is longer)."""
        assert [retry_seconds(60, attempts) for attempts in (1, 2, 3, 6, 7, 500)] == [60, 120, 240, 1920, 3600, 3600]
        assert retry_seconds(7200, 3) == 7200

    def test_sent_once_the_node_listens(self, server_factory: Any) -> None:
        """The node does not listen when the report is first due; it gets the report once it does."""
        server: LiveServer = server_factory(dimse_port=free_port(), commit_retry_seconds=RETRY_SECONDS)
        port = free_port()
        register(server, "MODALITY2", "127.0.0.1", port, ["store", "commit"])
        uids = stored_instances(server, 2)
        assert ask(server, "MODALITY2", request("2.25.10", uids), Reports(), stay=False) == 0x0000
        wait_until(lambda: row(server.db)["last_error"] is not None, "a first attempt that failed")
        assert row(server.db)["state"] == "pending" and "no association" in row(server.db)["last_error"]
        reports = Reports()
        with listening("MODALITY2", port, reports):
            event_type, report = reports.one()
            wait_until(lambda: row(server.db)["state"] == "reported", "the report recorded")
        assert event_type == 1 and report.TransactionUID == "2.25.10" and committed(report) == uids
        assert row(server.db)["attempts"] >= 2 and row(server.db)["event_type_id"] == 1

    def test_abandoned_after_the_retry_hours(self, server_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
        """With DICOMWEB_COMMIT_RETRY_HOURS=0 the first attempt is the last: the request is abandoned, with a
        warning, and kept so."""
        server: LiveServer = server_factory(dimse_port=free_port(), commit_retry_hours=0)
        register(server, "MODALITY2", "127.0.0.1", free_port(), ["store", "commit"])
        uids = stored_instances(server, 1)
        with caplog.at_level(logging.WARNING, logger="dicomweb"):
            assert ask(server, "MODALITY2", request("2.25.11", uids), Reports(), stay=False) == 0x0000
            wait_until(lambda: row(server.db)["state"] == "abandoned", "abandoned")
        assert "storage commitment report 2.25.11 for MODALITY2 abandoned after 1 attempts" in caplog.text
        assert row(server.db)["reported_at"] is None and row(server.db)["claimed_by"] is None


class TestOtherProcesses:
    """Any server process on the database sends a report that is due, and only one sends it."""

    def test_sent_by_another_process_after_a_kill(self, new_database: Any, tmp_path: Path) -> None:
        """The process that accepted the request is killed (SIGKILL) while its report's association waits for an
        answer; a second `dicomweb serve` on the same database sends the report once that process's hold has
        ended, on a new association to the node: exactly one report, with the right committed and failed lists."""
        db: Database = new_database()
        node_port, http_first, http_second, dimse_first, dimse_second = free_ports(5)
        env = {
            "DICOMWEB_DATABASE_URL": db.url,
            "DICOMWEB_WORKERS": "1",
            "DICOMWEB_COMMIT_RETRY_SECONDS": str(RETRY_SECONDS),
            "DICOMWEB_COMMIT_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        data_dir = tmp_path / "archive"  # the second process reads the files the first stored, as a replica would
        missing = str(pydicom.uid.generate_uid())
        with socket.socket() as silent:  # where the node will listen: accepts the connection, never answers
            silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            silent.bind(("127.0.0.1", node_port))
            silent.listen()
            silent.settimeout(30)
            with serve_subprocess({**env, "DICOMWEB_DIMSE_PORT": str(dimse_first)}, data_dir, http_first) as first:
                archive = LiveServer(first.url, Settings(dimse_port=dimse_first), db)
                register(archive, "MODALITY3", "127.0.0.1", node_port, ["store", "commit"])
                uids = stored_instances(archive, 2)
                action = request("2.25.20", [*uids, missing])
                assert ask(archive, "MODALITY3", action, Reports(), stay=False) == 0x0000
                connection, _ = silent.accept()  # the report's association, waiting for an A-ASSOCIATE-AC
                first.process.kill()
                first.process.wait()
            connection.close()
        assert row(db)["claimed_by"].split(":")[1] == str(first.process.pid)  # held by the dead process
        reports = Reports()
        with (
            listening("MODALITY3", node_port, reports),
            serve_subprocess({**env, "DICOMWEB_DIMSE_PORT": str(dimse_second)}, data_dir, http_second) as second,
        ):
            event_type, report = reports.one()
            wait_until(lambda: row(db)["state"] == "reported", "the report recorded")
            time.sleep(LEASE_SECONDS + RETRY_SECONDS)  # a second report would have come by now
        assert len(reports.received) == 1, second.log
        assert event_type == 2 and report.TransactionUID == "2.25.20"
        assert committed(report) == uids and failures(report) == {missing: 0x0112}
        assert (row(db)["attempts"], row(db)["event_type_id"], row(db)["failed_instances"]) == (2, 2, 1)

    def test_two_servers_send_each_report_once(self, new_database: Any, tmp_path: Path) -> None:
        """Two servers on one database, both with due requests whose node was away: when it listens, each report
        arrives once, whichever server sends it, though the node takes longer to answer each than the servers take
        between two looks for due requests."""
        db: Database = new_database()
        node_port = free_port()
        settings = Settings(data_dir=tmp_path / "archive", auth="disabled", commit_retry_seconds=RETRY_SECONDS)
        transactions = [f"2.25.{30 + n}" for n in range(12)]
        reports = Reports()
        with (
            serve_in_thread(settings.replace(dimse_port=free_port()), db) as one,
            serve_in_thread(settings.replace(dimse_port=free_port()), db) as two,
        ):
            register(one, "MODALITY4", "127.0.0.1", node_port, ["store", "commit"])
            uids = stored_instances(one, 1)
            for n, transaction in enumerate(transactions):
                assert ask((one, two)[n % 2], "MODALITY4", request(transaction, uids), Reports(), stay=False) == 0
            failed = "SELECT count(*) FROM storage_commitment WHERE last_error IS NOT NULL"
            wait_until(lambda: db.value(failed) == len(transactions), "a failed first attempt of each")
            with listening("MODALITY4", node_port, reports, answer_after=2 * RETRY_SECONDS):
                reported = "SELECT count(*) FROM storage_commitment WHERE state = 'reported'"
                wait_until(lambda: db.value(reported) == len(transactions), "every report recorded")
                time.sleep(2 * RETRY_SECONDS)  # a second report of any would have come by now
        assert Counter(str(report.TransactionUID) for _, report in reports.received) == Counter(transactions)
        assert all(event_type == 1 for event_type, _ in reports.received)
