"""The scheduler: turns due schedule runs into tasks, each run exactly once across schedulers.

Every worker runs one (``Worker(scheduler=True)``, the default) and ``omniq scheduler`` runs one
alone. Nothing elects a leader: a scheduler computes due run times locally from a cached copy of
the active schedules, and before it acts on a run it claims the run through the store
(``ScheduleStorage.claim_run``, an exclusive create). Of any number of schedulers, the one that
wins the claim decides the run — enqueue its task, or skip it — and writes the advanced schedule;
the others move on. The task of a run has an id derived from (schedule id, run time), so a
scheduler that takes over a claim whose holder died (older than ``stale_after``) finds the task
if it was already enqueued and does not enqueue it twice. docs/storage-protocol.md, "Schedules".

The cache is re-read every ``refresh`` seconds (a change made elsewhere takes effect within that
bound) and at the next tick after a change made through the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
from croniter import croniter

from omniq.backend.base import Backend
from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.models.schedule import (
    MAX_CATCH_UP,
    Misfire,
    Schedule,
    ScheduleStatus,
    ScheduleType,
)
from omniq.models.task import Task, TaskStatus
from omniq.storage.base import ScheduleStorage

logger = logging.getLogger("omniq.scheduler")

Clock = Callable[[], datetime]

# The fields that say what a schedule runs and when; an upsert that changes none of them leaves
# the stored schedule (its state: next run, run count, paused) alone.
RECIPE_FIELDS = (
    "schedule_type", "func", "args", "kwargs", "queue_name", "cron_expression", "interval",
    "run_at", "timezone", "max_runs", "priority", "max_retries", "timeout", "misfire",
    "max_instances",
)  # fmt: skip
_TIMING_FIELDS = ("schedule_type", "cron_expression", "interval", "run_at", "timezone")


@dataclass
class Plan:
    """What the winner of a run does with it."""

    fire: bool
    next_run_at: datetime | None
    reason: str | None = None  # why a run is skipped


def first_run_after(schedule: Schedule, start: datetime, after: datetime) -> datetime | None:
    """The first run of the sequence that starts at ``start`` strictly later than ``after``."""
    if after < start:
        return start
    if schedule.schedule_type is ScheduleType.ONCE:
        return None
    if schedule.schedule_type is ScheduleType.INTERVAL:
        assert schedule.interval is not None
        step = timedelta(seconds=schedule.interval)
        return start + step * ((after - start) // step + 1)
    return schedule.run_after(after)


def start_of_last_runs(schedule: Schedule, start: datetime, now: datetime, keep: int) -> datetime:
    """The earliest of the ``keep`` latest runs at or before ``now`` (of a sequence from
    ``start`` with more than ``keep`` due runs)."""
    if schedule.schedule_type is ScheduleType.INTERVAL:
        assert schedule.interval is not None
        step = timedelta(seconds=schedule.interval)
        due = (now - start) // step + 1
        return start + step * (due - keep)
    it = croniter(schedule.cron_expression, now.astimezone(ZoneInfo(schedule.timezone)))
    earliest = now
    for _ in range(keep):
        earliest = it.get_prev(datetime)
    return earliest.astimezone(timezone.utc)


def plan_run(schedule: Schedule, run_at: datetime, now: datetime, grace: float) -> Plan:
    """Apply the misfire policy to the run at ``run_at``: a run more than ``grace`` seconds late
    was missed (no scheduler ran at its time)."""
    nxt = schedule.run_after(run_at)
    if (now - run_at).total_seconds() <= grace:
        return Plan(True, nxt)
    if schedule.misfire is Misfire.ONCE:  # one run now stands for the whole backlog
        return Plan(True, first_run_after(schedule, run_at, now))
    if schedule.misfire is Misfire.SKIP:
        after = now - timedelta(seconds=grace)
        return Plan(False, first_run_after(schedule, run_at, after), "missed (misfire=skip)")
    due, t = 0, run_at  # type: tuple[int, datetime | None]
    while t is not None and t <= now and due <= MAX_CATCH_UP:
        due, t = due + 1, schedule.run_after(t)
    if due <= MAX_CATCH_UP:
        return Plan(True, nxt)
    start = start_of_last_runs(schedule, run_at, now, MAX_CATCH_UP)
    return Plan(False, start, f"missed beyond the last {MAX_CATCH_UP} (misfire=all)")


async def upsert_schedule(store: ScheduleStorage, schedule: Schedule, now: datetime) -> Schedule:
    """Save ``schedule``, or update the stored one of the same id if its recipe changed,
    keeping its state (paused, run count, last run). Returns what is stored."""
    stored = await store.get_schedule(schedule.id)
    if stored is None:
        await store.save_schedule(schedule)
        return schedule
    if all(getattr(stored, f) == getattr(schedule, f) for f in RECIPE_FIELDS):
        return stored
    updated = msgspec.structs.replace(
        stored, **{f: getattr(schedule, f) for f in RECIPE_FIELDS}, updated_at=now
    )
    if any(getattr(stored, f) != getattr(schedule, f) for f in _TIMING_FIELDS):
        updated.next_run_at = schedule.next_run_at
    await store.save_schedule(updated)
    return updated


def default_owner() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


class Scheduler:
    """Fires the due runs of the schedules in ``backend``.

    ``clock`` (an aware UTC ``datetime`` each call) is the time the scheduler believes: tests pass
    a controllable one and call ``tick()``; ``run()`` ticks every ``poll_interval`` real seconds
    until ``stop()``. ``periodic`` schedules (from ``@app.periodic``) are saved or updated at
    ``start()``. ``stale_after`` seconds after a claim, a run whose claimant never finished it is
    taken over; ``misfire_grace`` seconds late, a run counts as missed.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock = utcnow,
        periodic: Iterable[Schedule] = (),
        poll_interval: float = 1.0,
        refresh: float = 30.0,
        stale_after: float = 60.0,
        misfire_grace: float = 10.0,
        owner: str | None = None,
    ) -> None:
        for name, value in (
            ("poll_interval", poll_interval), ("refresh", refresh),
            ("stale_after", stale_after), ("misfire_grace", misfire_grace),
        ):  # fmt: skip
            if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                raise ValidationError(f"Scheduler {name} must be a number > 0, got {value!r}")
        self.backend = backend
        self.clock = clock
        self.periodic = list(periodic)
        self.poll_interval = float(poll_interval)
        self.refresh_interval = float(refresh)
        self.stale_after = float(stale_after)
        self.misfire_grace = float(misfire_grace)
        self.owner = owner or default_owner()
        self._cache: dict[str, Schedule] = {}
        self._next_refresh: datetime | None = None  # None: refresh at the next tick
        self._stop = asyncio.Event()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Save or update the periodic schedules; warn where claims cannot be exclusive."""
        objects = getattr(self.backend, "objects", None)
        if objects is not None and not objects.capabilities.conditional_create:
            logger.warning(
                "%s has no exclusive create: run one scheduler only (`--no-scheduler` on the "
                "other workers), or two could fire the same run",
                objects.url,
            )
        for schedule in self.periodic:
            await self.upsert(schedule)

    async def upsert(self, schedule: Schedule) -> Schedule:
        """``upsert_schedule`` into this scheduler's store; re-read at the next tick."""
        stored = await upsert_schedule(self.backend.schedule_storage, schedule, self.clock())
        self.invalidate()
        return stored

    def invalidate(self) -> None:
        """Re-read the schedules at the next tick (a change was made through this process)."""
        self._next_refresh = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Tick until ``stop()``."""
        while not self._stop.is_set():
            await self.run_once()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_interval)

    async def run_once(self) -> int:
        """``start()`` (the first time) and ``tick()``; a failure (store unreachable) is logged
        and retried at the next call. Returns how many tasks were enqueued."""
        try:
            if not self._started:
                await self.start()
                self._started = True
            return await self.tick()
        except Exception as exc:
            logger.error("scheduler %s: tick failed: %s", self.owner, exc)
            self.invalidate()
            return 0

    # ------------------------------------------------------------------ ticks

    async def refresh(self) -> None:
        """Re-read the active schedules (one listing plus a read per schedule)."""
        active = await self.backend.schedule_storage.list_schedules(ScheduleStatus.ACTIVE)
        self._cache = {s.id: s for s in active}
        self._next_refresh = self.clock() + timedelta(seconds=self.refresh_interval)

    async def tick(self) -> int:
        """Decide every run that is due by the clock; return how many tasks were enqueued."""
        now = self.clock()
        if self._next_refresh is None or now >= self._next_refresh:
            await self.refresh()
        fired = 0
        for schedule_id in list(self._cache):
            current: Schedule | None = self._cache[schedule_id]
            while current is not None and current.next_run_at is not None:
                if current.next_run_at > now:
                    break
                current, enqueued = await self._decide(current, now)
                fired += enqueued
            if current is None or current.next_run_at is None:
                self._cache.pop(schedule_id, None)
            else:
                self._cache[schedule_id] = current
        return fired

    def next_due(self) -> datetime | None:
        """The earliest run time in the cache."""
        times = [s.next_run_at for s in self._cache.values() if s.next_run_at is not None]
        return min(times, default=None)

    async def _decide(self, cached: Schedule, now: datetime) -> tuple[Schedule | None, int]:
        """Claim the run at ``cached.next_run_at``; the winner fires or skips it. Returns the
        schedule as this scheduler now sees it (``None``: no longer active) and 1 if a task was
        enqueued."""
        run_at = cached.next_run_at
        assert run_at is not None
        store = self.backend.schedule_storage
        generation = await store.claim_run(
            cached.id, run_at, owner=self.owner, now=now, stale_after=self.stale_after
        )
        if generation is None:
            # Another scheduler decides this run; follow it with the same plan (a guess that the
            # next refresh corrects).
            guess = msgspec.structs.replace(cached)
            guess.next_run_at = plan_run(cached, run_at, now, self.misfire_grace).next_run_at
            return guess, 0
        stored = await store.get_schedule(cached.id)
        if (
            stored is None
            or stored.status is not ScheduleStatus.ACTIVE
            or stored.next_run_at is None
            or stored.next_run_at > run_at
        ):
            return stored if stored and stored.status is ScheduleStatus.ACTIVE else None, 0
        plan = plan_run(stored, run_at, now, self.misfire_grace)
        task_id = stored.task_id_for(run_at)
        queue = self.backend.task_queue
        # A take-over (generation > 0) continues a run a scheduler claimed and then died on:
        # it is not a missed run, and its task may already be enqueued.
        enqueued_before = generation > 0 and await queue.get_task(task_id) is not None
        if generation > 0:
            plan.fire, plan.reason = True, None
        if (
            plan.fire
            and not enqueued_before
            and await self._instances_running(stored) >= (stored.max_instances or 0) > 0
        ):
            plan.fire, plan.reason = False, f"max_instances={stored.max_instances} still running"
        enqueued = 0
        if plan.fire and not enqueued_before:
            await queue.enqueue(self._task_for(stored, run_at, task_id))
            enqueued = 1
        updated = self._advanced(stored, run_at, plan, task_id, now)
        recorded = await store.record_run(updated, run_at)  # False: paused or deleted meanwhile
        await self._record(stored, run_at, task_id, plan, enqueued)
        if recorded:
            await store.forget_runs(stored.id, before=run_at)
        active = recorded and updated.status is ScheduleStatus.ACTIVE
        return (updated if active else None), enqueued

    async def _instances_running(self, schedule: Schedule) -> int:
        """How many tasks of the schedule's latest runs are still pending or running."""
        if schedule.max_instances is None:
            return 0
        busy = 0
        for task_id in schedule.recent_task_ids:
            # A result means finished (one read); only without one is the task looked up.
            if await self.backend.result_storage.get(task_id) is not None:
                continue
            task = await self.backend.task_queue.get_task(task_id)
            if task is not None and task.status in (TaskStatus.PENDING, TaskStatus.RUNNING):
                busy += 1
        return busy

    def _task_for(self, schedule: Schedule, run_at: datetime, task_id: str) -> Task:
        return Task(
            id=task_id, func=schedule.func, args=schedule.args, kwargs=dict(schedule.kwargs),
            queue_name=schedule.queue_name, priority=schedule.priority,
            max_retries=schedule.max_retries, timeout=schedule.timeout,
            metadata={"schedule_id": schedule.id, "scheduled_for": run_at.isoformat()},
        )  # fmt: skip

    def _advanced(
        self, schedule: Schedule, run_at: datetime, plan: Plan, task_id: str, now: datetime
    ) -> Schedule:
        updated = msgspec.structs.replace(schedule, updated_at=now)
        # Set after the copy: replace() re-runs __post_init__, which fills in a None next run.
        updated.next_run_at = plan.next_run_at
        if plan.fire:
            updated.run_count += 1
            updated.last_run_at = run_at
            keep = schedule.max_instances or 0
            updated.recent_task_ids = [*schedule.recent_task_ids, task_id][-keep:] if keep else []
        done = schedule.max_runs is not None and updated.run_count >= schedule.max_runs
        if updated.next_run_at is None or done:
            updated.next_run_at = None
            updated.status = ScheduleStatus.COMPLETED
        return updated

    async def _record(
        self, schedule: Schedule, run_at: datetime, task_id: str, plan: Plan, enqueued: int
    ) -> None:
        data = {"schedule_id": schedule.id, "run_at": run_at.isoformat(), "func": schedule.func}
        events = []
        if enqueued:
            events.append(
                TaskEvent(
                    task_id=task_id,
                    event_type=EventType.ENQUEUED,
                    queue_name=schedule.queue_name,
                    data={"func": schedule.func, "eta": None},
                )
            )
        if plan.fire:
            events.append(
                TaskEvent(
                    task_id=task_id,
                    event_type=EventType.SCHEDULE_FIRED,
                    queue_name=schedule.queue_name,
                    message=f"schedule {schedule.id}",
                    data=data,
                    worker_id=self.owner,
                )
            )
            logger.info("schedule %s: run at %s -> task %s", schedule.id, run_at, task_id)
        else:
            events.append(
                TaskEvent(
                    task_id=task_id,
                    event_type=EventType.SCHEDULE_SKIPPED,
                    queue_name=schedule.queue_name,
                    message=plan.reason,
                    data=data,
                    worker_id=self.owner,
                )
            )
            logger.info("schedule %s: run at %s skipped: %s", schedule.id, run_at, plan.reason)
        await self.backend.event_storage.log_events(events)
