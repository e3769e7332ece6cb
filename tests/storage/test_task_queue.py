"""Task queue contract: runs on every backend in conftest.BACKENDS."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone

import pytest

from conftest import CLAIM_BACKENDS, backend_param
from omniq.exceptions import LeaseLostError, SerializationError, StorageError, ValidationError
from omniq.models._time import utcnow
from omniq.models.task import Task, TaskStatus


@pytest.fixture(params=CLAIM_BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """This contract runs on SeaweedFS as well (a second real S3 server)."""
    return backend_param(request)


async def test_enqueue_dequeue_roundtrip(backend):
    q = backend.get_task_queue()
    task = Task(func="my_function", args=(1, 2, 3), kwargs={"k": "v"}, queue_name="default")
    assert await q.enqueue(task) == task.id
    got = await q.dequeue(["default"])
    assert got is not None
    assert (got.id, got.func, got.args, got.kwargs) == (
        task.id,
        "my_function",
        (1, 2, 3),
        {"k": "v"},
    )
    assert got.status is TaskStatus.RUNNING
    assert got.attempts == 1
    assert got.lease is not None and got.lease.expires_at > utcnow()
    assert await q.dequeue(["default"]) is None


async def test_dequeue_empty_and_unknown_queue_return_none(backend):
    q = backend.get_task_queue()
    assert await q.dequeue(["default"]) is None
    assert await q.dequeue(["never-used", "other"]) is None


async def test_priority_then_due_then_fifo(backend):
    q = backend.get_task_queue()
    low = [Task(func="f", args=(i,), priority=0) for i in range(3)]
    high = Task(func="f", args=("high",), priority=9)
    neg = Task(func="f", args=("neg",), priority=-5)
    for t in [neg, *low, high]:
        await q.enqueue(t)
    order = []
    while (t := await q.dequeue("default")) is not None:
        order.append(t.args[0])
    assert order == ["high", 0, 1, 2, "neg"]


async def test_queues_tried_in_given_order(backend):
    q = backend.get_task_queue()
    await q.enqueue(Task(func="f", queue_name="low"))
    await q.enqueue(Task(func="f", queue_name="high"))
    first = await q.dequeue(["high", "low"])
    second = await q.dequeue(["high", "low"])
    assert (first.queue_name, second.queue_name) == ("high", "low")


async def test_delayed_task_not_claimed_before_eta(backend, clock):
    q = backend.get_task_queue()
    later = Task(func="later", eta=utcnow() + timedelta(hours=1), priority=5)
    delayed = Task(func="soon", delay=30)
    now = Task(func="now")
    for t in (later, delayed, now):
        await q.enqueue(t)
    assert (await q.dequeue("default")).func == "now"
    assert await q.dequeue("default") is None  # 'soon' not yet due, 'later' far off
    clock.advance(29.9)
    assert await q.dequeue("default") is None
    clock.advance(0.2)
    got = await q.dequeue("default", timeout=5)
    assert got is not None and got.func == "soon"
    assert await q.dequeue("default") is None
    assert await q.get_queue_size("default") == 1


async def test_dequeue_timeout_waits_for_new_work(backend):
    q = backend.get_task_queue()

    async def producer():
        await asyncio.sleep(0.2)
        await q.enqueue(Task(func="late"))

    prod = asyncio.create_task(producer())
    got = await q.dequeue(["default"], timeout=5)
    await prod
    assert got is not None and got.func == "late"


async def test_dequeue_timeout_returns_none_when_idle(backend):
    q = backend.get_task_queue()
    assert await q.dequeue(["default"], timeout=0.1) is None


async def test_other_consumers_enqueues_become_visible(backend_factory):
    """Two backend instances on one store: B sees what A enqueued after B cached a listing."""
    a = backend_factory()
    b = a if getattr(a, "protocol", None) == "memory" else backend_factory()
    async with a, b:
        qa, qb = a.get_task_queue(), b.get_task_queue()
        await qa.enqueue(Task(func="first"))
        assert (await qb.dequeue("default")).func == "first"
        await qa.enqueue(Task(func="second"))
        assert (await qb.dequeue("default")).func == "second"


async def test_get_task_in_every_state(backend):
    q = backend.get_task_queue()
    t = Task(func="f")
    await q.enqueue(t)
    assert (await q.get_task(t.id)).status is TaskStatus.PENDING
    claimed = await q.dequeue("default")
    running = await q.get_task(t.id)
    assert running.status is TaskStatus.RUNNING and running.attempts == 1
    await q.finish_task(claimed)
    done = await q.get_task(t.id)
    assert done.status is TaskStatus.COMPLETED and done.completed_at is not None
    assert await q.get_task("no_such_task") is None


async def test_list_tasks_filters(backend):
    q = backend.get_task_queue()
    for i in range(3):
        await q.enqueue(Task(func="f", args=(i,)))
    await q.enqueue(Task(func="g", queue_name="other"))
    claimed = await q.dequeue("default")
    await q.finish_task(claimed, TaskStatus.FAILED, error="boom")
    assert len(await q.list_tasks()) == 4
    assert len(await q.list_tasks(queue_name="default")) == 3
    assert [t.func for t in await q.list_tasks(queue_name="other")] == ["g"]
    failed = await q.list_tasks(status=TaskStatus.FAILED)
    assert len(failed) == 1 and failed[0].error == "boom"
    assert len(await q.list_tasks(status="pending")) == 3
    assert len(await q.list_tasks(limit=2)) == 2
    assert await q.list_queues() == ["default", "other"]


async def test_update_task_moves_between_states(backend):
    q = backend.get_task_queue()
    t = Task(func="f")
    await q.enqueue(t)
    t.priority = 7
    t.metadata = {"note": "changed"}
    await q.update_task(t)
    stored = await q.get_task(t.id)
    assert stored.priority == 7 and stored.metadata == {"note": "changed"}
    t.status = TaskStatus.RUNNING
    await q.update_task(t)
    assert (await q.get_task(t.id)).status is TaskStatus.RUNNING
    assert await q.dequeue("default") is None
    t.status = TaskStatus.CANCELLED
    await q.update_task(t)
    assert (await q.get_task(t.id)).status is TaskStatus.CANCELLED
    assert len(await q.list_tasks()) == 1


async def test_update_task_validates_what_it_is_handed(backend):
    """Fields set after construction are checked and normalized when the task is stored."""
    q = backend.get_task_queue()
    t = Task(func="f")
    await q.enqueue(t)
    t.priority = 10**6
    with pytest.raises(ValidationError, match="priority"):
        await q.update_task(t)
    t.priority = 0
    t.eta = datetime(2030, 1, 1, 12, 0)  # naive: local time
    await q.update_task(t)
    stored = await q.get_task(t.id)
    assert stored.priority == 0 and stored.eta == t.eta.astimezone(timezone.utc)


async def test_update_unknown_task_raises(backend):
    from omniq.exceptions import TaskNotFoundError

    with pytest.raises(TaskNotFoundError):
        await backend.get_task_queue().update_task(Task(func="ghost"))


async def test_cancel_pending_only(backend):
    q = backend.get_task_queue()
    a, b = Task(func="a"), Task(func="b")
    await q.enqueue(a)
    await q.enqueue(b)
    assert await q.cancel_task(a.id) is True
    assert (await q.get_task(a.id)).status is TaskStatus.CANCELLED
    claimed = await q.dequeue("default")
    assert claimed.id == b.id
    assert await q.cancel_task(b.id) is False  # running
    assert await q.cancel_task(a.id) is False  # already cancelled


async def test_delete_finished_only(backend):
    q = backend.get_task_queue()
    pending, done = Task(func="a"), Task(func="b", queue_name="other")
    await q.enqueue(done)
    await q.enqueue(pending)
    claimed = await q.dequeue("other")
    assert await q.delete_task(claimed.id) is False  # running: a worker holds it
    await q.finish_task(claimed, TaskStatus.COMPLETED)
    assert await q.delete_task(pending.id) is False  # pending: cancel it first
    assert await q.delete_task(done.id) is True
    assert await q.get_task(done.id) is None
    assert await q.delete_task(done.id) is False
    assert [t.id for t in await q.list_tasks()] == [pending.id]
    with pytest.raises(ValidationError):
        await q.delete_task("../escape")


async def test_queue_size_counts_pending(backend):
    q = backend.get_task_queue()
    for _ in range(5):
        await q.enqueue(Task(func="f"))
    assert await q.get_queue_size("default") == 5
    await q.dequeue("default")
    assert await q.get_queue_size("default") == 4
    assert await q.get_queue_size("empty") == 0


async def test_renew_extends_and_finish_is_fenced(backend):
    q = backend.get_task_queue()
    await q.enqueue(Task(func="f"))
    t = await q.dequeue("default", visibility_timeout=30)
    before = t.lease.expires_at
    await asyncio.sleep(0.01)
    await q.renew_lease(t, visibility_timeout=120)
    assert t.lease.expires_at > before + timedelta(seconds=60)
    done = await q.finish_task(t)
    assert done.status is TaskStatus.COMPLETED
    with pytest.raises(LeaseLostError):
        await q.finish_task(t)


async def test_expired_lease_is_redelivered_with_attempts_raised(backend):
    q = backend.get_task_queue()
    task = Task(func="f", max_retries=0)
    await q.enqueue(task)
    first = await q.dequeue("default", visibility_timeout=0.05)
    assert first.attempts == 1
    await asyncio.sleep(0.1)
    requeued = await q.requeue_expired()
    assert [t.id for t in requeued] == [task.id]
    assert requeued[0].error.startswith("lease expired")
    second = await q.dequeue("default")
    assert second.id == task.id and second.attempts == 2
    # The first holder's lease was taken over: it can neither renew nor finish.
    with pytest.raises(LeaseLostError):
        await q.renew_lease(first)
    with pytest.raises(LeaseLostError):
        await q.finish_task(first)
    with pytest.raises(LeaseLostError):
        await q.requeue_task(first)
    done = await q.finish_task(second)
    assert done.attempts == 2
    assert (await q.get_task(task.id)).status is TaskStatus.COMPLETED


async def test_dequeue_reaps_expired_leases_itself(backend_factory):
    b = backend_factory(reap_interval=0.01)
    async with b:
        q = b.get_task_queue()
        await q.enqueue(Task(func="f"))
        await q.dequeue("default", visibility_timeout=0.05)
        await asyncio.sleep(0.1)
        again = await q.dequeue("default", timeout=2)
        assert again is not None and again.attempts == 2


async def test_live_lease_is_not_reaped(backend):
    q = backend.get_task_queue()
    await q.enqueue(Task(func="f"))
    t = await q.dequeue("default", visibility_timeout=60)
    assert await q.requeue_expired() == []
    assert (await q.finish_task(t)).status is TaskStatus.COMPLETED


async def test_poison_task_goes_to_dead_letter_after_max_deliveries(backend_factory):
    b = backend_factory(max_deliveries=2)
    async with b:
        q = b.get_task_queue()
        t = Task(func="f")
        await q.enqueue(t)
        await q.dequeue("default", visibility_timeout=0.01)
        await asyncio.sleep(0.03)
        assert len(await q.requeue_expired()) == 1
        await q.dequeue("default", visibility_timeout=0.01)
        await asyncio.sleep(0.03)
        [dead] = await q.requeue_expired()
        assert dead.status is TaskStatus.FAILED
        stored = await q.get_task(t.id)
        assert stored.status is TaskStatus.FAILED and "dead letter" in stored.error


class _Killed(BaseException):
    """A reaper's process dying at the moment it reports a recovery."""


