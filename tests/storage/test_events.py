"""Event storage contract, on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from omniq.exceptions import ValidationError
from omniq.models.event import EventType, TaskEvent


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=timezone.utc)


async def test_log_and_filter(backend):
    es = backend.get_event_storage()
    await es.log_event(TaskEvent(task_id="t1", event_type=EventType.ENQUEUED, timestamp=at(15, 9)))
    await es.log_event(
        TaskEvent(task_id="t1", event_type=EventType.COMPLETED, timestamp=at(15, 10))
    )
    await es.log_event(TaskEvent(task_id="t2", event_type=EventType.FAILED, timestamp=at(16)))
    t1 = await es.get_events(task_id="t1")
    assert [e.event_type for e in t1] == [EventType.ENQUEUED, EventType.COMPLETED]
    failed = await es.get_events(event_type=EventType.FAILED)
    assert [e.task_id for e in failed] == ["t2"]
    assert [e.task_id for e in await es.get_events(event_type="completed")] == ["t1"]
    assert len(await es.get_events()) == 3
    assert [e.task_id for e in await es.get_events(since=at(16, 0))] == ["t2"]
    assert len(await es.get_events(until=at(15, 9))) == 1
    assert len(await es.get_events(limit=2)) == 2
    assert await es.get_events(task_id="nobody") == []


@pytest.mark.file_layout("event objects by UTC day folder")
async def test_partitioned_by_utc_day(backend):
    es = backend.get_event_storage()
    event = TaskEvent(task_id="t1", event_type=EventType.STARTED, timestamp=at(15))
    await es.log_event(event)
    names = await backend.objects.list("events/2024/01/15/t1")
    assert names == [f"{event.id}.started.json"]


@pytest.mark.file_layout("counts object reads (SQLite reads one task's rows by index)")
async def test_reading_one_task_does_not_read_other_tasks(backend, monkeypatch):
    es = backend.get_event_storage()
    for i in range(20):
        await es.log_event(
            TaskEvent(task_id=f"other{i}", event_type=EventType.ENQUEUED, timestamp=at(15))
        )
    await es.log_event(TaskEvent(task_id="mine", event_type=EventType.ENQUEUED, timestamp=at(15)))
    reads: list[str] = []
    original = backend.objects.get

    async def counting_get(key):
        reads.append(key)
        return await original(key)

    monkeypatch.setattr(backend.objects, "get", counting_get)
    assert len(await es.get_events(task_id="mine")) == 1
    assert len(reads) == 1 and "/mine/" in reads[0]


async def test_batch_is_one_object_per_task_and_day(backend):
    es = backend.get_event_storage()
    batch = [
        TaskEvent(task_id="t1", event_type=EventType.STARTED, timestamp=at(15, 1)),
        TaskEvent(task_id="t1", event_type=EventType.COMPLETED, timestamp=at(15, 2)),
        TaskEvent(task_id="t2", event_type=EventType.STARTED, timestamp=at(15, 3)),
    ]
    await es.log_events(batch)
    if hasattr(backend, "objects"):  # file backends: one object per task and day
        assert len(await backend.objects.list("events/2024/01/15/t1")) == 1
    assert await es.get_events(task_id="t1") == batch[:2]
    assert [e.task_id for e in await es.get_events(event_type=EventType.COMPLETED)] == ["t1"]


async def test_cleanup_expired_events_by_day(backend_factory):
    b = backend_factory(event_ttl=86400)
    async with b:
        es = b.get_event_storage()
        await es.log_event(TaskEvent(task_id="old", event_type=EventType.ENQUEUED, timestamp=at(1)))
        await es.log_event(
            TaskEvent(task_id="new", event_type=EventType.ENQUEUED, timestamp=at(10))
        )
        assert await es.cleanup_expired_events(now=at(10)) == 1
        assert [e.task_id for e in await es.get_events()] == ["new"]


async def test_bad_input(backend):
    es = backend.get_event_storage()
    with pytest.raises(ValidationError):
        await es.get_events(task_id="../x")
    with pytest.raises(ValidationError):
        await es.get_events(event_type="exploded")
    with pytest.raises(ValidationError):
        await es.get_events(limit=-1)
    with pytest.raises(ValidationError):
        await es.log_event("started")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TaskEvent(task_id="t", event_type="nope")
    with pytest.raises(ValidationError):
        TaskEvent(task_id="a/b", event_type=EventType.STARTED)


async def test_naive_since_is_local_time(backend):
    es = backend.get_event_storage()
    await es.log_event(TaskEvent(task_id="t", event_type=EventType.STARTED))
    naive_past = datetime.now() - timedelta(minutes=1)
    assert len(await es.get_events(since=naive_past)) == 1
