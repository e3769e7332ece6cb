"""Schedule storage contract, on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.schedule import Schedule, ScheduleStatus, ScheduleType


def cron(**kw):
    return Schedule(
        schedule_type=ScheduleType.CRON, func="daily_report", cron_expression="0 9 * * *", **kw
    )


async def test_save_get_list(backend):
    ss = backend.get_schedule_storage()
    s = cron()
    await ss.save_schedule(s)
    assert await ss.get_schedule(s.id) == s
    assert await ss.list_schedules() == [s]
    assert await ss.get_schedule("missing") is None
    if hasattr(backend, "objects"):  # file backends: the folder is the status
        assert await backend.objects.list("schedules/active") == [f"{s.id}.json"]


async def test_ready_schedules(backend):
    ss = backend.get_schedule_storage()
    due = Schedule(
        schedule_type=ScheduleType.INTERVAL, func="tick", interval=60,
        next_run_at=utcnow() - timedelta(seconds=1),
    )  # fmt: skip
    later = cron()
    once = Schedule(
        schedule_type=ScheduleType.ONCE, func="once", run_at=utcnow() + timedelta(days=1)
    )
    for s in (due, later, once):
        await ss.save_schedule(s)
    assert [s.id for s in await ss.get_ready_schedules()] == [due.id]
    tomorrow = utcnow() + timedelta(days=2)
    assert {s.id for s in await ss.get_ready_schedules(now=tomorrow)} == {due.id, later.id, once.id}


async def test_pause_resume_delete(backend):
    ss = backend.get_schedule_storage()
    s = Schedule(
        schedule_type=ScheduleType.INTERVAL, func="tick", interval=10,
        next_run_at=utcnow() - timedelta(hours=1),
    )  # fmt: skip
    await ss.save_schedule(s)
    assert await ss.pause_schedule(s.id) is True
    assert await ss.pause_schedule(s.id) is False
    assert (await ss.get_schedule(s.id)).status is ScheduleStatus.PAUSED
    assert await ss.get_ready_schedules() == []
    assert [x.id for x in await ss.list_schedules(status="paused")] == [s.id]
    assert await ss.resume_schedule(s.id) is True
    resumed = await ss.get_schedule(s.id)
    assert resumed.status is ScheduleStatus.ACTIVE
    assert resumed.next_run_at > utcnow()  # missed runs are not fired on resume
    assert await ss.delete_schedule(s.id) is True
    assert await ss.delete_schedule(s.id) is False
    assert await ss.list_schedules() == []


async def test_advance_and_complete(backend):
    ss = backend.get_schedule_storage()
    s = Schedule(schedule_type=ScheduleType.ONCE, func="once", run_at=utcnow())
    fired = s.advance()
    assert fired.status is ScheduleStatus.COMPLETED and fired.run_count == 1
    await ss.save_schedule(fired)
    assert [x.id for x in await ss.list_schedules(status=ScheduleStatus.COMPLETED)] == [s.id]
    assert await ss.list_schedules(status=ScheduleStatus.ACTIVE) == []


def test_cron_next_runs_in_timezone():
    base = datetime(2024, 1, 15, 0, 0, tzinfo=timezone.utc)
    s = cron(timezone="Europe/Berlin", created_at=base)
    assert s.next_run_at == datetime(2024, 1, 15, 8, 0, tzinfo=timezone.utc)


def test_interval_skips_missed_runs():
    start = utcnow() - timedelta(minutes=10)
    s = Schedule(schedule_type=ScheduleType.INTERVAL, func="f", interval=60, last_run_at=start)
    assert utcnow() < s.compute_next_run(utcnow()) <= utcnow() + timedelta(seconds=61)


def test_max_runs_ends_schedule():
    s = Schedule(schedule_type=ScheduleType.INTERVAL, func="f", interval=1, max_runs=2)
    s = s.advance()
    assert s.status is ScheduleStatus.ACTIVE
    s = s.advance()
    assert s.status is ScheduleStatus.COMPLETED and s.next_run_at is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule_type": ScheduleType.CRON, "cron_expression": "61 * * * *"},
        {"schedule_type": ScheduleType.CRON, "cron_expression": "not cron"},
        {"schedule_type": ScheduleType.CRON},
        {"schedule_type": ScheduleType.INTERVAL},
        {"schedule_type": ScheduleType.INTERVAL, "interval": 0},
        {"schedule_type": ScheduleType.INTERVAL, "interval": -5},
        {"schedule_type": ScheduleType.ONCE},
        {"schedule_type": "hourly"},
        {
            "schedule_type": ScheduleType.CRON,
            "cron_expression": "* * * * *",
            "timezone": "Mars/Base",
        },
        {"schedule_type": ScheduleType.INTERVAL, "interval": 5, "queue_name": "../q"},
        {"schedule_type": ScheduleType.INTERVAL, "interval": 5, "max_runs": 0},
    ],
)
def test_invalid_schedules(kwargs):
    with pytest.raises(ValidationError):
        Schedule(func="f", **kwargs)


async def test_bad_ids(backend):
    ss = backend.get_schedule_storage()
    for call in (ss.get_schedule, ss.pause_schedule, ss.resume_schedule, ss.delete_schedule):
        with pytest.raises(ValidationError):
            await call("../../x")
    with pytest.raises(ValidationError):
        await ss.list_schedules(status="sleeping")
    with pytest.raises(ValidationError):
        await ss.save_schedule({"func": "x"})  # type: ignore[arg-type]