async def _reap_and_fail(q, failure: BaseException) -> None:
    report = q.on_lease_expired

    async def fail(task: Task) -> None:
        raise failure

    q.on_lease_expired = fail
    try:
        if isinstance(failure, _Killed):
            with pytest.raises(_Killed):
                await q.requeue_expired()
        else:  # logged per task; the recovery stops where it is
            assert await q.requeue_expired() == []
    finally:
        q.on_lease_expired = report


@pytest.mark.parametrize("failure", ["killed", "unwritable"])
@pytest.mark.parametrize("max_deliveries", [20, 1], ids=["requeued", "dead-lettered"])
async def test_a_reaper_that_dies_before_its_report_leaves_the_recovery_to_the_next(
    backend_kind, backend_factory, clock, max_deliveries, failure
):
    """A lease expiry is reported (its event; a dead task's result) at least once: a reaper
    killed before it wrote the report, or whose report could not be written, leaves the task
    held, and the next reaper recovers it and reports it. Before, the task moved on first and
    its re-delivery had no such event."""
    if backend_kind == "sqlite":
        pytest.skip("SQLite writes the report in the reaping transaction (no hook to die in)")
    b = backend_factory(max_deliveries=max_deliveries)
    async with b:
        q = b.get_task_queue()
        task = Task(func="f")
        await q.enqueue(task)
        await q.dequeue("default", visibility_timeout=5)
        clock.advance(6)
        error = _Killed() if failure == "killed" else StorageError("cannot write (full)", "x")
        await _reap_and_fail(q, error)
        assert await q.dequeue("default") is None  # the dead reaper holds it
        assert (
            await b.get_event_storage().get_events(task_id=task.id, event_type="lease_expired")
            == []
        )
        clock.advance(61)  # the reaper's own lease (visibility_timeout) runs out
        [recovered] = await q.requeue_expired()
        assert recovered.attempts == 1  # the lost delivery counted once
        kinds = [
            e.event_type.value for e in await b.get_event_storage().get_events(task_id=task.id)
        ]
        if max_deliveries == 1:
            assert kinds[-1] == "failed"
            result = await b.get_result_storage().get(task.id)
            assert result is not None and not result.is_success
            assert (await q.get_task(task.id)).status is TaskStatus.FAILED
        else:
            assert kinds.count("lease_expired") == 1
            again = await q.dequeue("default")
            assert again.id == task.id and again.attempts == 2


