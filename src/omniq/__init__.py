"""OmniQ: an async-first task queue whose broker is a directory or a bucket."""

from omniq.backend.file import FileBackend
from omniq.exceptions import OmniQError, StorageError
from omniq.models import (
    EventType,
    FileConfig,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
)

__version__ = "0.1.0"

__all__ = [
    "EventType",
    "FileBackend",
    "FileConfig",
    "OmniQError",
    "ResultStatus",
    "Schedule",
    "ScheduleType",
    "StorageError",
    "Task",
    "TaskEvent",
    "TaskResult",
    "TaskStatus",
]
