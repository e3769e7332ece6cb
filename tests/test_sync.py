"""The one generic blocking wrapper."""

from __future__ import annotations

import asyncio

import pytest

from omniq.models.task import Task
from omniq.sync import SyncWrapper, run_sync


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.entered = False

    async def add(self, k: int) -> int:
        await asyncio.sleep(0)
        self.n += k
        return self.n

    async def fail(self) -> None:
        raise KeyError("nope")

    def plain(self) -> str:
        return "plain"

    async def __aenter__(self):
        self.entered = True
        return self

    async def __aexit__(self, *exc):
        self.entered = False


def test_methods_return_values_directly():
    w = SyncWrapper(Counter())
    assert w.add(2) == 2 and w.add(3) == 5
    assert w.plain() == "plain" and w.n == 5
    with pytest.raises(KeyError):
        w.fail()
    with w:
        assert w.wrapped.entered
    assert not w.wrapped.entered


async def test_works_inside_a_running_loop():
    w = SyncWrapper(Counter())
    assert w.add(1) == 1  # blocking call from a coroutine: runs on the private loop


def test_sync_backend_views(tmp_path):
    from omniq.backend.file import FileBackend

    with FileBackend(base_dir=str(tmp_path)) as backend:
        q = backend.get_task_queue(async_mode=False)
        task_id = q.enqueue(Task(func="sync_task", args=()))
        assert isinstance(task_id, str)
        assert q.get_queue_size("default") == 1
        got = q.dequeue(["default"])
        assert got.id == task_id
        assert backend.get_result_storage(async_mode=False).get("nothing") is None


def test_run_sync_from_loop_thread_is_refused():
    async def inner():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="own loop thread"):
            run_sync(coro)

    run_sync(inner())
