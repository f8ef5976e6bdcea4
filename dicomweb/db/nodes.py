"""The DICOM nodes table (``dicom_node``): list, look up, create or replace, delete."""

from __future__ import annotations

import asyncpg

from ..dimse.nodes import DicomNode, NodePermission

_COLUMNS = "ae_title, host, port, permissions, description, worklist_own_station"


def _node(row: asyncpg.Record) -> DicomNode:
    return DicomNode(
        ae_title=row["ae_title"],
        host=row["host"],
        port=row["port"],
        permissions=frozenset(NodePermission(p) for p in row["permissions"]),
        description=row["description"],
        worklist_own_station=row["worklist_own_station"],
    )


async def list_nodes(pool: asyncpg.Pool) -> list[DicomNode]:
    """Every node, by AE title."""
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM dicom_node ORDER BY ae_title")
    return [_node(row) for row in rows]


async def get_node(pool: asyncpg.Pool, ae_title: str) -> DicomNode | None:
    """The node with this AE title (compared exactly, as PS3.8 compares titles), or None."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM dicom_node WHERE ae_title = $1", ae_title)
    return None if row is None else _node(row)


async def put_node(pool: asyncpg.Pool, node: DicomNode) -> bool:
    """Create the node, or replace the one with its AE title; True when it was created."""
    created: bool = await pool.fetchval(
        """
        INSERT INTO dicom_node (ae_title, host, port, permissions, description, worklist_own_station)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (ae_title) DO UPDATE
            SET host = EXCLUDED.host, port = EXCLUDED.port, permissions = EXCLUDED.permissions,
                description = EXCLUDED.description, worklist_own_station = EXCLUDED.worklist_own_station,
                updated_at = now()
        RETURNING xmax = 0
        """,
        node.ae_title,
        node.host,
        node.port,
        sorted(p.value for p in node.permissions),
        node.description,
        node.worklist_own_station,
    )
    return created


async def delete_node(pool: asyncpg.Pool, ae_title: str) -> bool:
    """Remove the node; False when there was none."""
    status: str = await pool.execute("DELETE FROM dicom_node WHERE ae_title = $1", ae_title)
    return status == "DELETE 1"
