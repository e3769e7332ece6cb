"""Strays in queue directories: files whose names are not task names, directories, plain files
where queues should be. No worker stops, nothing is lost, listings and counts skip them."""

from __future__ import annotations

import os

import pytest

from omniq import AsyncOmniQ
from omniq.models.event import EventType
from omniq.models.task import Task, TaskStatus

pytestmark = pytest.mark.file_layout("names and entries in queue directories")


@pytest.mark.parametrize("stray", ["notes.json", "x.json", "00001-abc-XYZ.json", "README"])
async def test_stray_name_in_pending_is_set_aside_and_work_goes_on(backend, stray, caplog):
    q = backend.get_task_queue()
    good = Task(func="good")
    await q.enqueue(good)
    await backend.objects.put(f"tasks/default/pending/{stray}", b'{"func": "evil"}')

    assert await q.get_queue_size("default") == 1  # counts skip the stray
    assert [t.id for t in await q.list_tasks("default")] == [good.id]
    [stats] = await q.queue_stats()
    assert stats.pending == 1

    got = await q.dequeue("default")
    assert got is not None and got.id == good.id
    assert await q.dequeue("default") is None
    assert await backend.objects.list("corrupt/tasks/default/pending") == [stray]
    assert stray not in await backend.objects.list("tasks/default/pending")
    events = await backend.event_storage.get_events(event_type=EventType.CORRUPTED)
    assert len(events) == 1 and stray in events[0].message
    assert any(stray in r.getMessage() for r in caplog.records)


async def test_a_worker_meeting_strays_runs_every_good_task(backend):
    app = AsyncOmniQ(backend)

    @app.task
    def double(x):
        return 2 * x

    handles = [await double.delay(i) for i in range(3)]
    for stray in ("a.json", "00000-0000000000000-.json", "9-9-9.json"):
        await backend.objects.put(f"tasks/default/pending/{stray}", b"{}")
    stats = await app.run_worker(burst=True, concurrency=2)
    assert stats.completed == 3
    assert [await h.result(timeout=5) for h in handles] == [0, 2, 4]


async def test_directory_named_like_a_task_is_never_claimed(tmp_path):
    from conftest import make_backend

    backend = make_backend("local", tmp_path)
    async with backend:
        q = backend.get_task_queue()
        good = Task(func="good")
        await q.enqueue(good)
        # Sorts before every task: rank 00000 is the highest priority.
        fake = tmp_path / "omniq_data/tasks/default/pending/00000-0000000000000-FAKE.json"
        fake.mkdir()
        (fake / "inside.json").write_bytes(b"{}")
        assert [t.id for t in await q.list_tasks()] == [good.id]
        assert (await q.dequeue("default")).id == good.id
        assert await q.dequeue("default") is None
        assert fake.is_dir() and (fake / "inside.json").exists()  # left alone, not moved
        assert await q.requeue_expired() == []


async def test_plain_file_where_a_queue_should_be(backend, backend_kind):
    q = backend.get_task_queue()
    t = Task(func="f")
    await q.enqueue(t)
    await backend.objects.put("tasks/fileq", b"not a queue")
    if backend_kind in ("local", "memory"):  # buckets have no directories to tell apart
        assert await q.list_queues() == ["default"]
    assert (await q.get_task(t.id)).status is TaskStatus.PENDING
    assert [s.queue for s in await q.queue_stats() if s.pending] == ["default"]
    assert (await q.dequeue(["default"])).id == t.id


async def test_running_names_that_do_not_parse_are_skipped(backend):
    q = backend.get_task_queue()
    await backend.objects.put("tasks/default/running/garbage.json", b"{}")
    await backend.objects.put("tasks/default/running/1~2~3.json", b"{}")
    assert await q.requeue_expired() == []
    assert await q.list_tasks(status=TaskStatus.RUNNING) == []
    [stats] = await q.queue_stats()
    assert stats.running == 0


async def test_event_folders_with_hostile_names_are_skipped(backend):
    from omniq.models.event import TaskEvent

    events = backend.event_storage
    await events.log_event(TaskEvent(task_id="T1", event_type=EventType.ENQUEUED))
    day = (await events._days(None, None))[0]
    await backend.objects.put(f"{day}/..weird/x.json", b"[]")
    await backend.objects.put(f"{day}/loose.json", b"[]")
    assert [e.task_id for e in await events.get_events()] == ["T1"]


def test_temp_name_is_random_per_call(tmp_path):
    from omniq.storage.file.objects import LocalObjectStore

    names = {LocalObjectStore._temp_name(str(tmp_path)) for _ in range(100)}
    assert len(names) == 100 and all(str(os.getpid()) in n for n in names)
