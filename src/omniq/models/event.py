"""Task events: an append-only history of what happened to each task."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import msgspec

from omniq.exceptions import ValidationError
from omniq.models._time import as_utc, utcnow
from omniq.models.ids import new_id, validate_id


class EventType(str, Enum):
    """What happened to a task (schedule events name the task of the run)."""

    ENQUEUED = "enqueued"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"
    LEASE_EXPIRED = "lease_expired"
    CORRUPTED = "corrupted"
    SCHEDULED = "scheduled"
    SCHEDULE_FIRED = "schedule_fired"  # a schedule's run became this task
    SCHEDULE_SKIPPED = "schedule_skipped"  # a run was skipped (misfire="skip", max_instances)


class TaskEvent(msgspec.Struct, kw_only=True):
    """``TaskEvent(task_id="task_123", event_type=EventType.COMPLETED, message="done")``."""

    task_id: str
    event_type: EventType
    message: str | None = None
    id: str = msgspec.field(default_factory=new_id)
    timestamp: datetime = msgspec.field(default_factory=utcnow)
    queue_name: str | None = None
    worker_id: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = {}

    def __post_init__(self) -> None:
        validate_id(self.task_id, "task id")
        validate_id(self.id, "event id")
        try:
            self.event_type = EventType(self.event_type)
        except ValueError:
            raise ValidationError(f"unknown event type {self.event_type!r}") from None
        self.timestamp = as_utc(self.timestamp, "TaskEvent.timestamp")
