"""Events in the ``events`` table, one row per event, read by task or by time."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from omniq.exceptions import ValidationError
from omniq.models._time import as_utc, utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.models.ids import validate_id
from omniq.storage.base import EventStorage
from omniq.storage.lifecycle import EPOCH
from omniq.storage.sqlite.common import SetAside, SQLiteStoreContext


def _us(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1)


class SQLiteEventStorage(EventStorage):
    def __init__(self, ctx: SQLiteStoreContext) -> None:
        self._ctx = ctx

    async def log_event(self, event: TaskEvent) -> None:
        await self.log_events([event])

    async def log_events(self, events: Sequence[TaskEvent]) -> None:
        rows = []
        for event in events:
            if not isinstance(event, TaskEvent):
                raise ValidationError(f"log_event takes a TaskEvent, got {type(event).__name__}")
            rows.append((
                event.id, event.task_id, event.event_type.value, _us(event.timestamp),
                self._ctx.ext, self._ctx.serializer.encode(event),
            ))  # fmt: skip
        if rows:  # all encoded before the write
            await self._ctx.db.write(
                lambda conn: conn.executemany(
                    "INSERT OR REPLACE INTO events (id, task_id, event_type, ts_us, ext, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            )

    async def get_events(
        self,
        task_id: str | None = None,
        event_type: EventType | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[TaskEvent]:
        where: list[str] = []
        params: list[object] = []
        if task_id is not None:
            where.append("task_id = ?")
            params.append(validate_id(task_id, "task id"))
        if event_type is not None:
            try:
                params.append(EventType(event_type).value)
            except ValueError:
                raise ValidationError(f"unknown event type {event_type!r}") from None
            where.append("event_type = ?")
        if since is not None:
            where.append("ts_us >= ?")
            params.append(_us(as_utc(since, "since")))
        if until is not None:
            where.append("ts_us <= ?")
            params.append(_us(as_utc(until, "until")))
        if limit is not None and limit < 0:
            raise ValidationError(f"limit must be >= 0, got {limit!r}")
        sql = "SELECT id, ext, payload FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts_us, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        aside: list[SetAside] = []

        def select(conn: sqlite3.Connection) -> list[TaskEvent]:

            aside.clear()  # a try that met a lock may run again
            out = []
            for key, ext, payload in conn.execute(sql, params).fetchall():
                event = self._ctx.decode(conn, "events", key, ext, payload, TaskEvent, aside)
                if event is not None:
                    out.append(event)
            return out

        events = await self._ctx.db.read(select)
        await self._ctx.report(aside)
        return events

    async def cleanup_expired_events(self, now: datetime | None = None) -> int:
        """Remove whole UTC days older than ``event_ttl`` (as the file backend does); return
        how many events went."""
        ttl = self._ctx.config.event_ttl
        if ttl is None:
            return 0
        cutoff_day = ((now or utcnow()) - timedelta(seconds=ttl)).date()
        cutoff = datetime(cutoff_day.year, cutoff_day.month, cutoff_day.day, tzinfo=EPOCH.tzinfo)
        return int(
            await self._ctx.db.write(
                lambda conn: (
                    conn.execute("DELETE FROM events WHERE ts_us < ?", (_us(cutoff),)).rowcount
                )
            )
        )
