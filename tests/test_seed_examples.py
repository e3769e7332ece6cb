"""Every code example of docs/seed-file-storage-backend.md, as written.

Examples run in a temporary working directory, so ``./omniq_data`` is fresh each time. Where a
seed snippet is a fragment (it uses ``backend`` or ``task`` made elsewhere), the test supplies
them, once for a local directory and once for ``memory://``. The one change from the seed: blocking
methods return values directly (see the README's "Where OmniQ differs from the seed").
The S3 examples run against the moto server on 127.0.0.1 (tests/emulators.py).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from omniq.backend.file import FileBackend
from omniq.exceptions import StorageError
from omniq.models.config import FileConfig
from omniq.models.event import EventType, TaskEvent
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.schedule import Schedule, ScheduleType
from omniq.models.task import Task, TaskStatus


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["local", "memory"])
def seed_backend(request, tmp_path):
    if request.param == "local":
        return FileBackend(base_dir="./omniq_data", fs_protocol="file")
    return FileBackend.from_url(f"memory://seed-{tmp_path.name}")


def test_basic_usage_local_file_storage(capsys, tmp_path):
    async def main():
        # Create file backend with local storage
        backend = FileBackend(base_dir="./omniq_data", fs_protocol="file")

        async with backend:
            # Get task queue
            task_queue = backend.get_task_queue()

            # Create and enqueue a task
            task = Task(func="my_function", args=(1, 2, 3), queue_name="default")

            await task_queue.enqueue(task)

            # Dequeue and process
            dequeued_task = await task_queue.dequeue(["default"])
            print(f"Processing task: {dequeued_task.func}")

    asyncio.run(main())
    assert capsys.readouterr().out == "Processing task: my_function\n"
    assert (tmp_path / "omniq_data" / "tasks" / "default" / "running").is_dir()


def test_file_config_example(tmp_path):
    config = FileConfig(
        base_dir="./omniq_data",
        fsspec_uri="file://./omniq_data",
        storage_options={},
        tasks_dir="tasks",
        results_dir="results",
        events_dir="events",
        schedules_dir="schedules",
        serialization_format="json",
    )

    backend = FileBackend.from_config(config)
    assert backend.root == str(tmp_path / "omniq_data")


def test_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNIQ_BASE_DIR", "./my_omniq_data")
    assert FileBackend().root == str(tmp_path / "my_omniq_data")
    monkeypatch.setenv("OMNIQ_FSSPEC_URI", "memory://omniq")
    backend = FileBackend()
    assert backend.url == "memory://omniq"  # the URI names the location when both are set


async def test_task_queue_component(seed_backend):
    backend = seed_backend
    async with backend:
        task_queue = backend.get_task_queue()

        # Enqueue task
        task = Task(func="process_data", args=("data",))
        await task_queue.enqueue(task)

        # Dequeue task
        task = await task_queue.dequeue(["default", "high_priority"])
        assert task.func == "process_data"

        # Get task by ID
        task = await task_queue.get_task(task.id)
        assert task.status is TaskStatus.RUNNING

        # List tasks
        tasks = await task_queue.list_tasks(queue_name="default")
        assert len(tasks) == 1

        # Update task
        task.status = TaskStatus.RUNNING
        await task_queue.update_task(task)
        assert (await task_queue.get_task(task.id)).status is TaskStatus.RUNNING
        assert await task_queue.get_task("task_id") is None


async def test_result_storage_component(seed_backend):
    backend = seed_backend
    async with backend:
        result_storage = backend.get_result_storage()

        # Store result
        result = TaskResult(
            task_id="task_123", status=ResultStatus.SUCCESS, result={"output": "processed_data"}
        )
        await result_storage.set(result)

        # Get result
        result = await result_storage.get("task_123")
        assert result.result == {"output": "processed_data"}

        # List results
        results = await result_storage.list_results()
        assert len(results) == 1

        # Delete result
        await result_storage.delete("task_123")
        assert await result_storage.get("task_123") is None


async def test_event_storage_component(seed_backend):
    backend = seed_backend
    async with backend:
        event_storage = backend.get_event_storage()

        # Log event
        event = TaskEvent(
            task_id="task_123",
            event_type=EventType.COMPLETED,
            message="Task completed successfully",
        )
        await event_storage.log_event(event)

        # Get events
        events = await event_storage.get_events(task_id="task_123")
        assert [e.message for e in events] == ["Task completed successfully"]

        # Get events by type
        events = await event_storage.get_events(event_type=EventType.FAILED)
        assert events == []


async def test_schedule_storage_component(seed_backend):
    backend = seed_backend
    async with backend:
        schedule_storage = backend.get_schedule_storage()

        # Save schedule
        schedule = Schedule(
            schedule_type=ScheduleType.CRON, func="daily_report", cron_expression="0 9 * * *"
        )
        await schedule_storage.save_schedule(schedule)

        # Get schedule
        assert await schedule_storage.get_schedule("schedule_id") is None
        assert await schedule_storage.get_schedule(schedule.id) == schedule

        # List schedules
        schedules = await schedule_storage.list_schedules()
        assert len(schedules) == 1

        # Get ready schedules
        ready = await schedule_storage.get_ready_schedules()
        assert ready == []  # next run is at 09:00, in the future


def test_synchronous_usage(seed_backend):
    backend = seed_backend
    # Get sync versions of storage components
    with backend:
        sync_task_queue = backend.get_task_queue(async_mode=False)
        sync_result_storage = backend.get_result_storage(async_mode=False)

        # The seed wraps this call in loop.run_until_complete(); blocking methods return
        # their value directly instead, so no event loop is needed.
        task = Task(func="sync_task", args=())
        assert sync_task_queue.enqueue(task) == task.id
        assert sync_task_queue.dequeue(["default"]).id == task.id
        sync_result_storage.set(TaskResult(task_id=task.id, result=1))
        assert sync_result_storage.get(task.id).result == 1


async def test_directory_structure(tmp_path):
    backend = FileBackend(base_dir="./omniq_data", fs_protocol="file")
    async with backend:
        q = backend.get_task_queue()
        await q.enqueue(Task(func="f", queue_name="default"))
        await q.enqueue(Task(func="f", queue_name="high_priority"))
        t = await q.dequeue(["default"])
        await q.finish_task(t)
        await backend.get_result_storage().set(TaskResult(task_id=t.id, result=1))
        await backend.get_result_storage().set(TaskResult(task_id="x", status=ResultStatus.FAILED))
        await backend.get_event_storage().log_event(
            TaskEvent(task_id=t.id, event_type=EventType.COMPLETED)
        )
        ss = backend.get_schedule_storage()
        s = Schedule(schedule_type=ScheduleType.INTERVAL, func="f", interval=5)
        await ss.save_schedule(s)
        await ss.pause_schedule(s.id)
        await ss.save_schedule(Schedule(schedule_type=ScheduleType.INTERVAL, func="g", interval=5))
    root = tmp_path / "omniq_data"
    for d in [
        "tasks/default/pending", "tasks/default/running", "tasks/default/completed",
        "tasks/high_priority/pending", "results/success", "results/failed",
        "schedules/active", "schedules/paused",
    ]:  # fmt: skip
        assert (root / d).is_dir(), d
    [year] = [p.name for p in (root / "events").iterdir()]
    assert len(year) == 4 and len(list((root / "events" / year).glob("*/*"))) == 1


async def test_cleanup_operations(seed_backend):
    backend = seed_backend
    async with backend:
        # Clean up expired tasks, results, and events
        stats = await backend.cleanup_expired()
        print(f"Cleaned up: {stats}")
        assert {k: stats[k] for k in ("tasks", "results", "events")} == dict.fromkeys(
            ("tasks", "results", "events"), 0
        )
        assert stats.get("temp_files", 0) == 0  # the file backend also sweeps killed writes

        # Manual cleanup for specific components
        expired_tasks = await backend.get_task_queue().cleanup_expired_tasks()
        expired_results = await backend.get_result_storage().cleanup_expired_results()
        assert (expired_tasks, expired_results) == (0, 0)


async def test_custom_filesystem_options():
    backend = FileBackend(
        base_dir="./omniq_data",
        fs_protocol="file",
        fs_kwargs={"auto_mkdir": True, "cache_type": "mmap"},
    )
    async with backend:
        await backend.get_task_queue().enqueue(Task(func="f"))


async def test_multiple_backends_local_parts():
    # The seed's second backend is an S3 bucket; that half runs in the cloud-backends tests.
    task_backend = FileBackend(base_dir="./tasks", fs_protocol="file")
    result_backend = FileBackend.from_url("memory://results-bucket")

    async with task_backend, result_backend:
        task_queue = task_backend.get_task_queue()
        result_storage = result_backend.get_result_storage()

        task = Task(func="process", args=())
        await task_queue.enqueue(task)

        result = TaskResult(task_id=task.id, status=ResultStatus.SUCCESS)
        await result_storage.set(result)
        assert (await result_storage.get(task.id)).status is ResultStatus.SUCCESS


async def test_error_handling(seed_backend, capsys, tmp_path):
    backend = seed_backend
    task = Task(func="f", args=(object(),))  # not serializable as JSON
    async with backend:
        try:
            task_queue = backend.get_task_queue()
            await task_queue.enqueue(task)
        except StorageError as e:
            print(f"Storage error: {e}")
        except Exception as e:
            print(f"Unexpected error: {e}")
    assert "cannot serialize" in capsys.readouterr().out


async def test_error_handling_storage_error(tmp_path):
    (tmp_path / "omniq_data").write_text("a file, not a directory")
    backend = FileBackend(base_dir="./omniq_data", fs_protocol="file")
    with pytest.raises(StorageError, match="omniq_data"):
        async with backend:
            pass


def test_serialization_format_choices():
    for fmt in ("json", "msgpack", "pickle"):
        config = FileConfig(serialization_format=fmt)
        assert FileBackend.from_config(config).config.serialization_format == fmt


def test_filesystem_caching_options(tmp_path):
    backend = FileBackend(fs_kwargs={"cache_type": "mmap", "cache_size": 100 * 1024 * 1024})
    assert backend.root == str(tmp_path / "omniq_data")


async def test_batch_operations(seed_backend):
    backend = seed_backend
    async with backend:
        task_queue = backend.get_task_queue()

        # Enqueue multiple tasks
        tasks = [Task(func="batch_task", args=(i,)) for i in range(100)]
        for task in tasks:
            await task_queue.enqueue(task)

        # Process in batches
        processed = []
        batch_size = 10
        while True:
            batch = []
            for _ in range(batch_size):
                task = await task_queue.dequeue(["default"], timeout=0.2)
                if task:
                    batch.append(task)
                else:
                    break

            if not batch:
                break

            # Process batch
            for task in batch:
                processed.append(task.args[0])
        assert processed == list(range(100))


def test_enable_logging():
    logging.basicConfig(level=logging.DEBUG)
    logger = logging.getLogger("omniq.storage.file")
    assert logger.name == "omniq.storage.file"


async def test_storage_statistics(seed_backend):
    backend = seed_backend
    async with backend:
        task_queue = backend.get_task_queue()
        for _ in range(3):
            await task_queue.enqueue(Task(func="f"))

        # Get queue sizes
        default_size = await task_queue.get_queue_size("default")
        print(f"Default queue size: {default_size}")
        assert default_size == 3

        # List all tasks
        all_tasks = await task_queue.list_tasks()
        print(f"Total tasks: {len(all_tasks)}")
        assert len(all_tasks) == 3


def test_debug_mode(tmp_path):
    backend = FileBackend(base_dir="./debug_data", fs_kwargs={"debug": True})
    assert backend.root == str(tmp_path / "debug_data")
    logging.getLogger("omniq.storage.file").setLevel(logging.NOTSET)


def test_migration_from_sqlite_backend(tmp_path):
    from omniq.backend.sqlite import SQLiteBackend

    with SQLiteBackend("omniq.db") as before:  # what the seed's source database holds
        q = before.get_task_queue(async_mode=False)
        finished = q.enqueue(Task(func="finished", priority=2))
        in_flight = q.enqueue(Task(func="in_flight", priority=1))
        waiting = q.enqueue(Task(func="waiting"))
        q.finish_task(q.dequeue(["default"]))
        assert q.dequeue(["default"], worker_id="old").id == in_flight
        before.get_result_storage(async_mode=False).set(TaskResult(task_id=finished, result=42))

    # ---- the seed's example, as written ----
    from omniq.backend.sqlite import SQLiteBackend  # noqa: I001 (the seed's order)
    from omniq.backend.file import FileBackend

    # Source SQLite backend
    sqlite_backend = SQLiteBackend("omniq.db")

    # Target file backend
    file_backend = FileBackend("./migrated_data")

    async def migrate():
        async with sqlite_backend, file_backend:
            # Migrate tasks
            sqlite_queue = sqlite_backend.get_task_queue()
            file_queue = file_backend.get_task_queue()

            tasks = await sqlite_queue.list_tasks()
            for task in tasks:
                await file_queue.enqueue(task)

            # Migrate results
            sqlite_results = sqlite_backend.get_result_storage()
            file_results = file_backend.get_result_storage()

            results = await sqlite_results.list_results()
            for result in results:
                await file_results.set(result)

    asyncio.run(migrate())
    # ---- end of the seed's example ----

    with FileBackend("./migrated_data") as after:
        q = after.get_task_queue(async_mode=False)
        assert q.get_task(finished).status is TaskStatus.COMPLETED
        assert after.get_result_storage(async_mode=False).get(finished).result == 42
        moved = q.get_task(in_flight)
        assert moved.status is TaskStatus.PENDING and moved.attempts == 1  # its lease stayed
        assert [t.id for t in q.list_tasks(status="pending")] == [in_flight, waiting]


# ---- the seed's S3 examples, against the moto server on 127.0.0.1 ----------------------------


def test_cloud_storage_s3_example(s3_server):
    # As written in the seed, with the endpoint pointed at the local server.
    backend = FileBackend(
        base_dir="my-bucket/omniq-data",
        fs_protocol="s3",
        fs_kwargs={
            "key": "your-access-key",
            "secret": "your-secret-key",
            "endpoint_url": s3_server.endpoint,
        },
    )
    with backend:
        queue = backend.get_task_queue(async_mode=False)
        task_id = queue.enqueue(Task(func="f"))
        assert queue.get_task(task_id).status is TaskStatus.PENDING
    assert backend.url == "s3://my-bucket/omniq-data"


def test_cloud_storage_s3_from_url(s3_server, monkeypatch):
    # "Or use from_url for convenience": credentials and endpoint from the usual AWS variables.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    backend = FileBackend.from_url("s3://my-bucket/omniq-data")
    with backend:
        queue = backend.get_task_queue(async_mode=False)
        queue.enqueue(Task(func="f"))
        assert queue.get_queue_size() >= 1


async def test_multiple_backends_with_s3_results(s3_server, monkeypatch):
    monkeypatch.setenv("OMNIQ_STORAGE_OPTIONS", __import__("json").dumps(s3_server.options))
    task_backend = FileBackend(base_dir="./tasks", fs_protocol="file")
    result_backend = FileBackend(base_dir="s3://results-bucket", fs_protocol="s3")

    async with task_backend, result_backend:
        task_queue = task_backend.get_task_queue()
        result_storage = result_backend.get_result_storage()

        task = Task(func="process", args=())
        await task_queue.enqueue(task)

        result = TaskResult(task_id=task.id, status=ResultStatus.SUCCESS)
        await result_storage.set(result)
        assert (await result_storage.get(task.id)).status is ResultStatus.SUCCESS


def test_env_fsspec_uri_s3(s3_server, monkeypatch):
    monkeypatch.setenv("OMNIQ_FSSPEC_URI", "s3://my-bucket/omniq")
    monkeypatch.setenv("OMNIQ_STORAGE_OPTIONS", __import__("json").dumps(s3_server.options))
    with FileBackend() as backend:
        assert backend.url == "s3://my-bucket/omniq"
        backend.get_task_queue(async_mode=False).enqueue(Task(func="f"))
