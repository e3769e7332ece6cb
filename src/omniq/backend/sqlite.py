"""The SQLite backend: OmniQ's four stores in one database file (WAL mode)."""

from __future__ import annotations

import os
from typing import Any

from omniq.backend.base import Backend
from omniq.exceptions import ConfigError
from omniq.models.config import SQLiteConfig
from omniq.models.event import EventType, TaskEvent
from omniq.serialization import Serializer
from omniq.storage.sqlite import (
    Database,
    SQLiteEventStorage,
    SQLiteResultStorage,
    SQLiteScheduleStorage,
    SQLiteStoreContext,
    SQLiteTaskQueue,
)

SCHEME = "sqlite://"


def path_of_url(url: str) -> str:
    """The file of a ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` URL."""
    if not url.startswith(SCHEME + "/"):
        raise ConfigError(f"expected sqlite:///path/to/file.db, got {url!r}")
    path = url[len(SCHEME) + 1 :]
    if not path:
        raise ConfigError(f"{url!r} names no database file")
    return path


class SQLiteBackend(Backend):
    """OmniQ's state in one SQLite database file, with the same contract as ``FileBackend``.

    ``SQLiteBackend("omniq.db")``, ``SQLiteBackend.from_url("sqlite:///path/omniq.db")`` or
    ``SQLiteBackend.from_config(SQLiteConfig(path=...))``. Keyword ``settings`` are any other
    ``SQLiteConfig`` field (``visibility_timeout``, ``fsync``, ``task_ttl``, ...); unset fields
    come from ``OMNIQ_*`` environment variables (the file from ``OMNIQ_SQLITE_PATH``).
    Many processes may share the file; it must be on a local disk (SQLite's locks do not hold
    on network filesystems).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        config: SQLiteConfig | None = None,
        **settings: Any,
    ) -> None:
        if path is not None:
            text = os.fspath(path)
            settings["path"] = path_of_url(text) if text.startswith(SCHEME) else text
        config = (config or SQLiteConfig()).with_overrides(**settings)
        self.config = config
        self.path = config.path if config.path == ":memory:" else os.path.abspath(config.path)
        self.db = Database(self.path, fsync=config.fsync, busy_timeout=config.busy_timeout)
        ctx = SQLiteStoreContext(
            db=self.db,
            serializer=Serializer(config.serialization_format, config.secret_key),
            config=config,
            reporters=[self._report_corrupt],
        )
        self.task_queue = SQLiteTaskQueue(ctx)
        self.result_storage = SQLiteResultStorage(ctx)
        self.event_storage = SQLiteEventStorage(ctx)
        self.schedule_storage = SQLiteScheduleStorage(ctx)
        self._wire_stores()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SQLiteBackend:
        """``SQLiteBackend.from_url("sqlite:///omniq.db")`` (relative) or ``"sqlite:////abs.db"``."""
        if not isinstance(url, str) or not url:
            raise ConfigError(f"from_url needs a sqlite:/// URL, got {url!r}")
        return cls(path_of_url(url), **kwargs)

    @classmethod
    def from_config(cls, config: SQLiteConfig, **kwargs: Any) -> SQLiteBackend:
        if not isinstance(config, SQLiteConfig):
            raise ConfigError(f"from_config takes a SQLiteConfig, got {type(config).__name__}")
        return cls(config=config, **kwargs)

    @property
    def url(self) -> str:
        return f"{SCHEME}/{self.path}"

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def _report_corrupt(self, source: str, key: str, moved_to: str, error: Exception) -> None:
        if source == "events":
            return  # reporting a corrupt event as an event could loop
        await self.event_storage.log_event(
            TaskEvent(
                task_id=key,
                event_type=EventType.CORRUPTED,
                message=f"{source}/{key} could not be read and was moved to {moved_to}: {error}",
                data={"path": f"{source}/{key}", "moved_to": moved_to},
            )
        )

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r})"