async def test_requeue_task_with_eta(backend, clock):
    q = backend.get_task_queue()
    await q.enqueue(Task(func="f", max_retries=2))
    t = await q.dequeue("default")
    back = await q.requeue_task(t, eta=utcnow() + timedelta(seconds=30), error="try again")
    assert back.status is TaskStatus.PENDING and back.attempts == 1
    assert await q.dequeue("default") is None
    clock.advance(31)
    again = await q.dequeue("default", timeout=5)
    assert again.id == t.id and again.attempts == 2 and again.error == "try again"


async def test_finish_requires_final_status(backend):
    q = backend.get_task_queue()
    await q.enqueue(Task(func="f"))
    t = await q.dequeue("default")
    with pytest.raises(ValidationError):
        await q.finish_task(t, TaskStatus.PENDING)


async def test_finish_without_lease_is_refused(backend):
    with pytest.raises(LeaseLostError):
        await backend.get_task_queue().finish_task(Task(func="never-claimed"))


async def test_unserializable_args_fail_before_writing(backend):
    q = backend.get_task_queue()
    with pytest.raises(SerializationError):
        await q.enqueue(Task(func="f", args=(object(),)))
    assert await q.list_tasks() == []


@pytest.mark.parametrize("bad", ["../evil", "a/b", "/abs", ".hidden", "", "nul\x00", "x" * 200])
async def test_bad_queue_names_rejected(backend, bad):
    q = backend.get_task_queue()
    with pytest.raises(ValidationError):
        await q.dequeue([bad])
    with pytest.raises(ValidationError):
        await q.get_queue_size(bad)
    with pytest.raises(ValidationError):
        Task(func="f", queue_name=bad)


