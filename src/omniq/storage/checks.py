"""Argument checks and the polling loop that every backend's stores share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import NamedTuple

from omniq.exceptions import ValidationError
from omniq.models._time import as_utc, check_seconds
from omniq.models.config import Settings
from omniq.models.event import EventType
from omniq.models.ids import validate_id, validate_name
from omniq.models.task import Task


def queue_names(queues: Sequence[str] | str) -> list[str]:
    """The validated queue names a ``dequeue`` call asks for."""
    if isinstance(queues, str):
        queues = [queues]
    if not queues:
        raise ValidationError("dequeue needs at least one queue name")
    return [validate_name(q) for q in queues]


def lease_duration(visibility_timeout: float | None, config: Settings) -> float:
    """A lease's duration in seconds: the one given (finite, > 0), else the configured one."""
    given = check_seconds(visibility_timeout, "visibility_timeout", allow_zero=False)
    return given or config.visibility_timeout


class DequeueCall(NamedTuple):
    queues: list[str]
    lease_seconds: float
    deadline: float | None  # time.monotonic() to give up at; None: one look only


def dequeue_call(
    queues: Sequence[str] | str,
    timeout: float | None,
    visibility_timeout: float | None,
    worker_id: str | None,
    config: Settings,
) -> DequeueCall:
    """Check the arguments of ``dequeue``."""
    names = queue_names(queues)
    if worker_id is not None:
        validate_id(worker_id, "worker id")
    timeout = check_seconds(timeout, "dequeue timeout")
    lease_seconds = lease_duration(visibility_timeout, config)
    deadline = None if timeout is None else time.monotonic() + timeout
    return DequeueCall(names, lease_seconds, deadline)


async def poll(
    look: Callable[[], Awaitable[Task | None]], deadline: float | None, interval: float,
    wait: Callable[[float], Awaitable[None]] | None = None,
) -> Task | None:  # fmt: skip
    """``look()`` until it finds a task or ``deadline`` passes (once without a deadline).
    Between looks, sleep ``interval``, or ``await wait(remaining)`` where the store can be woken
    when a task arrives (it returns by ``remaining`` seconds at the latest)."""
    while True:
        task = await look()
        if task is not None or deadline is None:
            return task
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if wait is None:
            await asyncio.sleep(min(interval, remaining))
        else:
            await wait(remaining)


class EventFilter(NamedTuple):
    task_id: str | None
    event_type: EventType | None
    since: datetime | None
    until: datetime | None


def event_filter(
    task_id: str | None,
    event_type: EventType | str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
) -> EventFilter:
    """Check the arguments of ``get_events`` (datetimes in UTC)."""
    if task_id is not None:
        validate_id(task_id, "task id")
    wanted: EventType | None = None
    if event_type is not None:
        try:
            wanted = EventType(event_type)
        except ValueError:
            raise ValidationError(f"unknown event type {event_type!r}") from None
    if limit is not None and limit < 0:
        raise ValidationError(f"limit must be >= 0, got {limit!r}")
    return EventFilter(
        task_id,
        wanted,
        as_utc(since, "since") if since is not None else None,
        as_utc(until, "until") if until is not None else None,
    )
