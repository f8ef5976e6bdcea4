"""What makes pynetdicom 3.0 faster for the archive, applied on import (by ``outgoing.py``, hence by every user of the
DIMSE code; the fixes are in ``patches.py``). pynetdicom spends its time per PDU and per wait, not per byte: a
512x512 CT goes to a peer that takes 16 KB PDUs (DCMTK's default) as 33 of them, each a trip through its reactor
thread's loop, which sleeps a millisecond whenever it finds nothing to do.

- ``send_c_store`` of an ``outgoing.StoredInstance`` sends the data set's bytes from its file, as pynetdicom does for
  a path with ``STORE_SEND_CHUNKED_DATASET``. A C-GET or C-MOVE handler must yield a ``Dataset``, and pynetdicom
  would decode each file and encode it again: half the archive's CPU time per instance sent.
- The P-DATA-TF PDUs of one message go to the reactor in batches of up to ``BATCH_BYTES``, each sent with one
  ``send`` (still one PDU per fragment on the wire, each within the peer's maximum length, PS3.8 §9.3.5), instead
  of one trip through the reactor per PDU.
- While PDUs keep arriving (the last less than ``ACTIVE_SECONDS`` ago: a C-STORE coming in, the responses to the
  C-STOREs of a C-GET or C-MOVE) the reactor looks for work every ``ACTIVE_DELAY`` instead of every millisecond; an
  association that goes quiet falls back to pynetdicom's pace and costs no more CPU than before.
- pynetdicom's standard event handlers, which format a log line for every PDU and message, are not bound, and the
  identifiers of C-FIND requests and responses are not formatted for its log: its logger is at WARNING
  (``server.py``), so nothing of it was ever shown (it was a twentieth of a C-FIND's time per match).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pynetdicom import _config, fsm
from pynetdicom.association import Association
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

BATCH_BYTES = 256 * 1024
ACTIVE_SECONDS = 0.05
ACTIVE_DELAY = 0.0001


_send_c_store = Association.send_c_store


def _send_c_store_from_file(self: Association, dataset: Any, *args: Any, **kwargs: Any) -> Any:
    path = getattr(dataset, "path", None)  # an outgoing.StoredInstance (outgoing.py imports this module)
    return _send_c_store(self, dataset if path is None else path, *args, **kwargs)


class _Batch(P_DATA):
    """Consecutive P-DATA primitives of one message, which the reactor takes as one (its event for a P_DATA)."""

    def __init__(self, parts: list[P_DATA]) -> None:
        super().__init__()
        self.parts = parts


class _BatchPDUs:
    """The P-DATA-TF PDUs of a ``_Batch``, encoded back to back for one ``send``."""

    def __init__(self, batch: _Batch) -> None:
        self.batch = batch

    def encode(self) -> bytes:
        return b"".join(P_DATA_TF(part).encode() for part in self.batch.parts)


def _p_data_tf(primitive: P_DATA) -> Any:
    """What the state machine sends for a P-DATA primitive (its action DT-1 calls ``fsm.P_DATA_TF``)."""
    return _BatchPDUs(primitive) if isinstance(primitive, _Batch) else P_DATA_TF(primitive)


_encode_msg = DIMSEMessage.encode_msg


def _encode_msg_in_batches(self: DIMSEMessage, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
    batch: list[P_DATA] = []
    size = 0
    for primitive in _encode_msg(self, context_id, max_pdu_length):
        batch.append(primitive)
        size += sum(len(value) for _, value in primitive.presentation_data_value_list)
        if size >= BATCH_BYTES:
            yield _Batch(batch) if len(batch) > 1 else batch[0]
            batch, size = [], 0
    if batch:
        yield _Batch(batch) if len(batch) > 1 else batch[0]


def _loop_delay(self: DULServiceProvider) -> float:
    """The reactor's sleep when it found nothing to do: short while PDUs keep arriving (the idle timer restarts on
    each one received), pynetdicom's own once the association is quiet."""
    last_received = self._idle_timer._start_time
    if last_received is not None and time.time() - last_received < ACTIVE_SECONDS:
        return ACTIVE_DELAY
    return float(self._quiet_delay)  # type: ignore[attr-defined]


def _set_loop_delay(self: DULServiceProvider, seconds: float) -> None:
    self._quiet_delay = seconds  # type: ignore[attr-defined]  # pynetdicom's (1 ms), set when the DUL is made


_config.STORE_SEND_CHUNKED_DATASET = True  # a path given to send_c_store: its data set's bytes, read as they go
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False
Association.send_c_store = _send_c_store_from_file  # type: ignore[method-assign]
DIMSEMessage.encode_msg = _encode_msg_in_batches  # type: ignore[method-assign]
fsm.P_DATA_TF = _p_data_tf  # type: ignore[attr-defined,assignment]
DULServiceProvider._run_loop_delay = property(_loop_delay, _set_loop_delay)  # type: ignore[assignment]
