"""A store that throttles the write of an outcome: the worker writes it again while its lease
leaves time, instead of recording the successful run as a failed attempt (which runs the task
again). On the simulated bucket, with the test clock (the lease's time left does not shrink)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.scale_sim import SimBackend

from omniq import AsyncOmniQ
from omniq.models.task import TaskStatus
from omniq.storage.file.cloud import Backoff
from omniq.storage.file.simulated import ProviderError, SimulatedBucket, SimulatedObjectStore
from omniq.worker import OUTCOME_MARGIN_SECONDS

pytestmark = pytest.mark.file_layout("a simulated bucket under the worker")

RUNS: list[int] = []


def _app() -> AsyncOmniQ:
    """An app on its own simulated bucket, no back-off to speak of, a 30-s lease, and two
    tasks: ``count`` returns its argument, ``flaky`` fails its first run."""
    RUNS.clear()
    store = SimulatedObjectStore(SimulatedBucket("s3", seed=1), instant=True)
    store.backoff = Backoff(base=0.001, attempts=1)
    app = AsyncOmniQ(SimBackend(store, visibility_timeout=30))

    @app.task(name="count")
    async def count(n: int) -> int:
        RUNS.append(n)
        return n

    @app.task(name="flaky")
    async def flaky(n: int) -> int:
        RUNS.append(n)
        if len(RUNS) == 1:
            raise RuntimeError("first run fails")
        return n

    return app


@contextlib.contextmanager
def _refused(app: AsyncOmniQ, writes: Callable[[str, str | None], bool], times: int = 10**6):
    """The writes for which ``writes(path, version)`` holds answer 503, ``times`` times at
    most; yields the paths refused."""
    store = app.backend.objects
    original, refused = store._put, []

    async def slow_down(path, data, *, create, version):
        if writes(path, version) and len(refused) < times:
            refused.append(path)
            raise ProviderError(503, "SlowDown")
        return await original(path, data, create=create, version=version)

    store._put = slow_down
    try:
        yield refused
    finally:
        store._put = original


def _fences(path: str, version: str | None) -> bool:
    return "/running/" in path and version is not None  # the fence of a finish


async def test_a_throttled_outcome_is_written_again_not_run_again(clock):
    app = _app()
    async with app:
        handle = await app.enqueue("count", 7)
        with _refused(app, _fences, times=2) as refused:
            stats = await app.run_worker(burst=True)
        assert len(refused) == 2
        assert RUNS == [7] and stats.completed == 1 and stats.retried == 0
        assert await handle.status() == TaskStatus.COMPLETED.value


async def test_a_lease_too_short_to_wait_records_a_failed_attempt_as_before(clock):
    """With less than the margin left on the lease the outcome is not retried: the run counts
    as a failed attempt (the task has retries) rather than racing the reaper."""
    app = _app()
    async with app:
        handle = await app.enqueue("count", 8, max_retries=1, retry_delay=0)
        original = app.backend.task_queue.dequeue

        async def short_lease(*args, **kwargs):
            kwargs["visibility_timeout"] = OUTCOME_MARGIN_SECONDS / 2
            return await original(*args, **kwargs)

        app.backend.task_queue.dequeue = short_lease
        with _refused(app, _fences, times=1) as refused:
            stats = await app.run_worker(burst=True)
        assert len(refused) == 1
        assert RUNS == [8, 8] and stats.retried == 1 and stats.completed == 1
        assert await handle.status() == TaskStatus.COMPLETED.value


async def test_an_outcome_fenced_before_the_store_throttled_is_left_to_the_reaper(clock):
    """The fence (the settle record holding the result and events) landed; writing the
    finished record is what the store refuses: the run counts as completed, it is not tried
    again nor run again, its events are not written twice, and the reaper completes it."""
    app = _app()
    async with app:
        handle = await app.enqueue("count", 9)
        with _refused(app, lambda path, _: "/completed/" in path):
            stats = await app.run_worker(burst=True)
        assert RUNS == [9] and stats.completed == 1 and stats.lost == 0 and stats.retried == 0
        clock.advance(60)
        await app.backend.task_queue.requeue_expired()  # completes the settle
        assert await handle.status() == TaskStatus.COMPLETED.value
        assert await handle.result() == 9
        events = await app.backend.event_storage.get_events(task_id=handle.id)
        kinds = [e.event_type.value for e in events]
        assert kinds.count("started") == 1 and kinds.count("completed") == 1, kinds


async def test_a_retry_fenced_before_the_store_throttled_counts_as_retried(clock, caplog):
    """A failed run's requeue whose fence landed, the new payload refused: the retry is
    recorded (a reaper completes it), not reported as an outcome the worker could not write."""
    app = _app()
    async with app:
        handle = await app.enqueue("flaky", 3, max_retries=1, retry_delay=0)
        with _refused(app, lambda path, _: "/pending/" in path):
            stats = await app.run_worker(burst=True)
        assert stats.retried == 1 and stats.lost == 0
        assert "could not record its outcome" not in caplog.text
        clock.advance(60)
        queue = app.backend.task_queue
        await queue.requeue_expired()  # completes the requeue
        queue._indexes.clear()  # the listing and the idle rest are kept in real time
        queue._idle_until.clear()
        stats = await app.run_worker(burst=True)
        assert RUNS == [3, 3] and stats.completed == 1
        assert await handle.result() == 3
