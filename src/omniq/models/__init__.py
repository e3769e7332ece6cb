"""OmniQ's data models (msgspec Structs)."""

from omniq.models.config import FileConfig, SQLiteConfig
from omniq.models.event import EventType, TaskEvent
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.schedule import Misfire, Schedule, ScheduleStatus, ScheduleType
from omniq.models.task import Lease, Task, TaskStatus

__all__ = [
    "EventType",
    "FileConfig",
    "Lease",
    "Misfire",
    "ResultStatus",
    "SQLiteConfig",
    "Schedule",
    "ScheduleStatus",
    "ScheduleType",
    "Task",
    "TaskEvent",
    "TaskResult",
    "TaskStatus",
]
