"""File stores on fsspec: one primitive layer (``objects``) and four stores written once on it."""

from omniq.storage.file.common import FileStoreContext
from omniq.storage.file.events import FileEventStorage
from omniq.storage.file.objects import (
    Capabilities,
    FsspecObjectStore,
    LocalObjectStore,
    ObjectStore,
)
from omniq.storage.file.results import FileResultStorage
from omniq.storage.file.schedules import FileScheduleStorage
from omniq.storage.file.task_queue import FileTaskQueue

__all__ = [
    "Capabilities",
    "FileEventStorage",
    "FileResultStorage",
    "FileScheduleStorage",
    "FileStoreContext",
    "FileTaskQueue",
    "FsspecObjectStore",
    "LocalObjectStore",
    "ObjectStore",
]
