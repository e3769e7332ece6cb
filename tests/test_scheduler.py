"""The scheduler under a controllable clock (memory store): cron, interval, one-shot, DST,
pause/resume, delete, misfire policies, max_instances, periodic declarations, bad input."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from omniq import AsyncOmniQ
from omniq.app import periodic_id
from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.event import EventType
from omniq.models.schedule import MAX_CATCH_UP, ScheduleStatus
from omniq.models.task import TaskStatus

BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    """What the scheduler believes the time is; tests move it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


T0 = datetime(2026, 6, 1, 6, 0, tzinfo=timezone.utc)


@pytest.fixture
async def app():
    application = AsyncOmniQ(f"memory://sched-{uuid.uuid4().hex}")

    @application.task(name="report")
    def report(x: int = 0) -> int:
        return x

    async with application:
        yield application


async def pending_runs(app: AsyncOmniQ) -> list[datetime]:
    """The run times of the tasks the schedules enqueued, in order."""
    tasks = await app.backend.task_queue.list_tasks(status="pending")
    return sorted(datetime.fromisoformat(t.metadata["scheduled_for"]) for t in tasks)


async def test_interval_fires_each_run_once_with_its_schedule_recorded(app):
    clock = Clock(T0)
    s = await app.schedule(
        "report", interval=timedelta(minutes=1), args=(7,), max_instances=None, now=T0
    )
    sched = app.scheduler(clock=clock)
    assert await sched.tick() == 0
    clock.advance(60)
    assert await sched.tick() == 1
    assert await sched.tick() == 0
    clock.advance(60)
    assert await sched.tick() == 1
    assert await pending_runs(app) == [T0 + timedelta(seconds=60), T0 + timedelta(seconds=120)]
    task = await app.backend.task_queue.get_task(s.task_id_for(T0 + timedelta(seconds=60)))
    assert task.func == "report" and task.args == (7,)
    assert task.metadata == {"schedule_id": s.id, "scheduled_for": "2026-06-01T06:01:00+00:00"}
    kinds = [e.event_type for e in await app.backend.event_storage.get_events(task_id=task.id)]
    assert kinds == [EventType.ENQUEUED, EventType.SCHEDULE_FIRED]
    stored = await app.get_schedule(s.id)
    assert stored.run_count == 2 and stored.last_run_at == T0 + timedelta(seconds=120)
    assert stored.next_run_at == T0 + timedelta(seconds=180)


async def test_cron_in_a_time_zone(app):
    clock = Clock(T0)  # 08:00 in Berlin (CEST)
    s = await app.schedule("report", cron="0 9 * * *", tz="Europe/Berlin", now=T0)
    assert s.next_run_at == datetime(2026, 6, 1, 7, 0, tzinfo=timezone.utc)
    sched = app.scheduler(clock=clock)
    clock.advance(3599)
    assert await sched.tick() == 0
    clock.advance(1)
    assert await sched.tick() == 1
    assert (await app.get_schedule(s.id)).next_run_at == datetime(
        2026, 6, 2, 7, tzinfo=timezone.utc
    )


async def runs_through(app: AsyncOmniQ, sched, clock: Clock, until: datetime) -> list[datetime]:
    """Tick at each due time until ``until``; the run times enqueued."""
    await sched.tick()
    while (due := sched.next_due()) is not None and due <= until:
        clock.now = due
        await sched.tick()
    return await pending_runs(app)


@pytest.mark.parametrize(
    ("start", "day", "expected_utc"),
    [
        # Spring forward: 02:30 does not exist on 29 March; it runs once, at 03:00 CEST.
        (datetime(2026, 3, 28, 12, tzinfo=timezone.utc), 29, datetime(2026, 3, 29, 1, 0)),
        # Fall back: 02:30 happens twice on 25 October; it runs once, at the first (CEST).
        (datetime(2026, 10, 24, 12, tzinfo=timezone.utc), 25, datetime(2026, 10, 25, 0, 30)),
    ],
)
async def test_daylight_saving_days_run_a_fixed_time_once(app, start, day, expected_utc):
    clock = Clock(start)
    await app.schedule(
        "report", cron="30 2 * * *", tz="Europe/Berlin", max_instances=None, now=start
    )
    sched = app.scheduler(clock=clock)
    runs = await runs_through(app, sched, clock, start + timedelta(days=3))
    assert len(runs) == 3  # one a day
    on_the_day = [r for r in runs if r.astimezone(BERLIN).day == day]
    assert on_the_day == [expected_utc.replace(tzinfo=timezone.utc)]


