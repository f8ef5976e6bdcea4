"""dimse/speedups.py: what the archive changes in pynetdicom 3.0 for speed keeps to the protocol (every PDU within the
peer's maximum length, the message intact) and costs nothing on a quiet association. Their effect on throughput is
measured by benchmarks/dimse.py; that C-GET and C-MOVE deliver to DCMTK's tools is in test_dimse.py."""

from __future__ import annotations

import io
import struct
import time

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomweb.dimse import speedups
from dicomweb.dimse.speedups import _p_data_tf  # what the state machine sends for each P-DATA primitive

from .conftest import free_port


def pdus(stream: bytes) -> list[tuple[int, list[tuple[int, int, bytes]]]]:
    """The P-DATA-TF PDUs of ``stream`` (PS3.8 §9.3.5): each one's PDU-length (that of its PDV items, which the
    Maximum Length Negotiation bounds, PS3.8 D.1) and its PDVs (context, control, value)."""
    found = []
    while stream:
        pdu_type, length = stream[0], struct.unpack(">I", stream[2:6])[0]
        assert pdu_type == 0x04
        body, stream = stream[6 : 6 + length], stream[6 + length :]
        items = []
        while body:
            item_length = struct.unpack(">I", body[:4])[0]
            items.append((body[4], body[5], body[6 : 4 + item_length]))
            body = body[4 + item_length :]
        found.append((length, items))
    return found


class TestBatches:
    def test_pdus_within_the_peers_maximum_and_the_message_intact(self) -> None:
        """A C-STORE of 600 KB to a peer taking 16 KB PDUs: sent in batches of whole PDUs, each at most 16 KB, whose
        fragments put together are the command set and the data set, last fragments flagged (PS3.8 E.2)."""
        data_set = bytes(range(256)) * 2400
        primitive = C_STORE()
        primitive.MessageID = 7
        primitive.AffectedSOPClassUID = CTImageStorage
        primitive.AffectedSOPInstanceUID = "1.2.3.4"
        primitive.Priority = 0
        primitive.DataSet = io.BytesIO(data_set)
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        batches = list(message.encode_msg(1, 16384))
        assert 2 <= len(batches) <= 4  # 600 KB in batches of up to 256 KB, not 38 trips through the reactor
        sent = pdus(b"".join(_p_data_tf(batch).encode() for batch in batches))
        assert len(sent) == 1 + -(-len(data_set) // (16384 - 6))  # the command set, then a PDU per fragment
        assert all(length <= 16384 for length, _ in sent)
        fragments = [item for _, items in sent for item in items]
        assert all(context == 1 for context, _, _ in fragments)
        command = [value for _, control, value in fragments if control & 1]
        data = [(control, value) for _, control, value in fragments if not control & 1]
        assert [control for _, control, _ in fragments if control & 1] == [0x03]  # one, the last command fragment
        assert b"".join(value for _, value in data) == data_set
        assert [control for control, _ in data] == [0x00] * (len(data) - 1) + [0x02]
        assert command[0].startswith(b"\x00\x00\x00\x00")  # (0000,0000) Command Group Length first


class TestQuietAssociation:
    def test_the_reactor_polls_fast_only_while_pdus_arrive(self) -> None:
        """Right after a PDU arrived the reactor looks for work every ACTIVE_DELAY; once the association is quiet
        it sleeps pynetdicom's millisecond again, so an idle association costs what it did."""
        scp = AE(ae_title="ECHOSCP")
        scp.add_supported_context(Verification, ExplicitVRLittleEndian)
        port = free_port()
        server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_ECHO, lambda e: 0)])
        assert server is not None
        try:
            scu = AE()
            scu.add_requested_context(Verification, ExplicitVRLittleEndian)
            assoc = scu.associate("127.0.0.1", port, ae_title="ECHOSCP")
            assert assoc.is_established
            try:
                assert assoc.send_c_echo().Status == 0x0000
                assert assoc.dul._run_loop_delay == speedups.ACTIVE_DELAY
                time.sleep(speedups.ACTIVE_SECONDS * 2)
                assert assoc.dul._run_loop_delay == 0.001
            finally:
                assoc.release()
        finally:
            server.shutdown()
