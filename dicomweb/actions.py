"""The audit trail's vocabulary: what an event says was done, one closed set for every transport.

Each HTTP route names its action (``routing.Route`` in ``routes.py`` and ``reporting/routes.py``), as dicom-server
puts its audit event type on the controller action; each DIMSE operation has its own in ``DIMSE_ACTIONS``, the
action of the HTTP transaction that does the same work. The values are what ``audit_event.action`` stores and what
``GET /api/audit?action=`` filters on. A leaf module: it imports nothing from the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Literal


class Action(StrEnum):
    """What a request or a DIMSE operation did, as its audit event records it."""

    SEARCH = "search"  # QIDO-RS; C-FIND
    # WADO-RS (instances, metadata, frames, bulk data, rendered, thumbnail), WADO-URI, sending a study to a DICOM
    # node; C-GET, C-MOVE
    RETRIEVE = "retrieve"
    STORE = "store"  # STOW-RS, the reporting API's uploads; C-STORE
    DELETE = "delete"  # deleting studies, series and instances; the reporting API's deletions; a DICOM node
    AUDIT = "audit"  # reading the audit trail
    READ = "read"  # the reporting API's reads (studies, reports, templates, annotations, image files); DICOM nodes
    CREATE = "create"  # the reporting API: scheduling, announcing a series, writing, signing, amending, annotating
    UPDATE = "update"  # the reporting API: a study's status, a report, a template, an annotation; a DICOM node's PUT
    # C-ECHO, the Verification Service (PS3.4 Annex A), received or sent to a DICOM node: touches no patient data
    ECHO = "echo"


# The DIMSE operations the archive serves as an SCP (PS3.7 §9.1), with the names PS3.7 gives them.
DimseOperation = Literal[
    "C-ECHO", "C-STORE", "C-FIND", "MWL C-FIND", "C-GET", "C-MOVE", "MPPS N-CREATE", "MPPS N-SET", "COMMIT N-ACTION"
]

# Each audited as the HTTP transaction that does the same work: C-STORE as STOW-RS, C-FIND as QIDO-RS, C-GET and
# C-MOVE as WADO-RS, so that one ?action= finds a study's stores, searches or retrievals over either transport.
DIMSE_ACTIONS: Mapping[DimseOperation, Action] = MappingProxyType(
    {
        "C-ECHO": Action.ECHO,
        "C-STORE": Action.STORE,
        "C-FIND": Action.SEARCH,
        "MWL C-FIND": Action.SEARCH,  # a Modality Worklist query: a search of the scheduled orders
        "C-GET": Action.RETRIEVE,
        "C-MOVE": Action.RETRIEVE,
        "MPPS N-CREATE": Action.CREATE,  # a modality reports a procedure step it started (and its order moves)
        "MPPS N-SET": Action.UPDATE,  # ... its series, its end
        "COMMIT N-ACTION": Action.READ,  # Storage Commitment: the archive reads its instances back to vouch for them
    }
)
