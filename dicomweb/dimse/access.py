"""Who is calling, and what they may ask: the calling AE title of each association is looked up among the registered
DICOM nodes once, when the association is requested; a node may do what its permissions say, an unknown caller what
``DICOMWEB_DIMSE_UNKNOWN`` allows (C-STORE, that and the worklist, or nothing: its association is rejected). Any
caller that is admitted may C-ECHO. A change to the nodes applies from the next association.
"""

from __future__ import annotations

import logging
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


# The registered node calling each association being served (entries go with their association); an association
# of an unknown caller has none.
_nodes: WeakKeyDictionary[Association, DicomNode] = WeakKeyDictionary()


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
    if node is not None:
        _nodes[assoc] = node


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


def own_station(assoc: Association) -> str | None:
    """The station a worklist query of ``assoc`` that names none stands for: the calling AE title, when the caller is
    a node set so (``DicomNode.worklist_own_station``); else None (every station)."""
    node = _nodes.get(assoc)
    return node.ae_title if node is not None and node.worklist_own_station else None


def may(bridge: Bridge, assoc: Association, permission: NodePermission) -> bool:
    """Whether the caller of ``assoc`` may do what ``permission`` names."""
    node = _nodes.get(assoc)
    if node is not None:
        return node.may(permission)
    unknown = bridge.archive.settings.dimse_unknown
    return (
        permission is NodePermission.STORE
        and unknown != "none"
        or (permission is NodePermission.WORKLIST and unknown == "worklist")
    )
