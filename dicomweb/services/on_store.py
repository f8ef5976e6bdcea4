"""``OnStore``: what another part of the product makes of some instances as they are stored, in the store's own two
phases, without the store knowing what it is.

The archive is given one when it opens (``open_archive(settings, on_store=...)``), so that every transport that
stores through ``services/store.py`` (STOW-RS, the reporting uploads, ``dicomweb import``, C-STORE) runs it alike.
The reporting API gives one that turns TID 1500 measurement reports into annotations (``reporting/sr_import.py``);
``dicomweb`` itself knows nothing of reporting's tables.

- ``read`` runs in the parse phase, on the parsed data set, off the event loop: in a worker thread, or in a spawned
  process of ``dicomweb import``. So the object must be picklable, and so must what it returns. It gets the SOP Class
  UID first, to answer None at once for the instances it has no interest in: those pay one set lookup.
- ``stored`` runs in the transaction that inserts the instance's row, after all the rows of that transaction (so an
  image stored in the same request is visible), in a savepoint of its own: what it writes commits with the
  instance, and a failure of it rolls back its own writes only, never the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncpg
    from pydicom.dataset import Dataset

    from ..instance import Instance


class OnStore(Protocol):
    def read(self, ds: Dataset, sop_class_uid: str) -> object | None:
        """What to keep of the instance for ``stored`` (picklable), or None to let it be (blocking; never raises)."""
        ...

    async def stored(self, conn: asyncpg.Connection, instance: Instance, found: object, stored_by: str) -> None:
        """Act on what ``read`` found, in the storing transaction; ``stored_by`` names who stored the instance."""
        ...