@pytest.mark.parametrize("bad", ["../x", "a/b", "a.b", "", "x\x00"])
async def test_bad_task_ids_rejected(backend, bad):
    q = backend.get_task_queue()
    with pytest.raises(ValidationError):
        await q.get_task(bad)
    with pytest.raises(ValidationError):
        await q.cancel_task(bad)


async def test_bad_dequeue_arguments(backend):
    q = backend.get_task_queue()
    await q.enqueue(Task(func="f"))
    claimed = await q.dequeue("default")
    with pytest.raises(ValidationError):
        await q.renew_lease(claimed, visibility_timeout=-5)
    with pytest.raises(ValidationError):
        await q.dequeue(["default"], visibility_timeout=-1)
    with pytest.raises(ValidationError):
        await q.dequeue(["default"], worker_id="bad/worker")
    with pytest.raises(ValidationError):
        await q.dequeue([])
    with pytest.raises(ValidationError):
        await q.dequeue(["default"], timeout=-1)
    with pytest.raises(ValidationError):
        await q.enqueue("not a task")  # type: ignore[arg-type]


async def test_cleanup_expired_tasks(backend):
    q = backend.get_task_queue()
    keep, drop = Task(func="keep"), Task(func="drop", ttl=0)
    for t in (keep, drop):
        await q.enqueue(t)
    for _ in range(2):
        await q.finish_task(await q.dequeue("default"))
    assert await q.cleanup_expired_tasks() == 1
    assert await q.get_task(drop.id) is None
    assert await q.get_task(keep.id) is not None


