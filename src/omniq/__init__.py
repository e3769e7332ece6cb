"""OmniQ: an async-first task queue whose broker is a directory or a bucket."""

from omniq.app import AsyncOmniQ, OmniQ, TaskFunction
from omniq.backend.file import FileBackend
from omniq.backend.sqlite import SQLiteBackend
from omniq.exceptions import OmniQError, StorageError, TaskFailedError
from omniq.migrate import migrate, migrate_async
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
from omniq.models.config import SQLiteConfig

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
    "SQLiteBackend",
    "SQLiteConfig",
    "Schedule",
    "ScheduleType",
    "StorageError",
    "Task",
    "TaskEvent",
    "TaskFailedError",
    "TaskFunction",
    "TaskResult",
    "TaskStatus",
    "migrate",
    "migrate_async",
]
