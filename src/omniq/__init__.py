"""OmniQ: an async-first task queue whose broker is a directory or a bucket."""

from omniq.app import AsyncOmniQ, OmniQ, TaskFunction
from omniq.backend.file import FileBackend
from omniq.exceptions import OmniQError, StorageError, TaskFailedError
from omniq.models import (
    EventType,
    FileConfig,
    Misfire,
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
    "AsyncOmniQ",
    "EventType",
    "FileBackend",
    "FileConfig",
    "Misfire",
    "OmniQ",
    "OmniQError",
    "ResultStatus",
    "Schedule",
    "ScheduleType",
    "StorageError",
    "Task",
    "TaskEvent",
    "TaskFailedError",
    "TaskFunction",
    "TaskResult",
    "TaskStatus",
]
