"""Schedules: cron, interval and one-shot recipes that turn into tasks when due."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

from omniq.exceptions import ValidationError
from omniq.models._time import as_utc, check_seconds, optional_utc, utcnow
from omniq.models.ids import new_id, validate_id, validate_name


class ScheduleType(str, Enum):
    CRON = "cron"
    INTERVAL = "interval"
    ONCE = "once"


class Misfire(str, Enum):
    """What a scheduler does with runs whose time passed while no scheduler was running."""

    ONCE = "once"  # run once now for the whole backlog
    ALL = "all"  # run every missed run (at most ``MAX_CATCH_UP`` of them)
    SKIP = "skip"  # run none of them; wait for the next run time


MAX_CATCH_UP = 100  # misfire="all" replays at most this many missed runs, then skips ahead


class ScheduleStatus(str, Enum):
    """Which directory the schedule lives in: ``schedules/active|paused|completed``."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RECIPE_FIELD = {
    ScheduleType.CRON: "cron_expression",
    ScheduleType.INTERVAL: "interval",
    ScheduleType.ONCE: "run_at",
}


class Schedule(msgspec.Struct, kw_only=True):
    """A recipe for tasks: ``Schedule(schedule_type=ScheduleType.CRON, func="daily_report",
    cron_expression="0 9 * * *")``.

    CRON needs ``cron_expression`` (evaluated in ``timezone``, default UTC), INTERVAL needs
    ``interval`` seconds, ONCE needs ``run_at``. ``next_run_at`` is computed when not given.
    ``max_runs`` ends the schedule (status COMPLETED) after that many runs.

    ``misfire`` says what happens to runs missed while no scheduler ran (see ``Misfire``);
    ``max_instances`` (default 1, ``None``: no limit) skips a run while that many tasks of earlier
    runs are still pending or running. ``recent_task_ids`` are the tasks of the latest runs
    (kept by the scheduler for that check).
    """

    schedule_type: ScheduleType
    func: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    queue_name: str = "default"
    id: str = msgspec.field(default_factory=new_id)
    cron_expression: str | None = None
    interval: float | None = None
    run_at: datetime | None = None
    timezone: str = "UTC"
    status: ScheduleStatus = ScheduleStatus.ACTIVE
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    run_count: int = 0
    max_runs: int | None = None
    priority: int = 0
    max_retries: int = 0
    timeout: float | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime | None = None
    metadata: dict[str, Any] = {}
    misfire: Misfire = Misfire.ONCE
    max_instances: int | None = 1
    recent_task_ids: list[str] = []

    def __post_init__(self) -> None:
        if not isinstance(self.func, str) or not self.func.strip():
            raise ValidationError(f"Schedule.func must be a non-empty string, got {self.func!r}")
        validate_id(self.id, "schedule id")
        validate_name(self.queue_name, "queue name")
        try:
            self.schedule_type = ScheduleType(self.schedule_type)
            self.status = ScheduleStatus(self.status)
            self.misfire = Misfire(self.misfire)
        except ValueError as exc:
            raise ValidationError(f"Schedule: {exc}") from None
        if isinstance(self.args, list):
            self.args = tuple(self.args)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValidationError(f"unknown time zone {self.timezone!r}") from None
        self.created_at = as_utc(self.created_at, "Schedule.created_at")
        self.run_at = optional_utc(self.run_at, "Schedule.run_at")
        self.last_run_at = optional_utc(self.last_run_at, "Schedule.last_run_at")
        self.updated_at = optional_utc(self.updated_at, "Schedule.updated_at")
        self.interval = check_seconds(self.interval, "Schedule.interval", allow_zero=False)
        if self.max_instances is not None and (
            isinstance(self.max_instances, bool)
            or not isinstance(self.max_instances, int)
            or self.max_instances < 1
        ):
            raise ValidationError(
                f"Schedule.max_instances must be an int >= 1 or None, got {self.max_instances!r}"
            )
        self._check_recipe()
        if self.max_runs is not None and (not isinstance(self.max_runs, int) or self.max_runs < 1):
            raise ValidationError(f"Schedule.max_runs must be an int >= 1, got {self.max_runs!r}")
        if self.next_run_at is None:
            if self.status is ScheduleStatus.ACTIVE:
                self.next_run_at = self.compute_next_run(self.last_run_at or self.created_at)
        else:
            self.next_run_at = as_utc(self.next_run_at, "Schedule.next_run_at")

    def _check_recipe(self) -> None:
        """Exactly the one field its type needs: cron_expression, interval or run_at."""
        given = {
            ScheduleType.CRON: self.cron_expression is not None,
            ScheduleType.INTERVAL: self.interval is not None,
            ScheduleType.ONCE: self.run_at is not None,
        }
        extra = [t.value for t, present in given.items() if present and t is not self.schedule_type]
        if extra:
            raise ValidationError(
                f"a {self.schedule_type.value.upper()} schedule takes no "
                f"{' or '.join(_RECIPE_FIELD[ScheduleType(t)] for t in extra)}"
            )
        if self.schedule_type is ScheduleType.CRON:
            if not isinstance(self.cron_expression, str) or not croniter.is_valid(
                self.cron_expression
            ):
                raise ValidationError(f"invalid cron expression {self.cron_expression!r}")
        elif self.schedule_type is ScheduleType.INTERVAL:
            if self.interval is None:
                raise ValidationError("an INTERVAL schedule needs interval (seconds > 0)")
        elif self.run_at is None:
            raise ValidationError("a ONCE schedule needs run_at")

    def run_after(self, previous: datetime) -> datetime | None:
        """The run time that follows the run at ``previous`` (``None`` for a one-shot).

        Cron times are read in ``timezone``: a time that a spring-forward skips runs once at the
        first valid time after it (croniter), and a fixed time that a fall-back repeats runs
        once, at its first occurrence (expressions with ``*`` in the hour field run every hour,
        both repeated ones included).
        """
        if self.schedule_type is ScheduleType.ONCE:
            return None
        if self.schedule_type is ScheduleType.INTERVAL:
            assert self.interval is not None
            return previous + timedelta(seconds=self.interval)
        zone = ZoneInfo(self.timezone)
        local = previous.astimezone(zone)
        it = croniter(self.cron_expression, local)
        nxt = it.get_next(datetime)
        assert isinstance(nxt, datetime)
        if nxt.replace(tzinfo=None) == local.replace(tzinfo=None) and it.expanded[1] != ["*"]:
            nxt = it.get_next(datetime)  # the repeated wall time of a fall-back: once is enough
        return nxt.astimezone(timezone.utc)  # type: ignore[no-any-return]

    def task_id_for(self, run_at: datetime) -> str:
        """The id of the task of the run at ``run_at``: the same in every scheduler, so that a
        run is recognised whoever enqueued it (``<schedule id>-<run ms>``, hashed when long)."""
        ms = (as_utc(run_at, "run_at") - _EPOCH) // timedelta(milliseconds=1)
        sid = self.id if len(self.id) <= 100 else hashlib.sha256(self.id.encode()).hexdigest()[:40]
        return f"{sid}-{ms}"

    def compute_next_run(self, after: datetime) -> datetime | None:
        """The first run time strictly after ``after`` (``None`` when the schedule is done)."""
        if self.max_runs is not None and self.run_count >= self.max_runs:
            return None
        if self.schedule_type is ScheduleType.ONCE:
            return self.run_at if self.run_count == 0 else None
        if self.schedule_type is ScheduleType.INTERVAL:
            assert self.interval is not None
            if self.last_run_at is None:
                return after + timedelta(seconds=self.interval)
            # Skip missed runs rather than firing a backlog.
            step = timedelta(seconds=self.interval)
            nxt = self.last_run_at + step
            if nxt <= after:
                missed = (after - nxt) // step + 1
                nxt += step * missed
            return nxt
        return self.run_after(after)

    def is_ready(self, now: datetime | None = None) -> bool:
        return (
            self.status is ScheduleStatus.ACTIVE
            and self.next_run_at is not None
            and self.next_run_at <= (now or utcnow())
        )

    def advance(self, fired_at: datetime | None = None) -> Schedule:
        """Record one run at ``fired_at``; return the updated schedule (COMPLETED when done)."""
        fired = as_utc(fired_at or utcnow(), "fired_at")
        updated = msgspec.structs.replace(
            self, run_count=self.run_count + 1, last_run_at=fired, updated_at=utcnow()
        )
        updated.next_run_at = updated.compute_next_run(max(fired, self.next_run_at or fired))
        if updated.next_run_at is None:
            updated.status = ScheduleStatus.COMPLETED
        return updated
