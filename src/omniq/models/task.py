"""The task model: what to run, where, when, and how it went so far."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import msgspec

from omniq.exceptions import ValidationError
from omniq.models._time import as_utc, check_due, check_seconds, optional_utc, utcnow
from omniq.models.ids import new_id, validate_id, validate_name

PRIORITY_MIN = -9999
PRIORITY_MAX = 9999


class TaskStatus(str, Enum):
    """Where a task is in its life. The directory holding a task file is the source of truth."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class Lease(msgspec.Struct, kw_only=True):
    """A worker's claim on a running task, valid until ``expires_at``."""

    token: str
    expires_at: datetime
    worker_id: str | None = None
    key: str | None = None  # the running object's name in the file backend
    version: str | None = None  # the lease object's ETag/generation on object stores


class Task(msgspec.Struct, kw_only=True):
    """A function call to run: ``Task(func="my_function", args=(1, 2, 3), queue_name="default")``.

    ``func`` is the registered name of the function. Higher ``priority`` runs first within a queue;
    ``eta`` (or ``delay`` seconds from creation) holds a task back until then. ``ttl`` is how long
    the finished task is kept before ``cleanup_expired_tasks`` removes it (``None``: the backend's
    default). ``attempts`` counts deliveries to a worker; ``max_retries`` is how many more a
    failing task gets. Naive datetimes are taken as local time and stored in UTC.
    """

    func: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    queue_name: str = "default"
    id: str = msgspec.field(default_factory=new_id)
    status: TaskStatus = TaskStatus.PENDING
    priority: int = 0
    eta: datetime | None = None
    delay: float | None = None
    ttl: float | None = None
    timeout: float | None = None
    max_retries: int = 0
    retry_delay: float = 1.0
    attempts: int = 0
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None
    error: str | None = None
    lease: Lease | None = None
    metadata: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if not isinstance(self.func, str) or not self.func.strip():
            raise ValidationError(f"Task.func must be a non-empty string, got {self.func!r}")
        validate_id(self.id, "task id")
        validate_name(self.queue_name, "queue name")
        if isinstance(self.args, list):
            self.args = tuple(self.args)
        elif not isinstance(self.args, tuple):
            raise ValidationError(
                f"Task.args must be a tuple or list, got {type(self.args).__name__}"
            )
        if not isinstance(self.kwargs, dict) or not all(isinstance(k, str) for k in self.kwargs):
            raise ValidationError("Task.kwargs must be a dict with string keys")
        if type(self.status) is not TaskStatus:
            try:
                self.status = TaskStatus(self.status)
            except ValueError:
                raise ValidationError(f"unknown task status {self.status!r}") from None
        if (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not PRIORITY_MIN <= self.priority <= PRIORITY_MAX
        ):
            raise ValidationError(
                f"Task.priority must be an int from {PRIORITY_MIN} to {PRIORITY_MAX}, "
                f"got {self.priority!r}"
            )
        for name in ("max_retries", "attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"Task.{name} must be an int >= 0, got {value!r}")
        self.ttl = check_seconds(self.ttl, "Task.ttl")
        self.timeout = check_seconds(self.timeout, "Task.timeout", allow_zero=False)
        self.retry_delay = check_seconds(self.retry_delay, "Task.retry_delay") or 0.0
        self.delay = check_seconds(self.delay, "Task.delay")
        self.created_at = as_utc(self.created_at, "Task.created_at")
        self.eta = optional_utc(self.eta, "Task.eta")
        if self.eta is None and self.delay:
            self.eta = self.created_at + timedelta(seconds=self.delay)
        check_due(self.due_at, "the task's due time (eta, or creation time + delay)")
        for name in ("updated_at", "started_at", "completed_at", "expires_at"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, as_utc(value, f"Task.{name}"))

    @property
    def due_at(self) -> datetime:
        """When the task may run: its ``eta``, or its creation time."""
        return self.eta or self.created_at

    def is_due(self, now: datetime | None = None) -> bool:
        return self.due_at <= (now or utcnow())

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())
