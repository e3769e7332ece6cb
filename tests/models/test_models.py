"""Models: defaults, validation at construction, exact round trips in every format."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from omniq.exceptions import ValidationError
from omniq.models import (
    EventType,
    Lease,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
)
from omniq.models.ids import new_id
from omniq.serialization import Serializer

FORMATS = ["json", "msgpack", "pickle"]


def samples():
    now = datetime(2024, 1, 15, 9, 30, 1, 123456, tzinfo=timezone.utc)
    return [
        Task(
            func="my_function", args=(1, "two", 3.5, None, [1, 2], {"k": True}), kwargs={"x": 1},
            queue_name="high_priority", priority=7, eta=now, ttl=60, timeout=5, max_retries=3,
            attempts=2, created_at=now, error="e", metadata={"m": 1},
            lease=Lease(token="abc", expires_at=now, worker_id="w1", key="k"),
        ),
        TaskResult(task_id="t_123", status=ResultStatus.SUCCESS, result={"out": [1, 2]}, ttl=5),
        TaskResult(task_id="t_1", status=ResultStatus.FAILED, error="boom", traceback="tb"),
        TaskEvent(task_id="t_123", event_type=EventType.COMPLETED, message="done", data={"a": 1}),
        Schedule(schedule_type=ScheduleType.CRON, func="daily_report", cron_expression="0 9 * * *"),
        Schedule(schedule_type=ScheduleType.INTERVAL, func="tick", interval=2.5, max_runs=3),
        Schedule(schedule_type=ScheduleType.ONCE, func="once", run_at=now),
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("obj", samples(), ids=lambda o: type(o).__name__)
def test_roundtrip_exact(fmt, obj):
    s = Serializer(fmt)
    back = s.decode(s.encode(obj), type(obj), "x" + s.extension)
    assert back == obj
    assert type(back) is type(obj)


def test_seed_constructors_and_defaults():
    t = Task(func="my_function", args=(1, 2, 3), queue_name="default")
    assert t.status is TaskStatus.PENDING and t.kwargs == {} and t.priority == 0
    assert t.created_at.tzinfo is not None and t.attempts == 0 and t.max_retries == 0
    assert Task(func="process_data", args=("data",)).queue_name == "default"
    r = TaskResult(task_id="task_123", status=ResultStatus.SUCCESS, result={"output": "x"})
    assert r.is_success and r.completed_at.tzinfo is not None
    e = TaskEvent(task_id="task_123", event_type=EventType.COMPLETED, message="ok")
    assert e.timestamp.tzinfo is not None
    s = Schedule(schedule_type=ScheduleType.CRON, func="daily_report", cron_expression="0 9 * * *")
    assert s.next_run_at is not None and s.next_run_at.hour == 9


def test_ids_sort_by_creation_and_are_unique():
    ids = [new_id() for _ in range(10000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)


def test_ids_spell_their_creation_millisecond_in_crockford_base32():
    """The id is 26 base-32 digits (Crockford's alphabet) of 48 bits of Unix milliseconds and
    80 bits that rise: ids written by older versions keep sorting with new ones."""
    import time

    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(50)]
    after = time.time_ns() // 1_000_000
    for i in ids:
        value = 0
        for ch in i:
            value = value * 32 + alphabet.index(ch)
        assert before <= value >> 80 <= after, i


def test_delay_sets_eta_and_naive_datetimes_become_utc():
    t = Task(func="f", delay=10)
    assert t.eta == t.created_at + timedelta(seconds=10)
    naive = datetime(2024, 1, 1, 12, 0)
    t2 = Task(func="f", eta=naive)
    assert t2.eta.tzinfo is timezone.utc and t2.eta == naive.astimezone(timezone.utc)
    assert Task(func="f", args=[1, 2]).args == (1, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"func": ""},
        {"func": "   "},
        {"func": None},
        {"func": "f", "ttl": -1},
        {"func": "f", "timeout": 0},
        {"func": "f", "delay": -3},
        {"func": "f", "status": "unknown"},
        {"func": "f", "priority": 10**6},
        {"func": "f", "priority": "high"},
        {"func": "f", "max_retries": -1},
        {"func": "f", "args": "abc"},
        {"func": "f", "kwargs": {1: 2}},
        {"func": "f", "queue_name": "../up"},
        {"func": "f", "id": "../../etc"},
        {"func": "f", "eta": "tomorrow"},
    ],
)
def test_task_invalid_values(kwargs):
    with pytest.raises(ValidationError):
        Task(**kwargs)


def test_validation_error_is_a_value_error():
    with pytest.raises(ValueError):
        Task(func="")
