"""The SQLite stores: one database file, one table per store (see ``schema``)."""

from omniq.storage.sqlite.common import SQLiteStoreContext
from omniq.storage.sqlite.connection import Database
from omniq.storage.sqlite.events import SQLiteEventStorage
from omniq.storage.sqlite.results import SQLiteResultStorage
from omniq.storage.sqlite.schedules import SQLiteScheduleStorage
from omniq.storage.sqlite.tasks import SQLiteTaskQueue

__all__ = [
    "Database",
    "SQLiteEventStorage",
    "SQLiteResultStorage",
    "SQLiteScheduleStorage",
    "SQLiteStoreContext",
    "SQLiteTaskQueue",
]
