"""Idle consumers are woken, not left polling: by file-system notifications (local disk, any
process) and by enqueues in their own process (any store). Polling stays the safety net.

No timing margins: the safety-net poll is set to an hour and the dequeue timeout to minutes, so
a dequeue that returns the task (with a handful of waits) can only have been woken."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from omniq.backend.file import FileBackend
from omniq.models.task import Task
from omniq.storage.file.task_queue import FileTaskQueue
from omniq.storage.file.wakeup import notifications_work

LONG = 120.0  # a dequeue timeout no woken consumer comes near

ENQUEUE = """
import asyncio, sys
from omniq.backend.file import FileBackend
from omniq.models.task import Task

async def main():
    async with FileBackend(base_dir=sys.argv[1]) as backend:
        print(await backend.task_queue.enqueue(Task(func="f")))

asyncio.run(main())
"""


async def _idle(queue: FileTaskQueue, waiting: asyncio.Task[Task | None]) -> None:
    """Return once ``waiting`` is asleep in its dequeue (it counts its waits before sleeping)."""
    while queue.idle_waits == 0:
        assert not waiting.done(), "the dequeue returned before waiting"
        await asyncio.sleep(0.01)


@pytest.mark.skipif(not notifications_work("/tmp"), reason="no inotify on this platform/mount")
async def test_idle_local_dequeue_wakes_for_a_task_enqueued_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FileTaskQueue, "SAFETY_POLL", 3600.0)
    async with FileBackend(base_dir=str(tmp_path), poll_interval=0.05) as backend:
        queue = backend.task_queue
        assert isinstance(queue, FileTaskQueue)
        await queue.enqueue(Task(func="f"))  # the pending directory exists from now on
        first = await queue.dequeue("default")
        assert first is not None
        await queue.finish_task(first)

        waiting = asyncio.create_task(queue.dequeue("default", timeout=LONG))
        await _idle(queue, waiting)
        enqueued = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", ENQUEUE, str(tmp_path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        task = await waiting
        assert task is not None, "not woken: the dequeue waited out its timeout"
        assert task.id == enqueued.stdout.strip()
        # Woken once (a stray wake-up or two allowed); polling every 50 ms while the other
        # process started would have waited dozens of times.
        assert queue.idle_waits <= 3
        assert queue._wakeup.watching
    assert not queue._wakeup.watching  # closing the backend closes its inotify descriptor


async def test_idle_dequeue_wakes_for_an_enqueue_in_its_own_process() -> None:
    # memory:// has no notifications: without the direct wake-up only the hour-long poll would
    # see the task.
    async with FileBackend.from_url("memory://wakeup-test", poll_interval=3600.0) as backend:
        queue = backend.task_queue
        assert isinstance(queue, FileTaskQueue)
        waiting = asyncio.create_task(queue.dequeue("default", timeout=LONG))
        await _idle(queue, waiting)
        task_id = await queue.enqueue(Task(func="f"))
        task = await waiting
        assert task is not None and task.id == task_id
        assert queue.idle_waits == 1


async def test_a_wait_without_notifications_still_polls() -> None:
    """No wake-up at all (the task file appears behind the queue's back, on a store that is not
    watched): the consumer still finds it by polling."""
    async with FileBackend.from_url("memory://wakeup-poll", poll_interval=0.01) as backend:
        queue = backend.task_queue
        assert isinstance(queue, FileTaskQueue)
        waiting = asyncio.create_task(queue.dequeue("default", timeout=LONG))
        await _idle(queue, waiting)
        other = FileBackend.from_url("memory://wakeup-poll")  # its own queue object
        async with other:
            task_id = await other.task_queue.enqueue(Task(func="f"))
        task = await waiting
        assert task is not None and task.id == task_id
