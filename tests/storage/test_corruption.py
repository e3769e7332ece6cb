"""A corrupt file is set aside under corrupt/, reported, and never stops the queue."""

from __future__ import annotations

import pytest

from omniq.exceptions import CorruptFileError
from omniq.models.event import EventType
from omniq.models.result import TaskResult
from omniq.models.task import Task

pytestmark = pytest.mark.file_layout(
    "damages files in place (SQLite: tests/backend/test_sqlite_backend.py)"
)


def claimed_dir(backend):
    """Where a task that was unreadable at claim time is set aside from: rename stores move it
    to running/ before reading it; lease-object stores read it in pending/."""
    from omniq.storage.file.lease_queue import LeaseTaskQueue

    return "pending" if isinstance(backend.task_queue, LeaseTaskQueue) else "running"


async def _pending_names(backend):
    return sorted(await backend.objects.list("tasks/default/pending"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
async def test_corrupt_task_is_set_aside_and_dequeue_goes_on(backend, damage, caplog):
    q = backend.get_task_queue()
    bad, good = Task(func="bad", priority=5), Task(func="good")
    await q.enqueue(bad)
    await q.enqueue(good)
    name = (await _pending_names(backend))[0]  # the high-priority one sorts first
    key = f"tasks/default/pending/{name}"
    data = await backend.objects.get(key)
    damaged = {"truncate": data[: len(data) // 2], "garbage": b"\x00\xffnot json", "empty": b""}[
        damage
    ]
    await backend.objects.put(key, damaged)

    got = await q.dequeue("default")
    assert got is not None and got.id == good.id
    assert any("corrupt file" in r.message for r in caplog.records)
    corrupt = await backend.objects.list(f"corrupt/tasks/default/{claimed_dir(backend)}")
    assert len(corrupt) == 1 and bad.id in corrupt[0]
    events = await backend.get_event_storage().get_events(event_type=EventType.CORRUPTED)
    assert [e.task_id for e in events] == [bad.id]
    assert "moved to corrupt/" in events[0].message


async def test_corrupt_files_skipped_by_listings(backend):
    q = backend.get_task_queue()
    t = Task(func="f")
    await q.enqueue(t)
    await q.enqueue(Task(func="g"))
    name = (await _pending_names(backend))[0]
    await backend.objects.put(f"tasks/default/pending/{name}", b"{oops")
    assert len(await q.list_tasks()) == 1
    assert len(await backend.objects.list("corrupt/tasks/default/pending")) == 1


async def test_corrupt_result_get_raises_and_is_set_aside(backend):
    rs = backend.get_result_storage()
    await rs.set(TaskResult(task_id="r1", result=1))
    await backend.objects.put("results/success/r1.json", b"[1, 2")
    with pytest.raises(CorruptFileError) as info:
        await rs.get("r1")
    assert info.value.moved_to == "corrupt/results/success/r1.json"
    assert await rs.get("r1") is None
    assert await rs.list_results() == []


async def test_foreign_files_in_queue_dirs_are_ignored(backend):
    q = backend.get_task_queue()
    await backend.objects.put("tasks/default/pending/README.txt", b"hello")
    await q.enqueue(Task(func="f"))
    assert (await q.dequeue("default")).func == "f"
    assert await q.dequeue("default") is None
