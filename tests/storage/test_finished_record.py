"""``finish_task(result=, events=)``: the outcome stored with the finish, on every backend; on
file stores one object per finished task (the record), old data still read."""

from __future__ import annotations

import os

import msgspec
import pytest

from omniq import AsyncOmniQ
from omniq.exceptions import LeaseLostError, SerializationError, StorageError
from omniq.models.event import EventType, TaskEvent
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.task import Task, TaskStatus


def outcome(task: Task, value: object = 42) -> tuple[TaskResult, list[TaskEvent]]:
    result = TaskResult(task_id=task.id, result=value, attempts=task.attempts)
    events = [
        TaskEvent(task_id=task.id, event_type=kind, queue_name=task.queue_name)
        for kind in (EventType.STARTED, EventType.COMPLETED)
    ]
    return result, events


async def test_finish_stores_result_and_events_with_it(backend):
    q = backend.task_queue
    await q.enqueue(Task(func="f", queue_name="jobs"))
    task = await q.dequeue("jobs")
    result, events = outcome(task)
    done = await q.finish_task(task, TaskStatus.COMPLETED, result=result, events=events)
    assert done.status is TaskStatus.COMPLETED
    got = await backend.result_storage.get(task.id)
    assert got is not None and got.result == 42 and got.status is ResultStatus.SUCCESS
    assert [r.task_id for r in await backend.result_storage.list_results()] == [task.id]
    stored = await backend.event_storage.get_events(task_id=task.id)
    assert {e.id for e in events} <= {e.id for e in stored}
    completed = await backend.event_storage.get_events(event_type=EventType.COMPLETED)
    assert [e.id for e in completed] == [events[1].id]
    assert (await q.get_task(task.id)).status is TaskStatus.COMPLETED
    assert await backend.result_storage.delete(task.id) is True
    assert await backend.result_storage.get(task.id) is None
    assert (await q.get_task(task.id)).status is TaskStatus.COMPLETED  # the task stays


async def test_a_lost_lease_stores_no_outcome(backend, clock):
    q = backend.task_queue
    await q.enqueue(Task(func="f"))
    late = await q.dequeue("default", visibility_timeout=5)
    clock.advance(10)
    await q.requeue_expired()
    owner = await q.dequeue("default", visibility_timeout=60)
    result, events = outcome(late, "late")
    with pytest.raises(LeaseLostError):
        await q.finish_task(late, result=result, events=events)
    assert await backend.result_storage.get(late.id) is None
    assert [e for e in await backend.event_storage.get_events(task_id=late.id)
            if e.event_type is EventType.COMPLETED] == []  # fmt: skip
    await q.finish_task(owner, result=outcome(owner, "mine")[0])
    assert (await backend.result_storage.get(owner.id)).result == "mine"


async def test_an_unstorable_result_changes_nothing(backend):
    q = backend.task_queue
    await q.enqueue(Task(func="f"))
    task = await q.dequeue("default")
    with pytest.raises(SerializationError):
        await q.finish_task(task, result=TaskResult(task_id=task.id, result=object()))
    assert (await q.get_task(task.id)).status is TaskStatus.RUNNING
    await q.finish_task(task, result=outcome(task)[0])  # the lease still holds


async def test_enqueued_event_of_each_state(backend):
    """Pending, running and finished tasks each have one ENQUEUED event, whether the store
    logged it at enqueue (SQLite) or implies it from the task (file stores)."""
    app = AsyncOmniQ(backend)
    q = backend.task_queue
    async with app:
        ids = [(await app.enqueue("f")).id for _ in range(3)]
        finished = await q.dequeue("default")
        await q.finish_task(finished, result=outcome(finished)[0])
        await q.dequeue("default")  # one running, one pending
        for task_id in ids:
            events = await backend.event_storage.get_events(task_id=task_id)
            assert [e.event_type for e in events] == [EventType.ENQUEUED], events
        enqueued = await backend.event_storage.get_events(event_type=EventType.ENQUEUED)
        assert finished.id in {e.task_id for e in enqueued}


@pytest.mark.file_layout("counts the objects a finished task leaves")
async def test_a_finished_task_leaves_one_object(backend):
    app = AsyncOmniQ(backend)
    app.task(name="f")(lambda x: x * 2)
    async with app:
        h = await app.enqueue("f", 21)
        await app.run_worker(burst=True)
        assert await h.result(timeout=10) == 42
    objects = backend.objects
    assert await objects.list("tasks/default/completed") == [f"{h.id}.json"]
    assert await objects.list("results/success") == []
    assert await objects.list_dirs("events") == []
    kinds = [e.event_type for e in await backend.event_storage.get_events(task_id=h.id)]
    assert kinds == [EventType.ENQUEUED, EventType.STARTED, EventType.COMPLETED]


@pytest.mark.file_layout("writes data in the layout of the version before the records")
async def test_old_data_still_reads(backend):
    """A bare task in completed/, its result in results/ and its events in events/."""
    q = backend.task_queue
    task = Task(func="f", status=TaskStatus.COMPLETED)
    await q.enqueue(task)
    old = TaskResult(task_id=task.id, result="old")
    await backend.result_storage.set(old)
    logged = TaskEvent(task_id=task.id, event_type=EventType.ENQUEUED)
    await backend.event_storage.log_event(logged)
    assert await backend.result_storage.get(task.id) == old
    assert [e.id for e in await backend.event_storage.get_events(task_id=task.id)] == [logged.id]
    assert (await q.get_task(task.id)).status is TaskStatus.COMPLETED


