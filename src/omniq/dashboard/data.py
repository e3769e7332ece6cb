"""What the dashboard shows, read through the app's stores (the ones the workers use) and
returned as plain JSON-ready dicts: the API sends them as they are, the pages render them.

Every listing goes through the shared cache (``cache.SharedCache``); task lists are read once per
(queue, state) up to ``scan_limit`` tasks and filtered and paged in memory, so paging and filters
do not cost extra LIST requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from omniq.app import AsyncOmniQ
from omniq.dashboard.cache import SharedCache
from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.models.ids import is_valid_id, validate_name
from omniq.models.schedule import Schedule, ScheduleType
from omniq.models.task import Task, TaskStatus
from omniq.storage.base import QueueStats

CHART_MINUTES = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CHART_BUCKET_MINUTES = 5


def plain(value: Any) -> Any:
    """``value`` as JSON builtins; what JSON cannot hold (a pickled object) becomes its repr."""
    return msgspec.to_builtins(value, enc_hook=repr)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


def local_text(moment: datetime | None, zone: str | None = None) -> str | None:
    """``moment`` in ``zone`` (else this machine's local time), for people."""
    if moment is None:
        return None
    return moment.astimezone(ZoneInfo(zone) if zone else None).strftime("%Y-%m-%d %H:%M:%S %Z")


def queue_row(stats: QueueStats, now: datetime) -> dict[str, Any]:
    """One queue's counts (``omniq status --json`` prints the same)."""
    oldest = stats.oldest_due_at
    return {
        "queue": stats.queue,
        "pending": stats.pending,
        "delayed": stats.delayed,
        "running": stats.running,
        "completed": stats.completed,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "oldest_runnable_at": iso(oldest),
        "oldest_runnable_age_s": None
        if oldest is None
        else max(0.0, round((now - oldest).total_seconds(), 1)),
        "workers": dict(sorted(stats.workers.items())),
        "expired_leases": stats.expired_leases,
        "shards": stats.shards,
    }


def task_summary(task: Task) -> dict[str, Any]:
    lease = task.lease
    return {
        "id": task.id,
        "func": task.func,
        "queue": task.queue_name,
        "status": task.status.value,
        "priority": task.priority,
        "attempts": task.attempts,
        "max_retries": task.max_retries,
        "created_at": iso(task.created_at),
        "due_at": iso(task.due_at),
        "completed_at": iso(task.completed_at),
        "worker": lease.worker_id if lease else None,
        "error": task.error,
    }


def task_detail(task: Task) -> dict[str, Any]:
    lease = task.lease
    return {
        **task_summary(task),
        "args": plain(task.args),
        "kwargs": plain(task.kwargs),
        "eta": iso(task.eta),
        "timeout": task.timeout,
        "ttl": task.ttl,
        "started_at": iso(task.started_at),
        "lease": None
        if lease is None
        else {"worker": lease.worker_id, "expires_at": iso(lease.expires_at)},
        "metadata": plain(task.metadata),
    }


def event_row(event: TaskEvent) -> dict[str, Any]:
    return {
        "time": iso(event.timestamp),
        "type": event.event_type.value,
        "attempt": event.attempt,
        "worker": event.worker_id,
        "message": event.message,
    }


def recipe(schedule: Schedule) -> str:
    if schedule.schedule_type is ScheduleType.CRON:
        return f"cron {schedule.cron_expression} ({schedule.timezone})"
    if schedule.schedule_type is ScheduleType.INTERVAL:
        return f"every {schedule.interval:g} s"
    return f"once at {iso(schedule.run_at)}"


def schedule_row(schedule: Schedule) -> dict[str, Any]:
    zone = schedule.timezone if schedule.schedule_type is ScheduleType.CRON else None
    return {
        "id": schedule.id,
        "func": schedule.func,
        "queue": schedule.queue_name,
        "recipe": recipe(schedule),
        "status": schedule.status.value,
        "next_run_utc": iso(schedule.next_run_at),
        "next_run_local": local_text(schedule.next_run_at, zone),
        "last_run_utc": iso(schedule.last_run_at),
        "run_count": schedule.run_count,
        "recent_task_ids": list(schedule.recent_task_ids),
    }


@dataclass
class TaskFilter:
    """The tasks page's filters: queue and state choose the listing; the rest filter it."""

    queue: str | None = None
    state: TaskStatus | None = None
    func: str | None = None  # a substring of the registered name
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    offset: int = 0
    limit: int = 50

    @classmethod
    def parse(cls, params: dict[str, str]) -> TaskFilter:
        """From query parameters; a bad value is a ``ValidationError`` naming it."""

        def when(name: str) -> datetime | None:
            text = params.get(name) or None
            if text is None:
                return None
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValidationError(f"{name}: not an ISO time: {text!r}") from None
            return moment.astimezone(timezone.utc)

        def number(name: str, default: int, high: int) -> int:
            text = params.get(name) or str(default)
            if not text.isdigit() or int(text) > high:
                raise ValidationError(f"{name} must be a whole number from 0 to {high}")
            return int(text)

        state = params.get("state") or None
        if state is not None and state not in {s.value for s in TaskStatus}:
            raise ValidationError(f"state must be one of {', '.join(s.value for s in TaskStatus)}")
        queue = params.get("queue") or None
        return cls(
            queue=validate_name(queue, "queue") if queue else None,
            state=TaskStatus(state) if state else None,
            func=params.get("func") or None,
            since=when("since"),
            until=when("until"),
            offset=number("offset", 0, 10**6),
            limit=max(1, number("limit", 50, 500)),
        )

    def keeps(self, task: Task) -> bool:
        return (
            (self.func is None or self.func in task.func)
            and (self.since is None or task.created_at >= self.since)
            and (self.until is None or task.created_at < self.until)
        )


class DashboardData:
    """The reads behind every page and API answer, each through the shared cache."""

    def __init__(
        self,
        app: AsyncOmniQ,
        cache: SharedCache,
        *,
        scan_limit: int = 1000,
        chart_ttl: float | None = 60.0,
    ) -> None:
        self.app = app
        self.cache = cache
        self.scan_limit = scan_limit  # tasks read per (queue, state) listing at most
        # The chart lists every task folder of the day in the event store: the dearest read,
        # refreshed behind the pages at most this often (None: no chart).
        self.chart_ttl = chart_ttl

    @property
    def _tasks(self) -> Any:
        return self.app.backend.task_queue

    async def queues(self) -> dict[str, Any]:
        """Counts by state, oldest runnable task, lease holders per queue; the last hour's
        throughput."""
        stats = await self.cache.get("stats", self._tasks.queue_stats)
        now = utcnow()
        rows = [queue_row(s, now) for s in stats]
        return {"queues": rows, "throughput": await self.throughput(), "generated_at": iso(now)}

    async def throughput(self) -> dict[str, Any] | None:
        """Tasks completed and failed per ``CHART_BUCKET_MINUTES`` over the last hour, from the
        event store (``None`` with the chart off). Read at most once per ``chart_ttl`` and then
        served as it was while it is read again."""
        if not self.chart_ttl:
            return None

        async def load() -> list[TaskEvent]:
            since = utcnow() - timedelta(minutes=CHART_MINUTES)
            events = self.app.backend.event_storage
            # One query, filtered here: most events live in finished records, and a query by
            # type reads every record all the same (two queries read each record twice).
            wanted = (EventType.COMPLETED, EventType.FAILED)
            return [e for e in await events.get_events(since=since) if e.event_type in wanted]

        events = await self.cache.get("events-hour", load, ttl=self.chart_ttl, stale_ok=True)
        size = timedelta(minutes=CHART_BUCKET_MINUTES)
        count = CHART_MINUTES // CHART_BUCKET_MINUTES
        # Whole buckets on the clock (10:05, 10:10, ...); the last one holds now.
        start = _EPOCH + size * ((utcnow() - _EPOCH) // size + 1 - count)
        buckets = [
            {"start": iso(start + size * i), "completed": 0, "failed": 0} for i in range(count)
        ]
        for event in events:
            index = int((event.timestamp - start) / size)
            if 0 <= index < count:
                buckets[index][event.event_type.value] += 1  # type: ignore[operator]
        return {"bucket_minutes": CHART_BUCKET_MINUTES, "buckets": buckets}

    async def _listing(self, queue: str | None, state: TaskStatus | None) -> list[Task]:
        async def load() -> list[Task]:
            tasks: list[Task] = await self._tasks.list_tasks(queue, state, limit=self.scan_limit)
            return tasks

        return await self.cache.get(("tasks", queue, state), load)

    async def tasks(self, where: TaskFilter) -> dict[str, Any]:
        """One page of the tasks of a queue and state that pass the filters."""
        listed = await self._listing(where.queue, where.state)
        kept = [t for t in listed if where.keeps(t)]
        page = kept[where.offset : where.offset + where.limit]
        return {
            "tasks": [task_summary(t) for t in page],
            "total": len(kept),
            "offset": where.offset,
            "limit": where.limit,
            "scanned": len(listed),
            "truncated": len(listed) >= self.scan_limit,  # more exist than were read
        }

    async def task(self, task_id: str) -> dict[str, Any] | None:
        """A task with its result and its event timeline; ``None`` if none of them exist."""
        if not is_valid_id(task_id):
            return None

        async def load() -> dict[str, Any] | None:
            backend = self.app.backend
            task = await backend.task_queue.get_task(task_id)
            result = await backend.result_storage.get(task_id)
            events = await backend.event_storage.get_events(task_id=task_id)
            if task is None and result is None and not events:
                return None
            return {
                "task": None if task is None else task_detail(task),
                "result": None
                if result is None
                else {
                    "status": result.status.value,
                    "result": plain(result.result),
                    "error": result.error,
                    "traceback": result.traceback,
                    "attempts": result.attempts,
                    "worker": result.worker_id,
                    "completed_at": iso(result.completed_at),
                },
                "events": [event_row(e) for e in events],
            }

        return await self.cache.get(("task", task_id), load)

    async def schedules(self) -> dict[str, Any]:
        schedules = await self.cache.get("schedules", self.app.list_schedules)
        return {"schedules": [schedule_row(s) for s in schedules]}
