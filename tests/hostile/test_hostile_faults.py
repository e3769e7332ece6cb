"""Storage faults: a full disk, a store that refuses writes of results or events, killed
writers. No worker crashes, no task is lost or re-run blindly, a waiter does not wait forever."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from conftest import make_backend
from omniq import AsyncOmniQ
from omniq.exceptions import StorageError, TaskFailedError, TaskNotFoundError
from omniq.models.event import EventType
from omniq.models.result import ResultStatus
from omniq.models.task import Task, TaskStatus


def failing(exc_message: str):
    async def refuse(*args, **kwargs):
        raise StorageError(exc_message, "results/success/x.json")

    return refuse


async def test_unwritable_result_counts_a_failed_attempt_not_a_blind_rerun(
    backend, monkeypatch, clock
):
    app = AsyncOmniQ(backend)
    runs = []

    @app.task(max_retries=2, retry_delay=60.0)
    def work():
        runs.append(1)
        return "done"

    async with app:
        h = await work.delay()
        # The worker stores a success with its finish (one write): refuse that write.
        real_finish = backend.task_queue.finish_task

        async def finish(task, status=TaskStatus.COMPLETED, *args, **kwargs):
            if status is TaskStatus.COMPLETED:
                await failing("cannot write (No space)")()
            return await real_finish(task, status, *args, **kwargs)

        monkeypatch.setattr(backend.task_queue, "finish_task", finish)
        stats = await app.run_worker(burst=True)  # must not raise
        assert stats.completed == 0 and len(runs) == 1
        task = await backend.task_queue.get_task(h.id)
        assert task.status is TaskStatus.PENDING and task.attempts == 1
        assert "StorageError" in task.error and "No space" in task.error
        monkeypatch.setattr(backend.task_queue, "finish_task", real_finish)
        clock.advance(61)  # the retry's back-off
        await app.run_worker(burst=True)
        assert await h.result(timeout=10) == "done" and len(runs) == 2


async def test_dead_letter_without_a_result_still_ends_the_wait(
    backend_factory, monkeypatch, clock
):
    """A failure that could not be recorded (its finished record refused) leaves the task
    claimed, no worker crashes; when the reaper dead-letters it after ``max_deliveries``, no
    worker wrote a result for it, and a caller waiting on it is told it failed (with the
    reason) instead of waiting out the timeout."""
    backend = backend_factory(max_deliveries=1)
    app = AsyncOmniQ(backend)

    @app.task
    def boom():
        raise ValueError("nope")

    async with app:
        h = await boom.delay()
        monkeypatch.setattr(backend.task_queue, "finish_task", failing("records not writable"))
        stats = await app.run_worker(burst=True)  # the failure cannot be written: no crash
        monkeypatch.undo()
        assert stats.lost == 1
        assert (await backend.task_queue.get_task(h.id)).status is TaskStatus.RUNNING
        clock.advance(61)  # the default lease runs out; the first delivery was the last
        [dead] = await backend.task_queue.requeue_expired()
        assert dead.status is TaskStatus.FAILED
        with pytest.raises(TaskFailedError, match="lease expired"):
            await h.result(timeout=30)


async def test_unknown_id_is_not_waited_for(backend):
    app = AsyncOmniQ(backend)
    async with app:
        with pytest.raises(TaskNotFoundError, match="01NOPE"):
            await app.get_result("01NOPE", timeout=30)


async def test_enqueue_succeeds_when_only_its_event_cannot_be_written(backend, monkeypatch, caplog):
    app = AsyncOmniQ(backend)

    @app.task
    def f():
        return 1

    async with app:
        monkeypatch.setattr(backend.event_storage, "log_event", failing("events not writable"))
        h = await f.delay()  # no error: the task is stored, a retry would duplicate it
        assert (await backend.task_queue.get_task(h.id)).status is TaskStatus.PENDING
        if backend.event_storage.implies_enqueued:  # file stores write no event at enqueue
            kinds = [e.event_type for e in await backend.event_storage.get_events(task_id=h.id)]
            assert kinds == [EventType.ENQUEUED]
        else:
            assert any("enqueued event was not" in r.getMessage() for r in caplog.records)


@pytest.mark.file_layout("breaks the object layer's writes (SQLite rolls a failed reap back)")
async def test_reaper_storage_error_does_not_stop_claims(backend, monkeypatch, clock, caplog):
    q = backend.task_queue
    await q.enqueue(Task(func="a"))
    await q.enqueue(Task(func="b"))
    held = await q.dequeue("default", visibility_timeout=1)
    clock.advance(5)

    async def broken(*args, **kwargs):
        raise StorageError("cannot write (No space left on device)", "somewhere")

    monkeypatch.setattr(backend.objects, "put", broken)
    if hasattr(backend.objects, "replace"):
        monkeypatch.setattr(backend.objects, "replace", broken)
    assert await q.requeue_expired() == []  # logged, not raised; the delivery is not counted
    assert "re-queued" not in caplog.text  # said only once done
    monkeypatch.undo()
    clock.advance(120)  # a failed recovery may hold the lease it took over until it expires
    [back] = await q.requeue_expired()
    assert back.id == held.id and back.attempts == 1


async def test_old_temp_files_are_swept(tmp_path):
    backend = make_backend("local", tmp_path)
    async with backend:
        await backend.task_queue.enqueue(Task(func="f"))
        pending = tmp_path / "omniq_data/tasks/default/pending"
        old, fresh = pending / ".tmp-123-old", pending / ".tmp-123-fresh"
        old.write_bytes(b"x")
        fresh.write_bytes(b"x")
        (tmp_path / "omniq_data/results").mkdir()
        stale_result = tmp_path / "omniq_data/results/.tmp-9-x"
        stale_result.write_bytes(b"x")
        hour_ago = time.time() - 2 * 3600
        for path in (old, stale_result):
            os.utime(path, (hour_ago, hour_ago))
        app = AsyncOmniQ(backend)
        await app.run_worker(burst=True)  # sweeps its own queues only
        assert not old.exists() and fresh.exists() and stale_result.exists()
        counts = await backend.cleanup_expired()
        assert counts["temp_files"] == 1 and not stale_result.exists() and fresh.exists()


async def test_enqueue_after_fork_never_collides(tmp_path):
    backend = make_backend("local", tmp_path)
    async with backend:
        q = backend.task_queue
        await q.enqueue(Task(func="warm"))  # the parent has written before the fork
        pid = os.fork()
        if pid == 0:  # the child: same pid-derived state as the parent had
            code = 0
            try:
                import asyncio

                async def child():
                    for i in range(200):
                        await q.enqueue(Task(func="child", args=(i,)))

                asyncio.run(child())
            except BaseException:
                code = 1
            os._exit(code)
        for i in range(200):
            await q.enqueue(Task(func="parent", args=(i,)))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert await q.get_queue_size() == 401


def _can_mount_tmpfs(path) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


async def test_full_disk_never_crashes_a_worker_and_loses_nothing(tmp_path, clock):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("mounting a small tmpfs needs root and mount permission")
    try:
        backend = make_backend("local", disk)
        app = AsyncOmniQ(backend)
        runs = []

        # Results larger than a page: a finish appends its record to the task's file, and a
        # small record fits in the page the payload already holds, so it needs no new space.
        @app.task(max_retries=1, retry_delay=0.0)
        def work(i):
            runs.append(i)
            return str(i) * 20_000

        async with app:
            handles = [await work.delay(i) for i in range(5)]
            filler = disk / "filler"
            with open(filler, "wb") as f:  # fill the disk to the last block
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            with pytest.raises(StorageError, match="No space"):
                await work.delay(99)  # enqueue fails cleanly and stores nothing
            stats = await app.run_worker(burst=True, visibility_timeout=1)  # does not raise
            assert stats.completed == 0
            filler.unlink()
            clock.advance(120)  # leases of tasks whose outcome could not be written expire
            await app.run_worker(burst=True)
            for i, h in enumerate(handles):
                assert await h.result(timeout=30) == str(i) * 20_000
            assert await backend.task_queue.get_queue_size() == 0
            assert sorted(set(runs)) == list(range(5))
            lost_events = await backend.event_storage.get_events(event_type=EventType.FAILED)
            assert lost_events == []
            results = await backend.result_storage.list_results()
            assert {r.status for r in results} == {ResultStatus.SUCCESS}
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
