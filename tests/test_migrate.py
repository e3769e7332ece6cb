"""`omniq migrate` / omniq.migrate: every store between any two locations, idempotent."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from click.testing import CliRunner

from omniq import migrate, migrate_async
from omniq.backend.base import Backend
from omniq.backend.file import FileBackend
from omniq.backend.sqlite import SQLiteBackend
from omniq.cli import cli
from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.schedule import Schedule, ScheduleStatus, ScheduleType
from omniq.models.task import Task, TaskStatus
from omniq.storage.sqlite import SQLiteTaskQueue


async def fill(b: Backend) -> str:
    """Every kind of state: pending (prioritized, delayed), running, finished, dead letter,
    cancelled; results of both kinds; events; active and paused schedules. Returns the id of
    the task left running."""
    q = b.task_queue
    await q.enqueue(Task(func="first", priority=3, metadata={"k": [1, 2]}))
    await q.enqueue(Task(func="later", eta=utcnow() + timedelta(hours=1)))
    for i in range(4):
        await q.enqueue(Task(func="work", args=(i,), queue_name="other", max_retries=2))
    running = await q.dequeue("other")
    done = await q.dequeue("other")
    await q.finish_task(done)
    dead = await q.dequeue("other")
    await q.finish_task(dead, TaskStatus.FAILED, error="boom")
    cancel = await q.enqueue(Task(func="never"))
    await q.cancel_task(cancel)
    await b.result_storage.set(TaskResult(task_id=done.id, result={"out": 1}, attempts=1))
    await b.result_storage.set(
        TaskResult(task_id=dead.id, status=ResultStatus.FAILED, error="boom", attempts=1)
    )
    await b.event_storage.log_events(
        [TaskEvent(task_id=t.id, event_type=EventType.STARTED) for t in (running, done, dead)]
    )
    every = Schedule(schedule_type=ScheduleType.INTERVAL, func="tick", interval=60)
    paused = Schedule(schedule_type=ScheduleType.CRON, func="daily", cron_expression="0 9 * * *")
    await b.schedule_storage.save_schedule(every)
    await b.schedule_storage.save_schedule(paused)
    await b.schedule_storage.pause_schedule(paused.id)
    return running.id


async def snapshot(b: Backend, running_id: str | None = None) -> dict[str, object]:
    """Every object of every store, by id. The task that was running is expected back as
    pending with its attempts (its lease does not travel)."""
    tasks = {}
    for t in await b.task_queue.list_tasks():
        if t.id == running_id and t.status is TaskStatus.RUNNING:
            t = msgspec.structs.replace(t, status=TaskStatus.PENDING, lease=None)
        tasks[t.id] = t
    return {
        "tasks": tasks,
        "results": {r.task_id: r for r in await b.result_storage.list_results()},
        "events": {e.id: e for e in await b.event_storage.get_events()},
        "schedules": {s.id: s for s in await b.schedule_storage.list_schedules()},
    }


def copied(report) -> dict[str, int]:
    return {s.store: s.copied for s in report.stores}


async def test_round_trip_directory_sqlite_s3_directory(tmp_path, s3_server):
    origin = FileBackend(str(tmp_path / "origin"))
    async with origin:
        running_id = await fill(origin)
        expected = await snapshot(origin, running_id)
    # 3 events logged, and the ENQUEUED event each of the 3 finished tasks' records implies.
    assert len(expected["tasks"]) == 7 and len(expected["events"]) == 6

    db = f"sqlite:///{tmp_path / 'omniq.db'}"
    bucket = FileBackend.from_url(s3_server.url(), fs_kwargs=dict(s3_server.options))
    async with bucket:
        first = [
            await migrate_async(str(tmp_path / "origin"), db),
            await migrate_async(db, bucket),
            await migrate_async(bucket, str(tmp_path / "back")),
        ]
        again = [
            await migrate_async(str(tmp_path / "origin"), db),
            await migrate_async(db, bucket),
            await migrate_async(bucket, str(tmp_path / "back")),
        ]
    # A file store implies the ENQUEUED event of each finished task it holds: into SQLite all
    # 6 events are copied, into a file store the 3 implied ones are already there.
    for report, events in zip(first, (6, 3, 3), strict=True):
        assert report.ok and copied(report) == {
            "tasks": 7, "results": 2, "events": events, "schedules": 2,
        }, report  # fmt: skip
    for report in again:
        assert report.ok and set(copied(report).values()) == {0}, report

    async with FileBackend(str(tmp_path / "back")) as back:
        assert await snapshot(back) == expected
        assert (await back.task_queue.get_task(running_id)).attempts == 1
        assert (await back.schedule_storage.list_schedules(ScheduleStatus.PAUSED))[0].func == (
            "daily"
        )
        task = await back.task_queue.dequeue(["default"])  # the order survived the trip
        assert task.func == "first"


def test_blocking_call_resumes_after_a_partial_copy(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    with SQLiteBackend.from_url(src) as b:
        q = b.get_task_queue(async_mode=False)
        ids = [q.enqueue(Task(func="f", args=(i,))) for i in range(5)]
    with FileBackend(str(tmp_path / "dst")) as d:  # as if a first run stopped after two
        for task_id in ids[:2]:
            with SQLiteBackend.from_url(src) as b:
                d.get_task_queue(async_mode=False).enqueue(
                    b.get_task_queue(async_mode=False).get_task(task_id)
                )
    seen: list[tuple[str, int, int]] = []
    report = migrate(src, str(tmp_path / "dst"), what="tasks", progress=lambda *a: seen.append(a))
    assert report.ok and report.stores[0].present == 2 and report.stores[0].copied == 3
    assert seen[0] == ("tasks", 2, 5) and seen[-1] == ("tasks", 5, 5)


def test_cli_dry_run_copies_nothing_and_a_mismatch_exits_non_zero(tmp_path, monkeypatch):
    src, dst = str(tmp_path / "src"), f"sqlite:///{tmp_path / 'dst.db'}"
    with FileBackend(src) as b:
        b.get_task_queue(async_mode=False).enqueue(Task(func="f"))
    runner = CliRunner()
    dry = runner.invoke(cli, ["migrate", src, dst, "--dry-run"], obj={})
    assert dry.exit_code == 0 and "1 to copy" in dry.output, dry.output
    with SQLiteBackend.from_url(dst) as d:
        assert d.get_task_queue(async_mode=False).list_tasks() == []

    async def lose_everything(self, task):  # a destination that drops what it is given
        return task.id

    monkeypatch.setattr(SQLiteTaskQueue, "enqueue", lose_everything)
    bad = runner.invoke(cli, ["migrate", src, dst, "--what", "tasks"], obj={})
    assert bad.exit_code == 1 and "0/1" in bad.output, bad.output

    wrong = runner.invoke(cli, ["migrate", src, dst, "--what", "tasks,jobs"], obj={})
    assert wrong.exit_code == 2 and "jobs" in wrong.output
    with pytest.raises(ValidationError):
        migrate(src, dst, what=[])


async def test_a_sharded_queue_stays_sharded(tmp_path):
    """Between directory and bucket locations the shard count travels, set before the tasks
    are copied so that they spread as at the source; SQLite has no shards (nothing to carry)."""
    source = FileBackend(base_dir=str(tmp_path / "src"), fs_protocol="file")
    async with source:
        await source.task_queue.set_shards("default", 4)
        ids = {await source.task_queue.enqueue(Task(func="f")) for _ in range(20)}
    dest = f"memory://migrate-shards-{tmp_path.name}"
    report = await migrate_async(tmp_path / "src", dest, what="tasks")
    assert report.ok, report.stores
    async with FileBackend.from_url(dest) as copy:
        assert await copy.task_queue.get_shards("default") == 4
        shards = [await copy.objects.list(f"tasks/default/s0{k}/pending") for k in (1, 2, 3)]
        assert any(shards)
        assert {t.id for t in await copy.task_queue.list_tasks("default")} == ids
    report = await migrate_async(tmp_path / "src", f"sqlite:///{tmp_path / 'q.db'}")
    assert report.ok, report.stores
