"""Group commit: the batches that concurrent callers hand in while a commit runs are committed together next.

One transaction for many requests' instances costs one WAL flush and one update of each series' and study's
counts, where a transaction each would queue on the series row's lock for a flush each (concurrent stores into one
series are the common case: a modality sending a CT over several associations, a viewer's parallel STOW-RS). No
batch waits for a timer: a batch that arrives while nothing runs is committed at once, and what arrives meanwhile is
the next group. ``services.store`` says what a group does and how a failing group is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sized
from typing import Generic, TypeVar

Batch = TypeVar("Batch", bound=Sized)
Result = TypeVar("Result")

MAX_GROUP_ITEMS = 2000  # a group takes waiting batches up to about this many items; a batch is never split


class GroupCommit(Generic[Batch, Result]):
    """Hands waiting batches to ``run`` together, in arrival order; each caller gets its own batch's results."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Batch, asyncio.Future[Result]]] = []
        self.runner: asyncio.Task[None] | None = None

    async def submit(self, batch: Batch, run: Callable[[list[Batch]], Awaitable[list[Result]]]) -> Result:
        """The results of ``batch`` once its group has run. ``run`` takes a group (a list of batches) and returns
        each batch's results; every caller passes the same ``run``. A caller cancelled while its group runs leaves
        the group running: what it stored stays stored, as if its answer had been lost on the way."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.waiting.append((batch, future))
        if self.runner is None:
            self.runner = asyncio.create_task(self._drain(run), name="dicomweb-group-commit")
        return await future

    async def _drain(self, run: Callable[[list[Batch]], Awaitable[list[Result]]]) -> None:
        try:
            while self.waiting:
                group = self._next_group()
                try:
                    results = await run([batch for batch, _ in group])
                except asyncio.CancelledError:
                    for _, future in group:
                        future.cancel()
                    raise
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.runner = None
            for _, future in self.waiting:  # only when cancelled: the server is stopping
                if not future.done():
                    future.cancel()
            self.waiting = []

    def _next_group(self) -> list[tuple[Batch, asyncio.Future[Result]]]:
        taken, items = 0, 0
        for batch, _ in self.waiting:
            if taken and items + len(batch) > MAX_GROUP_ITEMS:
                break
            taken += 1
            items += len(batch)
        group, self.waiting = self.waiting[:taken], self.waiting[taken:]
        return group
