"""Copies and replays of task files: a payload runs only where it was enqueued, once. With a
``secret_key`` the signed payload also pins the due time and priority its name encodes."""

from __future__ import annotations

import pytest

from omniq.models.event import EventType
from omniq.models.task import Task, TaskStatus
from omniq.storage.file.keys import is_pending_name

SECRET = "s3cret"

pytestmark = pytest.mark.file_layout("copies of task files between names and directories")


async def set_aside(backend, queue="default"):
    """Task ids set aside from a queue: rename stores claim into running/ before reading,
    lease-object stores read in pending/."""
    names = []
    for state in ("pending", "running"):
        names += await backend.objects.list(f"corrupt/tasks/{queue}/{state}")
    return sorted(n.split("~")[0].rsplit(".", 1)[0].rsplit("-", 1)[-1] for n in names)


async def pending_name(backend, queue="default"):
    [name] = [n for n in await backend.objects.list(f"tasks/{queue}/pending") if is_pending_name(n)]
    return name


async def test_copy_into_another_queue_is_refused_and_the_original_runs_once(backend):
    q = backend.task_queue
    original = Task(func="f", queue_name="a")
    await q.enqueue(original)
    name = await pending_name(backend, "a")
    data = await backend.objects.get(f"tasks/a/pending/{name}")
    await backend.objects.put(f"tasks/b/pending/{name}", data)

    assert await q.dequeue("b") is None
    assert await set_aside(backend, "b") == [original.id]
    [event] = await backend.event_storage.get_events(event_type=EventType.CORRUPTED)
    assert "belongs to queue 'a'" in event.message
    got = await q.dequeue("a")
    assert got.id == original.id
    await q.finish_task(got)
    assert await q.dequeue(["a", "b"]) is None


async def test_copy_under_another_id_is_refused(backend):
    q = backend.task_queue
    t = Task(func="f")
    await q.enqueue(t)
    name = await pending_name(backend)
    data = await backend.objects.get(f"tasks/default/pending/{name}")
    await backend.objects.put(f"tasks/default/pending/{name.replace(t.id, 'COPY')}", data)
    claimed = []
    while (task := await q.dequeue("default")) is not None:
        claimed.append(task.id)
    assert claimed == [t.id]


@pytest.fixture
async def signed(backend_factory):
    b = backend_factory(secret_key=SECRET)
    async with b:
        yield b


async def test_signed_delayed_task_renamed_to_run_now_is_refused(signed, clock):
    q = signed.task_queue
    later = Task(func="later", delay=3600)
    await q.enqueue(later)
    name = await pending_name(signed)
    data = await signed.objects.get(f"tasks/default/pending/{name}")
    rushed = "00000-0000000000000-" + later.id + name[name.rfind(".") :]
    await signed.objects.put(f"tasks/default/pending/{rushed}", data)
    assert await q.dequeue("default") is None  # the rushed copy is set aside, the real one waits
    assert await set_aside(signed) == [later.id]
    clock.advance(3601)
    assert (await q.dequeue("default")).id == later.id


async def test_signed_finished_task_copied_back_is_not_run_again(signed):
    q = signed.task_queue
    t = Task(func="once")
    await q.enqueue(t)
    name = await pending_name(signed)
    data = await signed.objects.get(f"tasks/default/pending/{name}")
    got = await q.dequeue("default")
    await q.finish_task(got, TaskStatus.COMPLETED)
    await signed.objects.put(f"tasks/default/pending/{name}", data)  # the replay
    assert await q.dequeue("default") is None
    assert (await q.get_task(t.id)).status is TaskStatus.COMPLETED
    events = await signed.event_storage.get_events(event_type=EventType.CORRUPTED)
    assert len(events) == 1 and "already finished" in events[0].message


async def test_unsigned_rename_of_priority_is_an_operator_choice(backend):
    """Without a secret key an operator may rename a pending file to change its priority."""
    q = backend.task_queue
    t = Task(func="f", priority=0)
    await q.enqueue(t)
    name = await pending_name(backend)
    data = await backend.objects.get(f"tasks/default/pending/{name}")
    await backend.objects.delete(f"tasks/default/pending/{name}")
    await backend.objects.put(f"tasks/default/pending/00000{name[5:]}", data)
    assert (await q.dequeue("default")).id == t.id
