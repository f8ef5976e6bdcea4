"""Group commit (dicomweb/services/group_commit.py): the store batches of concurrent requests share a transaction,
and a group that fails is retried batch by batch, so one request's bad instance never costs another request."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pydicom
import pytest

from dicomweb.services import store
from dicomweb.services.group_commit import GroupCommit

from .data import ct_instance, multipart
from .test_stow import post, post_together, temp_files


class TestGroupCommit:
    """The queue itself, with a stand-in for the store's transaction."""

    @pytest.mark.asyncio
    async def test_batches_arriving_during_a_run_go_together(self) -> None:
        """The first batch runs at once; the two that arrive meanwhile are the next group; each caller gets its own."""
        groups: list[list[list[str]]] = []
        release = asyncio.Event()

        async def run(group: list[list[str]]) -> list[list[str]]:
            groups.append(group)
            if len(groups) == 1:
                await release.wait()
            return [[item.upper() for item in batch] for batch in group]

        queue: GroupCommit[list[str], list[str]] = GroupCommit()
        first = asyncio.create_task(queue.submit(["a"], run))
        await asyncio.sleep(0)
        others = [asyncio.create_task(queue.submit(batch, run)) for batch in (["b", "c"], ["d"])]
        await asyncio.sleep(0)
        release.set()
        assert await first == ["A"]
        assert [await task for task in others] == [["B", "C"], ["D"]]
        assert groups == [[["a"]], [["b", "c"], ["d"]]]
        assert queue.runner is None

    @pytest.mark.asyncio
    async def test_a_failing_group_fails_only_its_callers(self) -> None:
        """The error reaches the callers of the group that raised it; the next group runs."""
        calls = 0
        release = asyncio.Event()

        async def run(group: list[list[int]]) -> list[list[int]]:
            nonlocal calls
            calls += 1
            if calls == 1:
                await release.wait()
                raise RuntimeError("the transaction failed")
            return group

        queue: GroupCommit[list[int], list[int]] = GroupCommit()
        failing = asyncio.create_task(queue.submit([1], run))
        await asyncio.sleep(0)
        later = asyncio.create_task(queue.submit([2], run))
        release.set()
        with pytest.raises(RuntimeError, match="the transaction failed"):
            await failing
        assert await later == [2]

    @pytest.mark.asyncio
    async def test_a_cancelled_caller_leaves_its_group_running(self) -> None:
        """A caller that goes away does not stop the group: the others still get their results."""
        release = asyncio.Event()
        ran: list[list[list[int]]] = []

        async def run(group: list[list[int]]) -> list[list[int]]:
            ran.append(group)
            await release.wait()
            return group

        queue: GroupCommit[list[int], list[int]] = GroupCommit()
        blocker = asyncio.create_task(queue.submit([0], run))
        await asyncio.sleep(0)
        leaving = asyncio.create_task(queue.submit([1], run))
        staying = asyncio.create_task(queue.submit([2], run))
        await asyncio.sleep(0)
        leaving.cancel()
        release.set()
        assert await blocker == [0]
        assert await staying == [2]
        assert ran == [[[0]], [[1], [2]]]

    @pytest.mark.asyncio
    async def test_groups_are_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A group takes waiting batches up to MAX_GROUP_ITEMS items, never splitting one."""
        from dicomweb.services import group_commit

        monkeypatch.setattr(group_commit, "MAX_GROUP_ITEMS", 3)
        release = asyncio.Event()
        groups: list[list[list[int]]] = []

        async def run(group: list[list[int]]) -> list[list[int]]:
            groups.append(group)
            await release.wait()
            return group

        queue: GroupCommit[list[int], list[int]] = GroupCommit()
        tasks = [asyncio.create_task(queue.submit([0], run))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(queue.submit(batch, run)) for batch in ([1, 2], [3], [4, 5, 6, 7])]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
        assert groups == [[[0]], [[1, 2], [3]], [[4, 5, 6, 7]]]


class TestConcurrentRequests:
    """STOW-RS requests that arrive together are stored in one transaction, each answered for its own instances."""

    def _hold_first_commit(self, monkeypatch: pytest.MonkeyPatch, instances: int, fail_a_group: bool) -> list[int]:
        """Make the first transaction wait until every other request has handed in its batch (so that they all form
        the next group; the first group holds the requests that arrived before it started, one or more), and record
        the size of each transaction tried. With ``fail_a_group``, the first transaction of more than one request
        (of two instances each) fails."""
        original = store._commit
        sizes: list[int] = []

        async def commit(archive: Any, batch: list[store.Prepared], *audited: Any) -> list[store.StoreResult]:
            sizes.append(len(batch))
            if len(sizes) == 1:
                for _ in range(1000):
                    if len(batch) + sum(len(waiting) for waiting, _ in archive.stores.waiting) == instances:
                        break
                    await asyncio.sleep(0.01)
            if fail_a_group and len(batch) >= 4 and all(size < 4 for size in sizes[:-1]):
                raise store._Retry from asyncpg.exceptions.SerializationError("simulated failure of the group")
            return await original(archive, batch, *audited)

        monkeypatch.setattr(store, "_commit", commit)
        return sizes

    def test_one_transaction_for_the_requests_waiting(
        self, server_factory: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Six requests of two instances into one series: one transaction for those that came first, one for all the
        others; every instance stored once, with its file, and the counts exact."""
        sizes = self._hold_first_commit(monkeypatch, 12, fail_a_group=False)
        server = server_factory()
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        bodies = [multipart([ct_instance(study, series) for _ in range(2)]) for _ in range(6)]
        assert post_together(server, bodies) == [200] * 6
        assert len(sizes) == 2 and sum(sizes) == 12 and sizes[1] >= 2  # two transactions, the second for several
        rows = server.db.fetch("SELECT file_path FROM instance")
        assert len(rows) == 12 and all((server.data_dir / r[0]).is_file() for r in rows)
        assert server.db.value("SELECT number_of_series_related_instances FROM series") == 12
        assert server.db.value("SELECT number_of_study_related_instances FROM study") == 12
        assert len(list((server.data_dir / "files").rglob("*.dcm"))) == 12
        assert not temp_files(server)

    def test_a_failing_group_is_retried_request_by_request(
        self, server_factory: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The group's transaction fails: each request's batch is committed on its own, and all are stored."""
        sizes = self._hold_first_commit(monkeypatch, 8, fail_a_group=True)
        server = server_factory()
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        bodies = [multipart([ct_instance(study, series) for _ in range(2)]) for _ in range(4)]
        assert post_together(server, bodies) == [200] * 4
        failed_at = next(i for i, size in enumerate(sizes) if size >= 4)
        failed = sizes[failed_at]
        assert sizes[failed_at + 1 : failed_at + 1 + failed // 2] == [2] * (failed // 2)  # then request by request
        assert sum(sizes) - failed == 8
        assert server.db.value("SELECT count(*) FROM instance") == 8
        assert server.db.value("SELECT number_of_series_related_instances FROM series") == 8
        assert len(list((server.data_dir / "files").rglob("*.dcm"))) == 8
        assert not temp_files(server)

    def test_a_duplicate_across_requests(self, server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """The same instance in two requests of one group: stored once, both answered 200, one file."""
        self._hold_first_commit(monkeypatch, 3, fail_a_group=False)
        server = server_factory()
        study = pydicom.uid.generate_uid()
        same = ct_instance(study)
        bodies = [multipart([ct_instance(study)]), multipart([same]), multipart([same])]
        assert post_together(server, bodies) == [200] * 3
        assert server.db.value("SELECT count(*) FROM instance") == 2
        assert len(list((server.data_dir / "files").rglob("*.dcm"))) == 2
        assert not temp_files(server)


class TestKnownSeries:
    """A series remembered by the store (no query for it) that another process deleted meanwhile."""

    def test_series_deleted_elsewhere(self, server_factory: Any) -> None:
        """The series' rows go behind the store's back (as another worker's delete would): the next store into that
        series still succeeds, its series created anew with exact counts."""
        server = server_factory()
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        assert post(server, multipart([ct_instance(study, series)])).status_code == 200
        assert post(server, multipart([ct_instance(study, series)])).status_code == 200  # the series is known now
        server.db.fetch("WITH i AS (DELETE FROM instance), s AS (DELETE FROM series) SELECT 1")
        server.db.fetch("DELETE FROM study")
        response = post(server, multipart([ct_instance(study, series) for _ in range(2)]))
        assert response.status_code == 200, response.text
        assert server.db.value("SELECT number_of_series_related_instances FROM series") == 2
        assert server.db.value("SELECT number_of_study_related_instances FROM study") == 2
        assert server.db.value("SELECT count(*) FROM instance") == 2
