"""Who is calling, and what they may ask: the calling AE title of each association is looked up among the registered
DICOM nodes once, when the association is requested; a node may do what its permissions say, an unknown caller what
``DICOMWEB_DIMSE_UNKNOWN`` allows (C-STORE, or nothing: its association is rejected). Any caller that is admitted
may C-ECHO. A change to the nodes applies from the next association.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from pynetdicom.association import Association
from pynetdicom.events import Event as DimseEvent
from pynetdicom.pdu_primitives import A_ASSOCIATE

from ..db.nodes import get_node
from .nodes import DicomNode, NodePermission

if TYPE_CHECKING:
    from .server import Bridge

log = logging.getLogger("dicomweb")

# A-ASSOCIATE-RJ (PS3.8 §7.1.1.9): result, source, reason.
REJECTED_PERMANENT, REJECTED_TRANSIENT = 0x01, 0x02
SERVICE_USER = 0x01
NO_REASON_GIVEN, CALLING_AE_TITLE_NOT_RECOGNIZED = 0x01, 0x03


@dataclass(frozen=True)
class Caller:
    """The calling AE of an association: its title and, when it is a registered node, the node."""

    ae_title: str
    node: DicomNode | None

    def may(self, permission: NodePermission, unknown_may_store: bool) -> bool:
        if self.node is not None:
            return self.node.may(permission)
        return permission is NodePermission.STORE and unknown_may_store


# The caller of each association being served (entries go with their association).
_callers: WeakKeyDictionary[Association, Caller] = WeakKeyDictionary()


def admit(bridge: Bridge, event: DimseEvent) -> None:
    """EVT_REQUESTED: look the calling AE title up; reject the association when an unknown caller may do nothing,
    or (transiently) when the nodes cannot be read."""
    assoc = event.assoc
    calling = calling_ae_title(assoc)
    try:
        node = bridge.run(get_node(bridge.archive.pool, calling))
    except Exception as exc:
        log.warning("DIMSE association from %s rejected: the DICOM nodes cannot be read: %s", calling, exc)
        _reject(bridge, assoc, REJECTED_TRANSIENT, NO_REASON_GIVEN)
        return
    if node is None and bridge.archive.settings.dimse_unknown == "none":
        log.info("DIMSE association from %s at %s rejected: not a registered node", calling, assoc.requestor.address)
        _reject(bridge, assoc, REJECTED_PERMANENT, CALLING_AE_TITLE_NOT_RECOGNIZED)
        return
    _callers[assoc] = Caller(calling, node)


def _reject(bridge: Bridge, assoc: Association, result: int, reason: int) -> None:
    """A-ASSOCIATE-RJ, then wait for it to be sent before the connection closes (as pynetdicom's own rejections)."""
    assoc.acse.send_reject(result, SERVICE_USER, reason)
    bridge.count_association(assoc, "rejected")
    assoc.kill()


def calling_ae_title(assoc: Association) -> str:
    """The calling AE title an association was requested with (known before negotiation sets the requestor's)."""
    request = assoc.requestor.primitive
    if isinstance(request, A_ASSOCIATE):
        return str(request.calling_ae_title).strip()
    return str(assoc.requestor.ae_title).strip()


def caller_of(assoc: Association) -> Caller:
    """The caller of an admitted association."""
    found = _callers.get(assoc)
    return found if found is not None else Caller(str(assoc.requestor.ae_title).strip(), None)


def may(bridge: Bridge, assoc: Association, permission: NodePermission) -> bool:
    """Whether the caller of ``assoc`` may do what ``permission`` names."""
    return caller_of(assoc).may(permission, bridge.archive.settings.dimse_unknown == "store")