async def test_hourly_cron_runs_every_real_hour_across_fall_back(app):
    start = datetime(2026, 10, 24, 22, 0, 30, tzinfo=timezone.utc)
    clock = Clock(start)
    await app.schedule(
        "report", cron="0 * * * *", tz="Europe/Berlin", max_instances=None, now=start
    )
    sched = app.scheduler(clock=clock)
    runs = await runs_through(app, sched, clock, start + timedelta(hours=6))
    assert runs == [
        datetime(2026, 10, 24, 23, tzinfo=timezone.utc) + timedelta(hours=h) for h in range(6)
    ]


async def test_one_shot_runs_once_and_completes(app):
    clock = Clock(T0)
    s = await app.schedule("report", at=T0 + timedelta(seconds=30), now=T0)
    sched = app.scheduler(clock=clock)
    clock.advance(29)
    assert await sched.tick() == 0
    clock.advance(1)
    assert await sched.tick() == 1
    clock.advance(3600)
    assert await sched.tick() == 0
    stored = await app.get_schedule(s.id)
    assert stored.status is ScheduleStatus.COMPLETED and stored.run_count == 1
    assert await app.backend.objects.list("schedules/completed") == [f"{s.id}.json"]


async def test_pause_stops_and_resume_does_not_fire_the_backlog(app):
    start = utcnow() - timedelta(hours=1)  # resume_schedule reads the real time
    clock = Clock(start)
    s = await app.schedule("report", interval=60, max_instances=None, now=start)
    sched = app.scheduler(clock=clock)
    clock.advance(60)
    assert await sched.tick() == 1
    assert await app.pause_schedule(s.id)
    assert not await app.pause_schedule(s.id)
    clock.advance(600)
    assert await sched.tick() == 0  # the app told its scheduler: no wait for a refresh
    resumed_at = utcnow()
    assert await app.resume_schedule(s.id)
    clock.now = resumed_at
    assert await sched.tick() == 0
    stored = await app.get_schedule(s.id)
    assert resumed_at < stored.next_run_at <= resumed_at + timedelta(seconds=60)
    clock.now = stored.next_run_at
    assert await sched.tick() == 1
    assert len(await pending_runs(app)) == 2


async def test_delete_stops_it_and_removes_its_run_claims(app):
    clock = Clock(T0)
    s = await app.schedule("report", interval=60, now=T0)
    sched = app.scheduler(clock=clock)
    clock.advance(60)
    assert await sched.tick() == 1
    assert await app.backend.objects.list(f"schedules/runs/{s.id}") != []
    assert await app.delete_schedule(s.id)
    clock.advance(600)
    assert await sched.tick() == 0
    assert await app.list_schedules() == []
    assert await app.backend.objects.list(f"schedules/runs/{s.id}") == []


async def test_old_run_claims_are_forgotten(app):
    clock = Clock(T0)
    s = await app.schedule("report", interval=60, now=T0)
    sched = app.scheduler(clock=clock)
    for _ in range(5):
        clock.advance(60)
        await sched.tick()
    assert len(await app.backend.objects.list(f"schedules/runs/{s.id}")) == 1


async def skipped(app: AsyncOmniQ) -> list[str]:
    events = await app.backend.event_storage.get_events(event_type=EventType.SCHEDULE_SKIPPED)
    return [e.message or "" for e in events]


async def test_misfire_once_runs_the_backlog_once(app):
    clock = Clock(T0)
    s = await app.schedule("report", interval=60, now=T0)
    clock.advance(600)  # every scheduler was down for ten runs
    assert await app.scheduler(clock=clock).tick() == 1
    assert await pending_runs(app) == [T0 + timedelta(seconds=60)]
    assert (await app.get_schedule(s.id)).next_run_at == T0 + timedelta(seconds=660)


async def test_misfire_all_runs_every_missed_run(app):
    clock = Clock(T0)
    await app.schedule("report", interval=60, misfire="all", max_instances=None, now=T0)
    clock.advance(600)
    assert await app.scheduler(clock=clock).tick() == 10
    assert await pending_runs(app) == [T0 + timedelta(seconds=60 * k) for k in range(1, 11)]