async def test_default_task_ttl_from_config(backend_factory):
    b = backend_factory(task_ttl=0)
    async with b:
        q = b.get_task_queue()
        await q.enqueue(Task(func="f"))
        await q.finish_task(await q.dequeue("default"))
        counts = await b.cleanup_expired()
        assert (counts["tasks"], counts["results"], counts["events"]) == (1, 0, 0)


async def test_enqueue_finished_task_keeps_its_state(backend):
    """Migration copies tasks in any state: enqueue files them where their status says."""
    q = backend.get_task_queue()
    done = Task(func="f", status=TaskStatus.COMPLETED)
    running = Task(func="g", status=TaskStatus.RUNNING)
    await q.enqueue(done)
    await q.enqueue(running)
    assert (await q.get_task(done.id)).status is TaskStatus.COMPLETED
    assert (await q.get_task(running.id)).status is TaskStatus.PENDING  # no lease here: redeliver


def _listing_pair(backend_factory, monkeypatch, *, head_names: int, head_page: int):
    """A producer and a consumer on one object store, the consumer listing ``head_names`` due
    names in pages of ``head_page``; skips on stores that claim by rename."""
    from omniq.storage.file.lease_queue import LeaseTaskQueue

    producer = backend_factory()
    if not isinstance(producer.task_queue, LeaseTaskQueue):
        pytest.skip("rename stores list a directory in one call")
    monkeypatch.setattr(LeaseTaskQueue, "HEAD_NAMES", head_names)
    monkeypatch.setattr(LeaseTaskQueue, "HEAD_PAGE", head_page)
    return producer, backend_factory()


@pytest.mark.file_layout("object-store listings")
async def test_object_stores_list_only_the_head_of_a_long_queue(backend_factory, monkeypatch):
    """On object stores a listing costs a request per page: a consumer lists pages in queue
    order only until it has enough due names, jumps over the delayed tail of a priority where
    the store can start a listing after a name, and still keeps the order."""
    producer, consumer = _listing_pair(backend_factory, monkeypatch, head_names=3, head_page=5)
    async with producer, consumer:
        ids = [await producer.task_queue.enqueue(Task(func="f", args=(i,))) for i in range(20)]
        delayed = [  # 40 sort before the due tasks (a higher priority), 10 after
            await producer.task_queue.enqueue(Task(func="later", priority=p, delay=3600))
            for p in [5] * 40 + [-5] * 10
        ]
        consumer.objects.requests.clear()
        got = []
        while (task := await consumer.task_queue.dequeue("default")) is not None:
            await consumer.task_queue.finish_task(task)
            got.append(task.id)
        assert got == ids  # the delayed high-priority names did not hide the due tasks
        lists = consumer.objects.requests["list"]
        if consumer.objects.seeks:
            # ~8 refreshes of running/ + the first delayed page + a page from past it. Paging
            # through all 70 names would cost 1 + 14 requests a refresh, over 100 in all.
            assert lists <= 40, consumer.objects.requests
        else:  # Azure pages through the 40 delayed names each time: correct, dearer
            assert lists <= 140, consumer.objects.requests
        assert await consumer.task_queue.get_queue_size("default") == len(delayed)


