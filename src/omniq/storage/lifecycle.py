"""State changes every backend makes the same way, whatever it stores them in.

A delivery raises ``attempts`` and carries a lease; a finish stamps the final status and the
expiry; a requeue returns the task to pending; a lost lease counts the lost delivery and sends
the task back or, after ``max_deliveries``, to the dead letter. A result gets the default
expiry; a schedule moving between statuses gets its next run.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timedelta, timezone

import msgspec

from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.config import Settings
from omniq.models.event import EventType, TaskEvent
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.schedule import Schedule, ScheduleStatus
from omniq.models.task import Lease, Task, TaskStatus

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_ms(value: datetime) -> int:
    """Milliseconds since the epoch, computed without float rounding."""
    return max(0, (value - EPOCH) // timedelta(milliseconds=1))


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def lease_token(worker_id: str | None = None) -> str:
    """A lease token; it starts with the worker id so that ``omniq status`` can name holders."""
    suffix = os.urandom(6).hex()
    return f"{worker_id}-{suffix}" if worker_id else suffix


_TAKE_OVER = re.compile(r"(.+)-r[0-9a-f]{12}")  # "r" is not a hex digit: no worker token ends so


def take_over_token(previous: str) -> str:
    """The token of a reaper's take-over of a lease with token ``previous``: the delivery it
    recovers (the worker's token, kept through a chain of take-overs) and ``-r<random>``."""
    return f"{lost_delivery(previous)}-r{os.urandom(6).hex()}"


def lost_delivery(token: str) -> str:
    """The worker's lease token behind a chain of take-overs (``token`` itself for a worker's)."""
    match = _TAKE_OVER.fullmatch(token)
    return token if match is None else match[1]


def lease_holder(token: str) -> str | None:
    """The worker id a lease token was made for, if any (none for a reaper's take-over)."""
    if _TAKE_OVER.fullmatch(token):
        return None
    worker, sep, _ = token.rpartition("-")
    return worker if sep else None


def delivered(task: Task, now_ms: int, lease: Lease) -> Task:
    """The task as its claimant sees it: stored payloads count the deliveries before this one."""
    now = from_ms(now_ms)
    task.status = TaskStatus.RUNNING
    task.attempts += 1
    task.started_at = task.updated_at = now
    task.lease = lease
    return task


FENCE_FLOOR_SECONDS = 10.0


def fence_seconds(task: Task, config: Settings) -> float:
    """How long the fence of a finish or requeue holds the task: what is left of the holder's
    lease, and at least ``FENCE_FLOOR_SECONDS`` (the configured lease if shorter). A holder
    killed between the fence and the settle holds the task no longer than its own lease
    would have, or the floor (not the backend's default lease, 60 s); on buckets, until the
    reaper reads it, up to a minute later (docs/storage-protocol.md). The floor covers the
    settle's writes: they are not conditional, so a reaper that took an expired fence over
    while they were under way could see them land after its own (a task finished twice)."""
    assert task.lease is not None
    left = (task.lease.expires_at - utcnow()).total_seconds()
    return max(min(config.visibility_timeout, FENCE_FLOOR_SECONDS), left)


def check_final(status: TaskStatus | str) -> TaskStatus:
    status = TaskStatus(status)
    if not status.is_final:
        raise ValidationError(f"finish_task needs a final status, got {status.value!r}")
    return status


def expiry_for(task: Task, when: datetime, config: Settings) -> datetime | None:
    """When a task finished at ``when`` may be removed: its own ttl, else the backend's."""
    ttl = task.ttl if task.ttl is not None else config.task_ttl
    return None if ttl is None else when + timedelta(seconds=ttl)


def at_rest(task: Task) -> Task:
    """The task as stored: a lease lives with the store's claim record, not in the payload
    (validated again: ``update_task`` stores what a caller handed in this way)."""
    return msgspec.structs.replace(task, lease=None)


def final_copy(task: Task, status: TaskStatus, error: str | None, config: Settings) -> Task:
    now = utcnow()
    final = at_rest(task)  # validated again: a caller may have changed the task it holds
    final.status, final.completed_at, final.updated_at = status, now, now
    final.error = error if error is not None else final.error
    final.expires_at = expiry_for(final, now, config)
    return final


def record_expiry(final: Task, result: TaskResult | None, config: Settings) -> datetime | None:
    """When a finished task's record, which holds its result, may go: the later of the task's
    and the result's expiry (``None``, never, if either has none), so that a result kept in the
    record is never removed before its ``result_ttl``."""
    if result is None:
        return final.expires_at
    with_default_expiry(result, config)
    if final.expires_at is None or result.expires_at is None:
        return None
    return max(final.expires_at, result.expires_at)


def queued_copy(task: Task, eta: datetime | None, error: str | None) -> Task:
    queued = at_rest(task)
    queued.status, queued.updated_at, queued.eta = TaskStatus.PENDING, utcnow(), eta
    queued.error = error if error is not None else queued.error
    queued.__post_init__()  # validates eta
    return queued


def expire_delivery(task: Task, now: datetime, config: Settings) -> TaskStatus:
    """Count the lost delivery of a task whose lease expired (``task.attempts`` must hold the
    deliveries before it); return where it goes next: PENDING, or FAILED (the dead letter)
    after ``max_deliveries``. Nothing is logged here: ``log_recovered`` says it once it is
    done (a recovery that fails to write is retried later)."""
    task.attempts += 1
    task.updated_at = now
    task.error = f"lease expired (attempt {task.attempts})"
    if task.attempts >= config.max_deliveries:
        task.status, task.completed_at = TaskStatus.FAILED, now
        task.error = f"lease expired {task.attempts} times; moved to the dead letter"
        task.expires_at = expiry_for(task, now, config)
        return TaskStatus.FAILED
    task.status = TaskStatus.PENDING
    return TaskStatus.PENDING


def log_recovered(task: Task, log: logging.Logger) -> None:
    """Say that a task whose lease expired was re-queued or dead-lettered (after the fact)."""
    if task.status is TaskStatus.FAILED:
        log.error("task %s: %s", task.id, task.error)
    else:
        log.warning("task %s: lease expired; re-queued (attempt %d)", task.id, task.attempts)


def expiry_report(task: Task) -> tuple[TaskResult | None, TaskEvent]:
    """What a recovery leaves for readers: its event (LEASE_EXPIRED, or FAILED for the dead
    letter) and, for a dead-lettered task, a failed result, so that a caller waiting for the
    result does not wait forever."""
    dead = task.status is TaskStatus.FAILED
    result = None
    if dead:
        result = TaskResult(
            task_id=task.id, status=ResultStatus.FAILED, error=task.error,
            attempts=task.attempts, ttl=task.ttl,
        )  # fmt: skip
    event = TaskEvent(
        task_id=task.id, event_type=EventType.FAILED if dead else EventType.LEASE_EXPIRED,
        message=task.error, queue_name=task.queue_name, attempt=task.attempts,
    )  # fmt: skip
    return result, event


def with_default_expiry(result: TaskResult, config: Settings) -> TaskResult:
    """A result without its own expiry expires ``result_ttl`` after completion (if set)."""
    if result.expires_at is None and config.result_ttl is not None:
        result.expires_at = result.completed_at + timedelta(seconds=config.result_ttl)
    return result


def schedule_moved(schedule: Schedule, status: ScheduleStatus) -> Schedule:
    """The schedule in its new status; resuming does not fire the runs missed while paused."""
    now = utcnow()
    moved = msgspec.structs.replace(schedule, status=status, updated_at=now)
    if status is ScheduleStatus.ACTIVE and (moved.next_run_at is None or moved.next_run_at < now):
        moved.next_run_at = moved.compute_next_run(now)
    return moved
