"""Events under ``<base>/<events_dir>/YYYY/MM/DD/<task_id>/``, append-only, by UTC day.

Each object holds one or more events of one task and day, named
``<first event id>.<type>[+<type>...]<ext>``. Reading one task's events lists one folder per
day (never reads other tasks' events); filtering by type is done on names before any read.

Wired by ``FileBackend`` (``records``), the store also returns the events a worker keeps in the
record of a task it finished, and the ENQUEUED event each task implies (its creation time and
queue): enqueues write no event object. ``get_events(task_id=...)`` implies it for pending,
running and finished tasks; a query by time or type, for finished tasks (their records).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.models.ids import is_valid_id
from omniq.models.record import enqueued_event
from omniq.models.task import Task
from omniq.storage.base import EventStorage
from omniq.storage.checks import event_filter
from omniq.storage.file.common import FileStoreContext
from omniq.storage.file.keys import split_ext
from omniq.storage.file.records import FinishedRecords

_EventList = list[TaskEvent]


def _day_path(day: date) -> str:
    return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"


class FileEventStorage(EventStorage):
    def __init__(
        self, ctx: FileStoreContext, events_dir: str, records: FinishedRecords | None = None
    ) -> None:
        self._ctx = ctx
        self._root = events_dir
        self.records = records

    @property
    def implies_enqueued(self) -> bool:
        """Whether ENQUEUED events are read from the tasks themselves (no object to write)."""
        return self.records is not None

    async def log_event(self, event: TaskEvent) -> None:
        await self.log_events([event])

    async def log_events(self, events: Sequence[TaskEvent]) -> None:
        groups: dict[tuple[date, str], list[TaskEvent]] = defaultdict(list)
        for event in events:
            if not isinstance(event, TaskEvent):
                raise ValidationError(f"log_event takes a TaskEvent, got {type(event).__name__}")
            groups[(event.timestamp.date(), event.task_id)].append(event)
        encoded = []
        for (day, task_id), group in groups.items():
            types = "+".join(dict.fromkeys(e.event_type.value for e in group))
            name = f"{group[0].id}.{types}{self._ctx.ext}"
            key = f"{self._root}/{_day_path(day)}/{task_id}/{name}"
            encoded.append((key, self._ctx.serializer.encode(group)))  # all encoded before writes
        for key, data in encoded:
            await self._ctx.objects.put(key, data)

    async def _days(self, since: datetime | None, until: datetime | None) -> list[str]:
        first = since.date() if since else None
        last = until.date() if until else None
        objects = self._ctx.objects
        out = []
        for year in sorted(await objects.list_dirs(self._root)):
            if (
                not year.isdigit()
                or (first and int(year) < first.year)
                or (last and int(year) > last.year)
            ):
                continue
            for month in sorted(await objects.list_dirs(f"{self._root}/{year}")):
                for day in sorted(await objects.list_dirs(f"{self._root}/{year}/{month}")):
                    try:
                        when = date(int(year), int(month), int(day))
                    except ValueError:
                        continue
                    if (first and when < first) or (last and when > last):
                        continue
                    out.append(f"{self._root}/{_day_path(when)}")
        return out

    async def get_events(
        self,
        task_id: str | None = None,
        event_type: EventType | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[TaskEvent]:
        task_id, wanted, since, until = event_filter(task_id, event_type, since, until, limit)
        stored = await self._stored_events(task_id, wanted, since, until, limit)
        if self.records is None:
            return stored
        implied = await self._implied_events(task_id, stored)

        def wanted_event(e: TaskEvent) -> bool:
            return (
                (wanted is None or e.event_type is wanted)
                and (since is None or e.timestamp >= since)
                and (until is None or e.timestamp <= until)
            )

        merged = {e.id: e for e in stored}
        for event in implied:
            if wanted_event(event):
                merged.setdefault(event.id, event)
        out = sorted(merged.values(), key=lambda e: (e.timestamp, e.id))
        return out if limit is None else out[:limit]

    async def _implied_events(
        self, task_id: str | None, stored: list[TaskEvent]
    ) -> list[TaskEvent]:
        """Events kept in records, and the ENQUEUED event of each task they concern — unless a
        plain ENQUEUED event of it is stored (older data, a scheduler's batch)."""
        assert self.records is not None
        tasks: list[Task] = []
        out: list[TaskEvent] = []
        if task_id is not None:
            record = await self.records.read(task_id)
            task = record if record is not None else await self.records.task(task_id)
            if record is not None:
                out += record.events
            if task is not None:
                tasks.append(task)
        else:
            for record in await self.records.scan():
                out += record.events
                tasks.append(record)
        enqueued = {
            e.task_id for e in [*stored, *out]
            if e.event_type is EventType.ENQUEUED and e.message is None
        }  # fmt: skip
        out += [enqueued_event(t) for t in tasks if t.id not in enqueued]
        return out

    async def _stored_events(
        self,
        task_id: str | None,
        wanted: EventType | None,
        since: datetime | None,
        until: datetime | None,
        limit: int | None,
    ) -> list[TaskEvent]:
        """The events in this store's day folders."""
        out: list[TaskEvent] = []
        objects = self._ctx.objects
        for day in await self._days(since, until):
            task_dirs = (
                [task_id]
                if task_id
                else sorted(d for d in await objects.list_dirs(day) if is_valid_id(d))
            )
            day_events: list[TaskEvent] = []
            for tid in task_dirs:
                folder = f"{day}/{tid}"
                keys = []
                for name in await objects.list(folder):
                    if not self._ctx.is_data_name(name):
                        continue
                    types = split_ext(name)[0].partition(".")[2].split("+")
                    if wanted is None or wanted.value in types:
                        keys.append(f"{folder}/{name}")
                for group in await self._ctx.read_many(keys, _EventList):
                    day_events.extend(
                        e
                        for e in group
                        if (wanted is None or e.event_type is wanted)
                        and (since is None or e.timestamp >= since)
                        and (until is None or e.timestamp <= until)
                    )
            day_events.sort(key=lambda e: (e.timestamp, e.id))
            out.extend(day_events)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    async def cleanup_expired_events(self, now: datetime | None = None) -> int:
        """Remove whole days older than ``event_ttl``; return how many event objects went."""
        ttl = self._ctx.config.event_ttl
        if ttl is None:
            return 0
        cutoff = ((now or utcnow()) - timedelta(seconds=ttl)).date()
        removed = 0
        for day in await self._days(None, None):
            y, m, d = day.rsplit("/", 3)[1:]
            if date(int(y), int(m), int(d)) < cutoff:
                removed += await self._ctx.objects.delete_tree(day)
        return removed
