"""Events in the ``events`` table, one row per event, read by task or by time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.storage.base import EventStorage
from omniq.storage.checks import event_filter
from omniq.storage.lifecycle import EPOCH
from omniq.storage.sqlite.common import SQLiteStoreContext


def _us(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1)


INSERT_EVENT = (
    "INSERT OR REPLACE INTO events (id, task_id, event_type, ts_us, ext, payload)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def event_rows(events: Sequence[TaskEvent], ctx: SQLiteStoreContext) -> list[tuple[object, ...]]:
    """The ``INSERT_EVENT`` parameters of events, all encoded before anything is written."""
    rows: list[tuple[object, ...]] = []
    for event in events:
        if not isinstance(event, TaskEvent):
            raise ValidationError(f"log_event takes a TaskEvent, got {type(event).__name__}")
        rows.append((
            event.id, event.task_id, event.event_type.value, _us(event.timestamp), ctx.ext,
            ctx.serializer.encode(event),
        ))  # fmt: skip
    return rows


class SQLiteEventStorage(EventStorage):
    def __init__(self, ctx: SQLiteStoreContext) -> None:
        self._ctx = ctx

    async def log_event(self, event: TaskEvent) -> None:
        await self.log_events([event])

    async def log_events(self, events: Sequence[TaskEvent]) -> None:
        rows = event_rows(events, self._ctx)
        if rows:  # all encoded before the write
            await self._ctx.db.write(lambda conn: conn.executemany(INSERT_EVENT, rows))

    async def get_events(
        self,
        task_id: str | None = None,
        event_type: EventType | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[TaskEvent]:
        wanted = event_filter(task_id, event_type, since, until, limit)
        where: list[str] = []
        params: list[object] = []
        for condition, value in (
            ("task_id = ?", wanted.task_id),
            ("event_type = ?", wanted.event_type.value if wanted.event_type else None),
            ("ts_us >= ?", _us(wanted.since) if wanted.since else None),
            ("ts_us <= ?", _us(wanted.until) if wanted.until else None),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        sql = "SELECT id, ext, payload FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts_us, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return (await self._ctx.fetch(sql, params, self._ctx.loader("events", TaskEvent)))[0]

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