@pytest.mark.file_layout("object-store claims")
async def test_a_consumer_whose_tries_fail_looks_at_the_lease_before_claiming(
    backend_factory, monkeypatch
):
    """After failed tries a consumer reads a name's lease first: a name another consumer
    holds is skipped with one read and no write (no refused create); a free one is claimed."""
    from omniq.storage.file.lease_queue import LeaseTaskQueue

    producer, consumer = backend_factory(), backend_factory()
    if not isinstance(consumer.task_queue, LeaseTaskQueue):
        pytest.skip("rename stores claim by a rename: there is no lease to look at")
    async with producer, consumer:
        ids = [await producer.task_queue.enqueue(Task(func="f", args=(i,))) for i in range(2)]
        q = consumer.task_queue
        await q._fresh_index("default")  # lists both names
        held = await producer.task_queue.dequeue("default")  # takes the first under its eyes
        assert held is not None and held.id == ids[0]
        q._failing["default"] = 1.0  # its recent tries at the queue failed
        puts = consumer.objects.requests["put"]
        downloads: list[str] = []
        download = consumer.objects._get

        async def counted(path: str):
            downloads.append(path)
            return await download(path)

        monkeypatch.setattr(consumer.objects, "_get", counted)
        got = await q.dequeue("default")
        assert got is not None and got.id == ids[1]
        assert q.claim_stats["seen taken"] == 1 and q.claim_stats["lost"] == 0
        assert q.claim_stats["looked"] == 2  # the taken name, then the free one
        assert consumer.objects.requests["put"] - puts == 1  # the one lease created
        # A look asks whether the lease is there (HEAD, properties, metadata), never for its
        # bytes: a lease under a settle record carries the task's result.
        assert not [path for path in downloads if "/running/" in path], downloads


def _listed_ids(index) -> list[str]:
    return [name.split("-")[-1].split(".")[0] for name in index.names()]


async def _refresh(backend, where: str = "default") -> tuple[list[str], int]:
    """A consumer's fresh listing of ``where``: the task ids in it, and the LISTs it took."""
    before = backend.objects.requests["list"]
    index = await backend.task_queue._fresh_index(where)
    return _listed_ids(index), backend.objects.requests["list"] - before


@pytest.mark.file_layout("object-store listings")
async def test_object_stores_list_a_short_queue_in_one_request(backend_factory, monkeypatch):
    """A short queue's payloads and leases come in one listing where the store can start a
    listing after a name (they are sibling folders), once a listing the long way (the head of
    pending/, running/ beside it) found them short; a queue whose payloads fill a page is
    listed the long way again until it is short. A delayed task does not keep it long."""
    producer, consumer = _listing_pair(backend_factory, monkeypatch, head_names=5, head_page=10)
    async with producer, consumer:
        ids = [await producer.task_queue.enqueue(Task(func="f", args=(i,))) for i in range(3)]
        held = await producer.task_queue.dequeue("default")  # a lease the listing must show
        waiting = [i for i in ids if i != held.id]
        later = await producer.task_queue.enqueue(Task(func="f", delay=3600))
        if not consumer.objects.seeks:  # Azure cannot start a listing after a name
            for _ in range(2):  # always the long way
                assert await _refresh(consumer) == ([*waiting, later], 2)
            return
        # The long way first: a page of pending/ (it jumps past the delayed name), running/.
        assert await _refresh(consumer) == ([*waiting, later], 3)
        assert await _refresh(consumer) == ([*waiting, later], 1)
        more = [await producer.task_queue.enqueue(Task(func="f")) for _ in range(10)]
        names, lists = await _refresh(consumer)  # the payloads fill the page: long again
        assert names[:2] == waiting and lists == 3  # the short try, a page of pending/, running/
        names, lists = await _refresh(consumer)
        assert lists == 2 and len(names) == 9  # a page of payloads, one of them leased
        for task_id in more:
            await producer.task_queue.cancel_task(task_id)
        await _refresh(consumer)  # the long way finds it short again
        assert await _refresh(consumer) == ([*waiting, later], 1)


@pytest.mark.file_layout("object-store listings")
async def test_a_quiet_short_queue_costs_one_listing_when_woken(backend_factory, monkeypatch):
    """A queue that went quiet is checked with a one-name listing before the full refresh;
    where one listing brings payloads and leases together, that check is the refresh."""
    producer, consumer = _listing_pair(backend_factory, monkeypatch, head_names=5, head_page=10)
    async with producer, consumer:
        if not consumer.objects.seeks:
            pytest.skip("Azure lists the long way: the one-name check saves a listing there")
        await _refresh(consumer)  # the long way finds the (empty) queue short
        consumer.task_queue._quiet.add("default")  # found empty and rested, say
        task_id = await producer.task_queue.enqueue(Task(func="f"))
        assert await _refresh(consumer) == ([task_id], 1)


