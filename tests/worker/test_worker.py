"""Worker behaviour on every backend of the contract suite."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, OmniQ
from omniq.exceptions import (
    ConfigError,
    LeaseLostError,
    ResultTimeoutError,
    TaskFailedError,
    TaskNotRegisteredError,
    ValidationError,
)
from omniq.models._time import utcnow
from omniq.models.event import EventType
from omniq.models.result import ResultStatus
from omniq.models.task import Task, TaskStatus
from omniq.worker import Worker, backoff


@pytest.fixture
async def app(backend):
    a = AsyncOmniQ(backend)
    async with a:
        yield a


async def events_of(app, task_id):
    return [e.event_type for e in await app.backend.event_storage.get_events(task_id=task_id)]


async def test_task_runs_and_result_comes_back(app):
    @app.task
    def add(x, y):
        return x + y

    h = await add.delay(1, 2)
    stats = await app.run_worker(burst=True)
    assert stats.completed == 1
    assert await h.result(timeout=5) == 3
    assert await app.get_result(h.id, timeout=1) == 3
    task = await app.backend.task_queue.get_task(h.id)
    assert task.status is TaskStatus.COMPLETED and task.attempts == 1
    assert await events_of(app, h.id) == [
        EventType.ENQUEUED,
        EventType.STARTED,
        EventType.COMPLETED,
    ]


@pytest.mark.parametrize("kind", ["thread", "async"])
async def test_async_tasks_run_on_the_loop(app, kind):
    @app.task
    async def double(x):
        await asyncio.sleep(0.01)
        return 2 * x

    h = await app.enqueue(double, 21)
    await app.run_worker(burst=True, kind=kind)
    assert await h.result(timeout=5) == 42


async def test_async_kind_refuses_plain_functions(app):
    @app.task
    def plain():
        return 1

    h = await plain.delay()
    # Refused at start (issue 15: a worker's configuration never dead-letters a task).
    with pytest.raises(ConfigError, match="kind='async' runs only async def tasks"):
        await app.run_worker(burst=True, kind="async")
    assert await h.status() == "pending"


async def test_retries_with_backoff_then_success(app):
    calls = []

    @app.task(max_retries=3, retry_delay=0.01)
    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RuntimeError(f"fail {len(calls)}")
        return "ok"

    h = await flaky.delay()
    worker = app.worker(concurrency=1)
    runner = asyncio.create_task(worker.run())
    assert await h.result(timeout=10) == "ok"
    worker.stop()
    await runner
    assert len(calls) == 3 and worker.stats.retried == 2
    assert (await app.backend.task_queue.get_task(h.id)).attempts == 3
    kinds = await events_of(app, h.id)
    assert kinds.count(EventType.RETRIED) == 2 and kinds[-1] is EventType.COMPLETED


async def test_exhausted_retries_go_to_dead_letter_with_traceback(app):
    @app.task(max_retries=1, retry_delay=0.01)
    def broken():
        raise ValueError("bad input")

    h = await broken.delay()
    worker = app.worker()
    runner = asyncio.create_task(worker.run())
    with pytest.raises(TaskFailedError) as info:
        await h.result(timeout=10)
    worker.stop()
    await runner
    assert "ValueError: bad input" in str(info.value)
    assert "in broken" in info.value.remote_traceback
    assert "omniq/worker.py" not in info.value.remote_traceback
    task = await app.backend.task_queue.get_task(h.id)
    assert task.status is TaskStatus.FAILED and task.attempts == 2
    assert [t.id for t in await app.backend.task_queue.list_tasks(status="failed")] == [h.id]
    assert (await events_of(app, h.id))[-1] is EventType.FAILED


async def test_timeout_cancels_async_and_abandons_threads(app):
    @app.task(timeout=0.1)
    async def slow_async():
        await asyncio.sleep(10)

    @app.task(timeout=0.1)
    def slow_thread():
        time.sleep(0.5)

    ha, ht = await slow_async.delay(), await slow_thread.delay()
    t0 = time.monotonic()
    await app.run_worker(burst=True)
    assert time.monotonic() - t0 < 5
    for h in (ha, ht):
        with pytest.raises(TaskFailedError, match=r"timed out after 0\.1 s"):
            await h.result(timeout=1)


async def test_unregistered_function_fails_without_import(app):
    h = await app.enqueue_task(Task(func="os.system", args=("echo pwned",), max_retries=3))
    stats = await app.run_worker(burst=True)
    assert stats.failed == 1 and stats.retried == 0
    with pytest.raises(TaskFailedError, match="not registered"):
        await app.get_result(h.id, timeout=1)
    events = await app.backend.event_storage.get_events(task_id=h.id)
    assert events[-1].event_type is EventType.FAILED and "not registered" in events[-1].message


async def test_priorities_and_queue_order(app):
    order = []

    @app.task
    def record(tag):
        order.append(tag)

    await app.enqueue(record, "low", queue="default")
    await app.enqueue(record, "high-queue", queue="high")
    await app.enqueue(record, "urgent", queue="default", priority=9)
    await app.run_worker(queues=["high", "default"], concurrency=1, burst=True)
    assert order == ["high-queue", "urgent", "low"]


async def test_delayed_tasks_wait_and_do_not_hold_a_burst_worker(app, clock):
    @app.task
    def stamp():
        return utcnow().timestamp()

    h_later = await app.enqueue(stamp, eta=utcnow() + timedelta(hours=1))
    h_soon = await app.enqueue(stamp, delay=30)
    eta = (await app.backend.task_queue.get_task(h_soon.id)).eta.timestamp()
    stats = await app.run_worker(burst=True)
    assert stats.claimed == 0  # nothing runnable now
    clock.advance(31)
    worker = app.worker()
    runner = asyncio.create_task(worker.run())
    assert await h_soon.result(timeout=30) >= eta
    worker.stop()
    await runner
    assert (await app.backend.task_queue.get_task(h_later.id)).status is TaskStatus.PENDING


async def test_lease_is_renewed_while_a_task_runs_long(app):
    @app.task
    async def long_task():
        await asyncio.sleep(1.0)
        return "done"

    h = await long_task.delay()
    stats = await app.run_worker(burst=True, visibility_timeout=0.3)
    assert stats.completed == 1 and stats.lost == 0
    assert await h.result(timeout=1) == "done"
    assert EventType.LEASE_EXPIRED not in await events_of(app, h.id)


async def test_taken_over_worker_cannot_overwrite_new_owners_result(app):
    @app.task
    def value():
        return "new owner"

    h = await value.delay()
    queue = app.backend.task_queue
    stale = await queue.dequeue("default", visibility_timeout=0.05, worker_id="stale")
    await asyncio.sleep(0.1)
    [requeued] = await queue.requeue_expired()
    assert requeued.attempts == 1
    await app.run_worker(burst=True)  # the new owner runs it
    assert await h.result(timeout=1) == "new owner"
    stale_worker = app.worker(worker_id="stale")
    with pytest.raises(LeaseLostError):
        await stale_worker._succeed(stale, "stale result", 0.1)
    with pytest.raises(LeaseLostError):
        await stale_worker._fail(stale, RuntimeError("late failure"), permanent=True)
    result = await app.backend.result_storage.get(h.id)
    assert result.result == "new owner" and result.status is ResultStatus.SUCCESS
    assert (await queue.get_task(h.id)).status is TaskStatus.COMPLETED


async def test_graceful_stop_releases_unfinished_tasks(app):
    started = asyncio.Event()

    @app.task
    async def forever():
        started.set()
        await asyncio.sleep(60)

    h = await forever.delay()
    worker = app.worker(grace_period=0.2)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    stats = await asyncio.wait_for(runner, 5)
    assert stats.released == 1
    task = await app.backend.task_queue.get_task(h.id)
    assert task.status is TaskStatus.PENDING and task.attempts == 0  # not lost, not counted


async def test_stop_with_every_slot_busy(app):
    started = asyncio.Event()

    @app.task
    async def forever():
        started.set()
        await asyncio.sleep(60)

    h = await forever.delay()
    worker = app.worker(concurrency=1, grace_period=0.1)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    assert (await asyncio.wait_for(runner, 5)).released == 1
    assert (await app.backend.task_queue.get_task(h.id)).status is TaskStatus.PENDING


async def test_graceful_stop_waits_for_tasks_that_finish_in_time(app):
    started = asyncio.Event()

    @app.task
    async def short():
        started.set()  # a poll of the task's state could miss a 0.2 s run on a slow store
        await asyncio.sleep(0.2)
        return "finished"

    h = await short.delay()
    worker = app.worker(grace_period=5)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 120)
    worker.stop()
    await runner
    assert await h.result(timeout=1) == "finished"


async def test_killed_workers_task_is_redelivered(app):
    @app.task
    def work():
        return "second delivery"

    h = await work.delay()
    # A worker claims it and dies without a word (no finish, no renew).
    await app.backend.task_queue.dequeue("default", visibility_timeout=0.05, worker_id="dead")
    await asyncio.sleep(0.1)
    stats = await app.run_worker(burst=True)  # a burst worker reaps first
    assert stats.completed == 1
    assert await h.result(timeout=1) == "second delivery"
    assert (await app.backend.task_queue.get_task(h.id)).attempts == 2
    assert EventType.LEASE_EXPIRED in await events_of(app, h.id)


async def test_cancel_pending_task(app):
    @app.task
    def never():
        raise AssertionError("cancelled tasks do not run")

    h = await never.delay()
    assert await h.cancel() is True
    await app.run_worker(burst=True)
    with pytest.raises(TaskFailedError, match="cancelled"):
        await h.result(timeout=1)
    assert await h.status() == "cancelled"


async def test_result_timeout(app):
    @app.task
    def nothing():
        return None

    h = await nothing.delay()
    with pytest.raises(ResultTimeoutError):
        await h.result(timeout=0.05)


async def test_enqueue_options_override_decorator(app):
    @app.task(queue="q1", priority=1, max_retries=2)
    def f():
        return None

    h = await app.enqueue(f, queue="q2", priority=5, delay=10)
    task = await app.backend.task_queue.get_task(h.id)
    assert (task.queue_name, task.priority, task.max_retries) == ("q2", 5, 2)
    assert task.eta > utcnow() + timedelta(seconds=5)


async def test_bad_input(app):
    with pytest.raises(TaskNotRegisteredError):
        await app.enqueue(lambda: 1)
    with pytest.raises(ValidationError):
        app.task(queue="../x")(lambda: 1)
    with pytest.raises(ValidationError, match="stable task name"):
        app.task(lambda: 1)
    with pytest.raises(ValidationError):
        Worker(app, kind="fork")
    with pytest.raises(ValidationError):
        Worker(app, concurrency=0)
    with pytest.raises(ValidationError):
        Worker(app, queues=["ok", "bad/name"])

    @app.task
    def f(x):
        return x

    from omniq.exceptions import SerializationError

    with pytest.raises(SerializationError):
        await f.delay(object())

    def other(x):
        return x

    other.__qualname__ = f.__qualname__
    with pytest.raises(ValidationError, match="already registered"):
        app.task(other)


def test_backoff_grows_with_jitter():
    waits = [backoff(1.0, a) for a in (1, 2, 3, 4)]
    assert 0.5 <= waits[0] <= 1.0 and 4.0 <= waits[3] <= 8.0
    assert backoff(1.0, 100) <= 3600


def test_sync_app_api(tmp_path: Path):
    app = OmniQ(str(tmp_path / "data"))

    @app.task(queue="default", max_retries=3, retry_delay=1.0, timeout=30, priority=0)
    def add(x, y):
        return x + y

    h = add.delay(1, 2)
    h2 = app.enqueue(add, 1, 2, priority=9)
    assert isinstance(h.id, str)
    app.run_worker(queues=["high", "default"], concurrency=4, kind="thread",
                   visibility_timeout=60, burst=True)  # fmt: skip
    assert h.result(timeout=10) == 3
    assert app.get_result(h2.id, timeout=10) == 3
    assert add(2, 2) == 4  # calling the function runs it here


def test_sync_app_worker_in_a_thread_can_be_stopped(tmp_path: Path):
    app = OmniQ(str(tmp_path / "data"))

    @app.task
    def add(x, y):
        return x + y

    worker = app.wrapped.worker()
    from omniq.sync import run_sync

    thread = threading.Thread(target=lambda: run_sync(worker.run()))
    thread.start()
    assert add.delay(2, 3).result(timeout=10) == 5
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()


async def test_poison_task_dead_lettered_by_reaper_fails_its_waiter(backend_factory):
    b = backend_factory(max_deliveries=1)
    async with AsyncOmniQ(b) as app:

        @app.task
        def killer():
            return "never finishes in this test"

        h = await killer.delay()
        await app.backend.task_queue.dequeue("default", visibility_timeout=0.01, worker_id="w1")
        await asyncio.sleep(0.05)
        await app.run_worker(burst=True)  # reaps: the lease expired max_deliveries times
        with pytest.raises(TaskFailedError, match="dead letter"):
            await h.result(timeout=1)
        assert (await events_of(app, h.id))[-1] is EventType.FAILED


def _hold_finishes(queue) -> tuple[asyncio.Event, list[str]]:
    """Make ``queue``'s finishes wait until the event returned is set; the list returned
    names the tasks whose finish has started."""
    finish = queue.finish_task
    release = asyncio.Event()
    finishing: list[str] = []

    async def held_finish(task, *args, **kwargs):
        finishing.append(task.id)
        await release.wait()
        return await finish(task, *args, **kwargs)

    queue.finish_task = held_finish
    return release, finishing


async def test_a_slot_takes_the_next_task_while_the_outcome_is_written(app):
    """A slot is free once its function returns: the next claim overlaps the finish (on a
    bucket both take round trips), and at most ``concurrency`` outcomes are written at once."""
    queue = app.backend.task_queue
    release, finishing = _hold_finishes(queue)
    ran: list[int] = []

    @app.task
    async def step(n):
        ran.append(n)
        return n

    handles = [await step.delay(n) for n in range(3)]
    worker = app.worker(concurrency=1, kind="async")
    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(3000):  # two functions ran; two outcomes wait to be written
            if len(ran) == 2 and len(finishing) == 2:
                break
            await asyncio.sleep(0.01)
        assert ran == [0, 1] and len(finishing) == 2
        await asyncio.sleep(0.3)  # the third is not claimed: two outcomes are in flight
        assert ran == [0, 1]
        assert (await queue.get_task(handles[2].id)).status is TaskStatus.PENDING
        release.set()
        assert [await h.result(timeout=60) for h in handles] == [0, 1, 2]
    finally:
        release.set()
        worker.stop()
        await asyncio.wait_for(runner, 60)
    assert worker.stats.completed == 3


async def test_a_failing_start_up_reap_is_logged_and_the_worker_stops_cleanly(app, caplog):
    """A long-running worker reaps beside its claims: whatever goes wrong there is logged at
    once, claiming goes on, and the stop shuts down the scheduler and the pool as usual."""

    async def broken_reap():
        raise RuntimeError("reap broke")

    app.backend.task_queue.reap_at_start = broken_reap

    @app.task
    async def one():
        return 1

    h = await one.delay()
    worker = app.worker(kind="async")
    runner = asyncio.create_task(worker.run())
    assert await h.result(timeout=30) == 1
    assert "start-up reaping failed" in caplog.text and "reap broke" in caplog.text
    worker.stop()
    stats = await asyncio.wait_for(runner, 30)
    assert stats.completed == 1
    assert worker.scheduler is not None and worker._threads is not None
    assert worker._threads._closed


async def test_while_the_store_throttles_a_slot_waits_for_its_outcome(app, monkeypatch):
    """Overlapping claims with outcome writes adds writes to a throttled store: once the store
    has answered "slow down", a slot waits for its outcome again (tasks ran twice without)."""
    objects = getattr(app.backend, "objects", None)
    if objects is None:
        pytest.skip("SQLite has no object store that throttles")
    seen = [0]
    monkeypatch.setattr(type(objects), "throttled", property(lambda self: seen[0]))
    queue = app.backend.task_queue
    release, finishing = _hold_finishes(queue)
    ran: list[int] = []

    go = asyncio.Event()

    @app.task
    async def step(n):
        ran.append(n)
        await go.wait()
        return n

    handles = [await step.delay(n) for n in range(2)]
    seen[0] = 3  # retried before the worker started: not news to it
    worker = app.worker(concurrency=1, kind="async")
    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(3000):
            if ran:
                break
            await asyncio.sleep(0.01)
        seen[0] += 1  # a 503 while the first task runs
        go.set()
        for _ in range(3000):
            if finishing:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert ran == [0] and len(finishing) == 1  # the next claim waits for the outcome
        release.set()
        assert [await h.result(timeout=60) for h in handles] == [0, 1]
    finally:
        go.set()
        release.set()
        worker.stop()
        await asyncio.wait_for(runner, 60)


async def test_a_task_claimed_again_at_once_keeps_each_attempt_s_events_apart(app):
    """A slot takes its next task while the last outcome is written: a task retried at once can
    be claimed again here meanwhile, and each attempt's buffered events stay its own."""
    batches: list[list[tuple[EventType, int]]] = []
    log = app.backend.event_storage.log_events

    async def slow_log(events):
        batches.append([(e.event_type, e.attempt) for e in events])
        await asyncio.sleep(0.2)  # the retry is claimed and started meanwhile
        return await log(events)

    app.backend.event_storage.log_events = slow_log
    calls: list[int] = []

    @app.task(max_retries=1, retry_delay=0)
    async def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first attempt")
        await asyncio.sleep(0.5)  # still running when the first attempt's runner ends
        return "second"

    h = await flaky.delay()
    worker = app.worker(concurrency=1, kind="async")
    runner = asyncio.create_task(worker.run())
    try:
        assert await h.result(timeout=30) == "second"
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)
    batches = [b for b in batches if b != [(EventType.ENQUEUED, None)]]  # SQLite logs it
    # The second attempt's "started" goes with its finished record, not in a write of its own
    # made by the first attempt's runner.
    assert batches == [[(EventType.STARTED, 1), (EventType.RETRIED, 1)]], batches
    kinds = await events_of(app, h.id)
    assert kinds.count(EventType.STARTED) == 2 and EventType.RETRIED in kinds, kinds