async def test_record_outlives_its_task_ttl_until_its_result_ttl(backend_factory, clock):
    b = backend_factory(task_ttl=10, result_ttl=100)
    async with b:
        q = b.task_queue
        await q.enqueue(Task(func="f"))
        task = await q.dequeue("default")
        await q.finish_task(task, result=outcome(task)[0])
        clock.advance(50)
        await b.cleanup_expired()
        assert (await b.result_storage.get(task.id)).result == 42
        clock.advance(60)
        counts = await b.cleanup_expired()
        assert await b.result_storage.get(task.id) is None
        assert counts["results"] == 1


def _always_fails() -> None:
    raise ValueError("nope")


async def test_retry_from_the_dead_letter_keeps_the_failed_runs_events(backend):
    app = AsyncOmniQ(backend)
    app.task(name="always_fails")(_always_fails)
    async with app:
        h = await app.enqueue("always_fails")
        await app.run_worker(burst=True)
        assert await app.retry(h.id)
        kinds = [e.event_type for e in await backend.event_storage.get_events(task_id=h.id)]
        assert kinds == [EventType.ENQUEUED, EventType.STARTED, EventType.FAILED,
                         EventType.ENQUEUED], kinds  # fmt: skip


@pytest.mark.file_layout("reads the finished object's bytes")
async def test_the_record_joins_the_payload_on_local_disk_and_replaces_it_elsewhere(
    backend, backend_kind
):
    """Local disk appends the record to the task's file (JSON Lines, the last line is the
    state: no file created or freed); stores that cannot append rewrite the object whole."""
    q = backend.task_queue
    await q.enqueue(Task(func="f", args=(7,)))
    task = await q.dequeue("default")
    result, events = outcome(task)
    await q.finish_task(task, result=result, events=events)
    data = await backend.objects.get(f"tasks/default/completed/{task.id}.json")
    lines = data.split(b"\n")
    assert len(lines) == (2 if backend_kind == "local" else 1)
    assert b'"status":"completed"' in lines[-1] and b'"result"' in lines[-1]
    if backend_kind == "local":
        assert b'"status":"pending"' in lines[0] and b'"result"' not in lines[0]
    assert (await backend.result_storage.get(task.id)).result == 42
    assert (await q.get_task(task.id)).status is TaskStatus.COMPLETED
    # The record can be rewritten whole afterwards (a result dropped), and still reads.
    assert await backend.result_storage.delete(task.id) is True
    assert (await q.get_task(task.id)).status is TaskStatus.COMPLETED
    assert await backend.result_storage.get(task.id) is None


async def test_local_appends_refuse_what_is_not_a_task_file(tmp_path):
    from omniq.storage.file.objects import LocalObjectStore, NotAnObjectError

    store = LocalObjectStore(str(tmp_path))
    await store.open()
    await store.put("a/x.json", b"{}")
    await store.append("a/x.json", b"\n{}")
    assert await store.get("a/x.json") == b"{}\n{}"
    with pytest.raises(FileNotFoundError):
        await store.append("a/missing.json", b"\n{}")
    with pytest.raises(FileNotFoundError):  # a file where a folder of the key should be
        await store.append("a/x.json/y.json", b"\n{}")
    (tmp_path / "a" / "link.json").symlink_to(tmp_path / "a" / "x.json")
    with pytest.raises(NotAnObjectError):
        await store.append("a/link.json", b"\n{}")
    assert await store.get("a/x.json") == b"{}\n{}"


async def test_a_fifo_under_the_name_fails_the_append_instead_of_blocking(tmp_path):
    from omniq.storage.file.objects import LocalObjectStore, NotAnObjectError

    store = LocalObjectStore(str(tmp_path))
    await store.open()
    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "pipe.json")
    with pytest.raises((NotAnObjectError, StorageError)):
        await store.append("a/pipe.json", b"\n{}")


async def test_a_task_stored_in_another_format_is_rewritten_not_appended(tmp_path):
    """A JSON worker finishing a task a msgpack client enqueued writes its record whole (an
    append would turn a torn msgpack object into an unreadable one)."""
    from omniq.backend.file import FileBackend

    producer = FileBackend(str(tmp_path), serialization_format="msgpack")
    worker = FileBackend(str(tmp_path))
    async with producer, worker:
        await producer.task_queue.enqueue(Task(func="f"))
        task = await worker.task_queue.dequeue("default")
        await worker.task_queue.finish_task(task, result=outcome(task)[0])
        key = f"tasks/default/completed/{task.id}.json"  # the finisher's format
        assert msgspec.json.decode(await worker.objects.get(key))["status"] == "completed"
        assert (await worker.result_storage.get(task.id)).result == 42


async def test_a_finish_validates_the_task_it_is_handed(backend):
    """A holder that changed its task to something invalid gets ValidationError at the finish,
    and nothing is written: the task stays claimed until it finishes properly."""
    from omniq.exceptions import ValidationError

    q = backend.task_queue
    await q.enqueue(Task(func="f"))
    task = await q.dequeue("default")
    task.priority = 10**6
    with pytest.raises(ValidationError, match="priority"):
        await q.finish_task(task, result=outcome(task)[0])
    assert (await q.get_task(task.id)).status is TaskStatus.RUNNING
    task.priority = 0
    await q.finish_task(task, result=outcome(task)[0])
    assert (await backend.result_storage.get(task.id)).result == 42