@pytest.mark.file_layout("object-store listings")
@pytest.mark.parametrize("stray", ["running-old/x", "running.bak", "running (copy)/y", "q/z"])
async def test_a_short_listing_sees_the_leases_past_look_alike_folders(
    backend_factory, monkeypatch, stray
):
    """Objects whose names sort between pending/ and running/ in path order ('-' and '.'
    sort before '/') do not end the listing before the leases."""
    producer, consumer = _listing_pair(backend_factory, monkeypatch, head_names=5, head_page=10)
    async with producer, consumer:
        ids = [await producer.task_queue.enqueue(Task(func="f", args=(i,))) for i in range(3)]
        held = await producer.task_queue.dequeue("default")
        await producer.objects.put(f"tasks/default/{stray}", b"1")
        for _ in range(2):  # the long way, then the short way where the store can
            assert (await _refresh(consumer))[0] == [i for i in ids if i != held.id]


@pytest.mark.file_layout("object-store listings")
@pytest.mark.parametrize("folder", ["pending", "running"])
async def test_a_sub_folder_keeps_the_queue_listed_the_long_way(
    backend_factory, monkeypatch, folder
):
    """A listing of pending/ or running/ shows a sub-folder as one name (a stray, left in
    place); a listing of both folders would read every object in it at each refresh."""
    producer, consumer = _listing_pair(backend_factory, monkeypatch, head_names=5, head_page=10)
    async with producer, consumer:
        task_id = await producer.task_queue.enqueue(Task(func="f"))
        for i in range(50):
            await producer.objects.put(f"tasks/default/{folder}/junk/{i:03d}", b"1")
        for _ in range(4):
            names, lists = await _refresh(consumer)
            assert names == [task_id] and lists <= 2


@pytest.mark.file_layout("object-store reaper CAS")
async def test_object_stores_reap_once_per_interval_across_consumers(backend_factory):
    """Reaping reads every lease object: on object stores one consumer per reap interval does
    it for all (it wins a CAS on tasks/.reaper); the others skip."""
    from omniq.storage.file.lease_queue import LeaseTaskQueue

    consumers = [backend_factory(reap_interval=30) for _ in range(3)]
    if not isinstance(consumers[0].task_queue, LeaseTaskQueue):
        pytest.skip("rename stores reap with one cheap listing per queue")
    reaps: list[int] = []
    async with consumers[0], consumers[1], consumers[2]:
        for i, b in enumerate(consumers):
            original = b.task_queue._sweep_expired

            async def counted(_i=i, _original=original, **how):
                reaps.append(_i)
                return await _original(**how)

            b.task_queue._sweep_expired = counted
        for b in consumers:
            assert await b.task_queue.dequeue("default") is None
        assert len(reaps) == 1, reaps


@pytest.mark.file_layout("object-store listing requests")
async def test_object_stores_poll_an_empty_queue_once_per_listing_ttl(backend_factory):
    """An idle consumer polls every poll_interval; on object stores it lists an empty queue at
    most once per listing_ttl (two requests), not at every poll."""
    from omniq.storage.file.lease_queue import LeaseTaskQueue

    backend = backend_factory(poll_interval=0.02, listing_ttl=0.5, reap_interval=60)
    if not isinstance(backend.task_queue, LeaseTaskQueue):
        pytest.skip("a local listing is a system call: rename stores list at every poll")
    async with backend:
        backend.objects.requests.clear()
        assert await backend.task_queue.dequeue("default", timeout=1.0) is None
        # ~50 polls; listings at 0, 0.5 and 1.0 s at most (2 requests each) + the reaper's turn.
        assert backend.objects.requests["list"] <= 8, backend.objects.requests
        other = backend_factory()
        async with other:
            await other.task_queue.enqueue(Task(func="from-elsewhere"))
        got = await backend.task_queue.dequeue("default", timeout=2.0)
        assert got is not None and got.func == "from-elsewhere"  # seen within listing_ttl


