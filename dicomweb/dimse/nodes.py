"""DICOM nodes: the remote application entities the archive knows, what each may ask of it over DIMSE, and where it
delivers C-MOVE and "send to node". Kept in PostgreSQL (``db/nodes.py``), managed over HTTP (``/api/dicom-nodes``)
and from the command line (``dicomweb nodes``). Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_AE_TITLE = 16  # PS3.5 Table 6.2-1, AE: at most 16 characters
MAX_HOST = 253  # characters of a host name (RFC 1035 §2.3.4: 255 octets on the wire, 253 written out)
MAX_DESCRIPTION = 1024  # characters of a node's description


class NodePermission(StrEnum):
    """What a node may ask of the archive (besides C-ECHO, which any caller may)."""

    STORE = "store"  # C-STORE into the archive
    FIND = "find"  # C-FIND
    GET = "get"  # C-GET
    MOVE = "move"  # C-MOVE (to any registered node)
    WORKLIST = "worklist"  # Modality Worklist C-FIND (the scheduled orders)
    MPPS = "mpps"  # Modality Performed Procedure Step N-CREATE and N-SET (which move the orders' status)
    COMMIT = "commit"  # Storage Commitment N-ACTION (the report comes back by N-EVENT-REPORT)


@dataclass(frozen=True)
class DicomNode:
    """A remote AE: its title, where it listens, what it may do here."""

    ae_title: str
    host: str
    port: int
    permissions: frozenset[NodePermission]
    description: str = ""
    # A worklist query naming no station (empty or "*" ScheduledStationAETitle) gets this node's station's items only.
    worklist_own_station: bool = False

    def may(self, permission: NodePermission) -> bool:
        return permission in self.permissions


def check_ae_title(value: str) -> str:
    """``value`` as an AE title without its non-significant leading and trailing spaces, or ValueError saying what
    PS3.5 Table 6.2-1 forbids: more than 16 characters, only spaces, a backslash, a control character or a character
    outside the Default Character Repertoire (ASCII)."""
    if len(value) > MAX_AE_TITLE:
        raise ValueError(f"an AE title has at most {MAX_AE_TITLE} characters, this one {len(value)}")
    title = value.strip(" ")
    if not title:
        raise ValueError("an AE title may not be empty or only spaces")
    for character in title:
        if character == "\\":
            raise ValueError("an AE title may not contain a backslash")
        if not " " <= character <= "~":
            raise ValueError(f"an AE title may only have printable ASCII characters, not {character!r}")
    return title


def check_host(value: str) -> str:
    """A host name or IP address a node listens on: not empty, at most MAX_HOST characters, no spaces or control
    characters."""
    if not value:
        raise ValueError("a host name or IP address may not be empty")
    if len(value) > MAX_HOST:
        raise ValueError(f"a host name has at most {MAX_HOST} characters, this one {len(value)}")
    if any(character.isspace() or not character.isprintable() for character in value):
        raise ValueError("a host name or IP address has no spaces or control characters")
    return value


def check_port(value: int) -> int:
    """A TCP port a node listens on: 1 to 65535."""
    if not 1 <= value <= 65535:
        raise ValueError(f"a port is 1 to 65535, not {value}")
    return value


def parse_permissions(values: list[str] | tuple[str, ...]) -> frozenset[NodePermission]:
    """Permission names as sent (any case, spaces around ignored); ValueError names an unknown one."""
    permissions = set()
    for value in values:
        try:
            permissions.add(NodePermission(value.strip().lower()))
        except ValueError:
            known = ", ".join(p.value for p in NodePermission)
            raise ValueError(f"unknown permission {value!r}; the permissions are {known}") from None
    return frozenset(permissions)
