"""The outcome of a task: its return value, or the error that ended it."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import msgspec

from omniq.exceptions import ValidationError
from omniq.models._time import as_utc, check_seconds, optional_utc, utcnow
from omniq.models.ids import validate_id


class ResultStatus(str, Enum):
    """How a task ended. ``SUCCESS`` results live in ``success/``, the others in ``failed/``."""

    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskResult(msgspec.Struct, kw_only=True):
    """``TaskResult(task_id="task_123", status=ResultStatus.SUCCESS, result={"output": 1})``.

    ``ttl`` seconds after ``completed_at`` the result may be removed by ``cleanup_expired_results``.
    """

    task_id: str
    status: ResultStatus = ResultStatus.SUCCESS
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = 0
    worker_id: str | None = None
    started_at: datetime | None = None
    completed_at: datetime = msgspec.field(default_factory=utcnow)
    ttl: float | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] = {}

    def __post_init__(self) -> None:
        validate_id(self.task_id, "task id")
        try:
            self.status = ResultStatus(self.status)
        except ValueError:
            raise ValidationError(f"unknown result status {self.status!r}") from None
        self.completed_at = as_utc(self.completed_at, "TaskResult.completed_at")
        self.started_at = optional_utc(self.started_at, "TaskResult.started_at")
        self.ttl = check_seconds(self.ttl, "TaskResult.ttl")
        self.expires_at = optional_utc(self.expires_at, "TaskResult.expires_at")
        if self.expires_at is None and self.ttl is not None:
            self.expires_at = self.completed_at + timedelta(seconds=self.ttl)

    @property
    def is_success(self) -> bool:
        return self.status is ResultStatus.SUCCESS

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())