async def test_update_of_a_running_task_keeps_it_running(backend):
    q = backend.get_task_queue()
    await q.enqueue(Task(func="f"))
    claimed = await q.dequeue("default")
    edited = await q.get_task(claimed.id)
    edited.metadata = {"note": "edited while running"}
    await q.update_task(edited)
    stored = await q.get_task(claimed.id)
    assert stored.status is TaskStatus.RUNNING and stored.metadata == {
        "note": "edited while running"
    }
    assert stored.attempts == 1
    assert await q.dequeue("default") is None  # still leased: not claimable


async def test_competing_consumers_rarely_try_the_same_name(backend_factory):
    """Two consumers that listed the same names take turns. Once one has lost a race, both
    pick at random among the due names (and list again after two lost races in a row), so
    they do not each try every name: in name order, n consumers cost n - 1 failed claims per
    task (measured on local disk: 2.99 failed renames per task with 4 processes)."""
    a, b = backend_factory(), backend_factory()
    if not hasattr(a.task_queue, "claim_stats"):
        pytest.skip("SQLite claims inside a transaction: there is no race to lose")
    if a.url.startswith("memory://"):
        pytest.skip("each memory:// backend here is a store of its own")
    random.seed(7)
    n = 60
    async with a, b:
        ids = [await a.task_queue.enqueue(Task(func="f", args=(i,))) for i in range(n)]
        queues, got = [a.task_queue, b.task_queue], []
        for turn in range(4 * n):
            task = await queues[turn % 2].dequeue("default")
            if task is not None:
                await queues[turn % 2].finish_task(task)
                got.append(task.id)
            if len(got) == n:
                break
        assert sorted(got) == sorted(ids)
        # A lost race (a failed rename or conditional create) or a phantom (a lease created
        # on a task the other consumer finished) each tried a name for nothing. Taken in
        # name order, nearly every claim after the first wasted one try (n - 1 in all).
        stats = a.task_queue.claim_stats + b.task_queue.claim_stats
        wasted = stats["lost"] + stats["phantom"]
        assert wasted <= n // 2, stats


@pytest.mark.parametrize("second_dies", [False, True], ids=["one-reaper-dies", "two-die"])
async def test_a_reaper_killed_before_its_last_rename_does_not_count_the_delivery_twice(
    backend, clock, second_dies
):
    """A local reaper rewrites the payload with the lost delivery counted, then renames it back
    to pending/. Killed between the two, it left a counted payload in running/ that the next
    reaper counted again (a task could reach the dead letter a delivery early). The rewrite now
    carries the lost delivery's token, which every take-over's token carries on, so the
    delivery counts once however many reapers die — also when the next one dies too, before
    its own rewrite (in its report, here)."""
    from omniq.storage.file.lease_queue import LeaseTaskQueue
    from omniq.storage.file.task_queue import FileTaskQueue

    q = backend.get_task_queue()
    if not isinstance(q, FileTaskQueue) or isinstance(q, LeaseTaskQueue):
        pytest.skip("rename stores only (buckets settle from a record; SQLite in a transaction)")
    task = Task(func="f")
    await q.enqueue(task)
    await q.dequeue("default", visibility_timeout=5, worker_id="w1")
    clock.advance(6)
    objects, move = q._objects, q._objects.move

    async def killed_at_the_last_rename(src: str, dst: str) -> bool:
        if "/pending/" in dst:
            raise _Killed
        return await move(src, dst)

    objects.move = killed_at_the_last_rename
    try:
        with pytest.raises(_Killed):
            await q.requeue_expired()
    finally:
        objects.move = move
    clock.advance(61)  # the dead reaper's own lease runs out
    if second_dies:
        await _reap_and_fail(q, _Killed())
        clock.advance(61)
    [recovered] = await q.requeue_expired()
    assert recovered.attempts == 1
    pending = await q.get_task(task.id)  # the mark in the payload is not shown as a lease
    assert pending.status is TaskStatus.PENDING and pending.lease is None
    again = await q.dequeue("default")
    assert again.id == task.id and again.attempts == 2