async def test_a_task_ending_during_a_heartbeat_s_event_write_keeps_its_started_event(app):
    """The heartbeat writes a long task's buffered "started"; a task that ends meanwhile waits
    for that write instead of cancelling it half-way (which lost the event)."""
    flushing = asyncio.Event()
    log = app.backend.event_storage.log_events

    async def slow_log(events):
        if any(e.event_type is EventType.STARTED for e in events):
            flushing.set()
            await asyncio.sleep(0.3)  # one round trip to a bucket, say
        return await log(events)

    app.backend.event_storage.log_events = slow_log

    @app.task
    async def job():
        await asyncio.wait_for(flushing.wait(), 30)  # ends while the heartbeat writes
        return 1

    h = await job.delay()
    worker = app.worker(concurrency=1, kind="async", visibility_timeout=3)
    runner = asyncio.create_task(worker.run())
    try:
        assert await h.result(timeout=60) == 1
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 60)
    assert EventType.STARTED in await events_of(app, h.id)


async def _until_cancelled(worker) -> None:
    """Wait until the worker's shutdown has cancelled its task runners (Python 3.10 has no
    ``Task.cancelling``: there, past the claim loop's 0.5-s wait with a margin)."""
    if sys.version_info < (3, 11):
        await asyncio.sleep(3.0)
        return
    for _ in range(3000):
        if any(runner.cancelling() for runner in worker._running):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the stop cancelled no runner")