async def test_misfire_all_is_bounded(app):
    clock = Clock(T0)
    await app.schedule("report", interval=1, misfire="all", max_instances=None, now=T0)
    clock.advance(MAX_CATCH_UP * 3)
    assert await app.scheduler(clock=clock).tick() == MAX_CATCH_UP
    runs = await pending_runs(app)
    assert runs[-1] == clock.now and runs[0] == clock.now - timedelta(seconds=MAX_CATCH_UP - 1)
    assert any("beyond the last" in m for m in await skipped(app))


async def test_misfire_skip_runs_nothing_missed(app):
    clock = Clock(T0)
    s = await app.schedule("report", interval=60, misfire="skip", now=T0)
    clock.advance(630)  # ten runs missed, the latest by 30 s (more than misfire_grace)
    sched = app.scheduler(clock=clock)
    assert await sched.tick() == 0
    assert await skipped(app) == ["missed (misfire=skip)"]
    assert (await app.get_schedule(s.id)).next_run_at == T0 + timedelta(seconds=660)
    clock.advance(35)  # 5 s late: within misfire_grace, not missed
    assert await sched.tick() == 1


async def test_max_instances_skips_while_the_previous_run_is_unfinished(app):
    clock = Clock(T0)
    await app.schedule("report", interval=60, now=T0)  # max_instances=1
    sched = app.scheduler(clock=clock)
    clock.advance(60)
    assert await sched.tick() == 1
    clock.advance(60)
    assert await sched.tick() == 0  # the first run's task is still pending
    assert await skipped(app) == ["max_instances=1 still running"]
    queue = app.backend.task_queue
    task = await queue.dequeue("default")
    await queue.finish_task(task, TaskStatus.COMPLETED)
    clock.advance(60)
    assert await sched.tick() == 1
    s2 = await app.schedule(
        "report", interval=60, max_instances=None, misfire="all", id="unbounded", now=T0
    )
    assert s2.id == "unbounded" and s2.max_instances is None
    assert await sched.tick() == 3  # three of its runs are due, none is held back


async def test_periodic_declarations_are_saved_once_and_updated_in_place(tmp_path):
    url = f"memory://periodic-{uuid.uuid4().hex}"

    def declare(every: float) -> AsyncOmniQ:
        """What importing a module with @app.periodic does."""
        app = AsyncOmniQ(url)

        @app.periodic(interval=every, name="heartbeat")
        def heartbeat() -> None:
            pass

        return app

    first = declare(60)
    assert list(first.periodic_schedules) == ["periodic-heartbeat"]
    assert periodic_id("module.Class.<locals>.f") == "periodic-module_Class__locals__f-1794b0ca"
    async with first:
        await first.scheduler().start()
        (sid,) = [s.id for s in await first.list_schedules()]
        await first.pause_schedule(sid)
    again = declare(60)
    async with again:
        await again.scheduler().start()
        assert [s.id for s in await again.list_schedules()] == [sid]
    changed = declare(30)
    async with changed:
        await changed.scheduler().start()
        (stored,) = await changed.list_schedules()
        assert stored.interval == 30 and stored.status is ScheduleStatus.PAUSED


@pytest.mark.parametrize(
    "options",
    [
        {"cron": "not a cron"},
        {"cron": "0 9 * * *", "tz": "Mars/Olympus"},
        {"interval": 0},
        {"interval": -5},
        {"interval": math.nan},
        {"interval": math.inf},
        {"cron": "* * * * *", "interval": 60},
        {},
        {"at": T0 - timedelta(seconds=1)},
        {"interval": 60, "tz": "Europe/Berlin"},
        {"interval": 60, "misfire": "sometimes"},
        {"interval": 60, "max_instances": 0},
        {"interval": 60, "id": "../escape"},
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(app, options):
    with pytest.raises(ValidationError):
        await app.schedule("report", now=T0, **options)
    assert await app.list_schedules() == []


async def test_a_burst_worker_fires_due_runs_unless_its_scheduler_is_off(app):
    earlier = utcnow() - timedelta(seconds=2)
    s = await app.schedule("report", at=earlier + timedelta(seconds=1), args=(5,), now=earlier)
    off = await app.run_worker(burst=True, scheduler=False)
    assert off.claimed == 0 and (await app.get_schedule(s.id)).run_count == 0
    on = await app.run_worker(burst=True)
    assert on.completed == 1
    assert await app.get_result(s.task_id_for(s.run_at), timeout=5) == 5
