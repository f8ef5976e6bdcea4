"""What the archive sends to other AEs: the presentation contexts it proposes for stored instances, the data set it
sends for each instance given what the peer accepted (C-GET, C-MOVE and "send to node" alike), and the associations
it opens itself (C-ECHO and C-STORE to a node).

An instance goes in its stored transfer syntax when the peer accepted that for its SOP class; else, uncompressed,
converted losslessly to Explicit VR Little Endian by the same code as WADO-RS (``transcode.py``; pynetdicom encodes
it as Implicit VR Little Endian when only that was accepted); an instance that can go in neither way is a failed
sub-operation, never a stop. All of it blocks: it runs in an association's thread or a worker thread.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from ..db.retrieve import StoredFile
from ..transcode import CannotTranscode, transcode
from . import patches, speedups  # noqa: F401 (applied on import)
from .nodes import DicomNode

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 §9.3.2.2: odd IDs 1 to 255)
CONNECT_TIMEOUT = 10  # seconds to wait for a node's TCP connection
ACSE_TIMEOUT = 30  # seconds to wait for a node's association answer
DIMSE_TIMEOUT = 120  # seconds to wait for a node's answer to one C-STORE or C-ECHO
# The longest PDU the archive receives (PS3.8 §9.3.1 Maximum Length; pynetdicom's default is 16 KB): a 512x512 CT
# then arrives in 3 PDUs instead of 33, and pynetdicom's cost is per PDU. Bounded, as a PDU is read whole into memory.
MAX_PDU = 256 * 1024

# Which SOP classes, in which transfer syntaxes, a peer accepted: {SOPClassUID: {TransferSyntaxUID, ...}}.
Accepted = dict[str, set[str]]


class NodeUnreachable(Exception):
    """The node could not be associated with: no connection, rejected or aborted; the message says which."""


@dataclass
class Counts:
    """The outcome of sending instances, as C-GET and C-MOVE count their sub-operations (PS3.4 C.4.2.1.4)."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_sop_instance_uids: list[str] = field(default_factory=list)


def contexts_for(files: Iterable[StoredFile]) -> list[PresentationContext]:
    """The contexts to propose for ``files``: per SOP class one for uncompressed (Explicit, then Implicit VR Little
    Endian, every storage SCP takes one of them), and one for each other transfer syntax its instances are stored
    in; at most MAX_CONTEXTS (an instance none fits fails)."""
    syntaxes: dict[str, set[str]] = {}
    for file in files:
        syntaxes.setdefault(file.sop_class_uid, set()).add(file.transfer_syntax_uid)
    contexts = []
    for sop_class, stored in sorted(syntaxes.items()):
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
        contexts.extend(build_context(sop_class, [syntax]) for syntax in sorted(stored - set(UNCOMPRESSED)))
    return contexts[:MAX_CONTEXTS]


def accepted_of(assoc: Association) -> Accepted:
    """The storage contexts the peer accepted in which the archive sends (is the SCU of C-STORE)."""
    accepted: Accepted = {}
    for context in assoc.accepted_contexts:
        if context.as_scu:
            accepted.setdefault(str(context.abstract_syntax), set()).add(str(context.transfer_syntax[0]))
    return accepted


class StoredInstance(Dataset):
    """An instance that goes as its file holds it: only its SOP Class and Instance UIDs are here (what pynetdicom's
    C-GET and C-MOVE code reads of what a handler yields); ``send_c_store`` sends the data set's bytes from ``path``
    (speedups.py), never decoded and encoded again."""

    def __init__(self, path: Path, file: StoredFile) -> None:
        super().__init__()
        self.path = path
        self.SOPClassUID = file.sop_class_uid
        self.SOPInstanceUID = file.sop_instance_uid


def dataset_to_send(path: Path, file: StoredFile, accepted: Accepted) -> Dataset:
    """The data set to send for ``file``: its file's bytes when its transfer syntax was accepted for its SOP class;
    decoded, for pynetdicom to encode in the other uncompressed transfer syntax, when that one was accepted; else
    converted to Explicit VR Little Endian when an uncompressed one was accepted and the pixels decode; else as
    stored (which pynetdicom counts as a failed sub-operation, having no context for it)."""
    syntaxes = accepted.get(file.sop_class_uid, set())
    if file.transfer_syntax_uid in syntaxes:
        return StoredInstance(path, file)
    fits = file.transfer_syntax_uid in UNCOMPRESSED and syntaxes & set(UNCOMPRESSED)
    if not fits and syntaxes & set(UNCOMPRESSED):
        try:
            return dcmread(io.BytesIO(transcode(path, ExplicitVRLittleEndian)))
        except CannotTranscode:
            pass
    return dcmread(path)


def _ae(calling_ae_title: str) -> AE:
    ae = AE(ae_title=calling_ae_title)
    ae.maximum_pdu_size = MAX_PDU
    ae.connection_timeout = CONNECT_TIMEOUT
    ae.acse_timeout, ae.dimse_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT
    return ae


def _associate(ae: AE, node: DicomNode, contexts: list[PresentationContext]) -> Association:
    try:
        assoc = ae.associate(node.host, node.port, contexts=contexts, ae_title=node.ae_title)
    except OSError as exc:  # pynetdicom resolves the host before it connects: a name that does not resolve
        raise NodeUnreachable(f"{node.ae_title} at {node.host}:{node.port} cannot be reached: {exc}") from None
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise NodeUnreachable(f"{node.ae_title} at {node.host}:{node.port} rejected the association")
    raise NodeUnreachable(f"{node.ae_title} at {node.host}:{node.port} did not answer an association request")


def echo(node: DicomNode, calling_ae_title: str) -> tuple[int, float]:
    """A C-ECHO to the node: its status and the round trip in seconds (association included)."""
    started = time.perf_counter()
    assoc = _associate(_ae(calling_ae_title), node, [build_context(Verification)])
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in status:
        raise NodeUnreachable(f"{node.ae_title} did not answer the C-ECHO")
    return int(status.Status), time.perf_counter() - started


def send(
    node: DicomNode,
    calling_ae_title: str,
    local_copy: Callable[[str], AbstractContextManager[Path]],
    files: list[StoredFile],
) -> Counts:
    """Send ``files`` to the node over one association of the archive's (C-STORE SCU), counting the outcomes."""
    counts = Counts()
    assoc = _associate(_ae(calling_ae_title), node, contexts_for(files))
    try:
        accepted = accepted_of(assoc)
        for file in files:
            if not assoc.is_established:  # the node aborted: what is left fails
                counts.failed += 1
                counts.failed_sop_instance_uids.append(file.sop_instance_uid)
                continue
            try:
                with local_copy(file.file_path) as path:
                    status = assoc.send_c_store(dataset_to_send(path, file, accepted))
            except ValueError:  # no accepted context fits the instance
                status = Dataset()
            category = STORAGE_SERVICE_CLASS_STATUS.get(int(status.Status), ("Failure",))[0] if status else "Failure"
            if category == "Success":
                counts.completed += 1
            elif category == "Warning":
                counts.warning += 1
            else:
                counts.failed += 1
                counts.failed_sop_instance_uids.append(file.sop_instance_uid)
    finally:
        if assoc.is_established:
            assoc.release()
    return counts