async def _stopped_mid_renewal(app, started: asyncio.Event, go_on: asyncio.Event) -> None:
    """Run a task that returns once a renewal is under way (``started``), force a stop while
    its runner waits for that renewal, let the renewal go on (``go_on``) once the stop has
    cancelled the runner, and check that the task went back to its queue."""

    @app.task
    async def job():
        await asyncio.wait_for(started.wait(), 30)
        return 1

    h = await job.delay()
    worker = app.worker(concurrency=1, kind="async", visibility_timeout=3)
    runner = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 30)
        for _ in range(3000):  # the function returned: its runner waits for the renewal
            if not worker._executing:
                break
            await asyncio.sleep(0.01)
        worker.stop(force=True)
        await _until_cancelled(worker)
        go_on.set()  # the stop waits for the renewal in flight, then gives the task back
        stats = await asyncio.wait_for(runner, 60)
    finally:
        go_on.set()
    assert stats.released == 1
    assert (await app.backend.task_queue.get_task(h.id)).status is TaskStatus.PENDING


async def test_a_stop_while_a_renewal_holds_the_lease_gives_the_task_back(app):
    """A task whose function returned while its lease was being renewed, then a forced stop:
    the heartbeat ends and the task goes back to its queue (it stayed running, its lease still
    renewed by an orphaned heartbeat)."""
    queue = app.backend.task_queue
    renew = queue.renew_lease
    renewing, renewed = asyncio.Event(), asyncio.Event()

    async def slow_renew(task, *args, **kwargs):
        renewing.set()
        await renewed.wait()  # a throttled renewal
        return await renew(task, *args, **kwargs)

    queue.renew_lease = slow_renew
    await _stopped_mid_renewal(app, renewing, renewed)


async def test_a_stop_while_a_renewal_s_answer_is_on_its_way_gives_the_task_back(app):
    """The renewal reached the store (a new lease version) and its answer is on its way when a
    forced stop comes: cancelling the heartbeat then left the task's version stale, the release
    was refused as a lost lease, and the task stayed running. The stop waits for the answer."""
    queue = app.backend.task_queue
    objects = getattr(queue, "_objects", None)
    if objects is None:
        pytest.skip("SQLite fences by the lease token, which a renewal keeps")
    swap = "replace" if hasattr(queue, "_swap") else "move"  # buckets CAS, directories rename
    write = getattr(objects, swap)
    landed, answered = asyncio.Event(), asyncio.Event()
    renewing = [False]

    async def slow_answer(*args, **kwargs):
        result = await write(*args, **kwargs)
        if renewing[0]:
            landed.set()
            await answered.wait()
        return result

    setattr(objects, swap, slow_answer)
    renew = queue.renew_lease

    async def marked_renew(task, *args, **kwargs):
        renewing[0] = True
        try:
            return await renew(task, *args, **kwargs)
        finally:
            renewing[0] = False

    queue.renew_lease = marked_renew
    await _stopped_mid_renewal(app, landed, answered)
