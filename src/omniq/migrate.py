"""Copy OmniQ's state between any two locations: directory, bucket, memory, SQLite.

``omniq.migrate("./omniq_data", "sqlite:///omniq.db")`` (or ``omniq migrate SOURCE DEST``)
copies tasks, results, events and schedules through the public store methods, so any pair of
backends works. Ids, statuses, timestamps, attempts and schedule state are kept; a task copied
while RUNNING becomes pending again (its lease does not travel). What the destination already
holds (by id) is skipped, so a second run copies nothing and a run after a crash picks up where
the first stopped. At the end every source id is looked up in the destination again: a store
whose ids are not all there is a mismatch (``MigrationReport.ok`` is false; the CLI exits 1).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omniq.app import make_backend
from omniq.backend.base import Backend
from omniq.exceptions import ValidationError
from omniq.storage.file.task_queue import FileTaskQueue
from omniq.sync import run_sync

STORES = ("tasks", "results", "events", "schedules")
BATCH = 500  # events written per call

Location = str | os.PathLike[str] | Backend
# Called with (store, items done so far, items in the source).
ProgressHook = Callable[[str, int, int], None]


@dataclass
class StoreCount:
    """What happened to one store: items in the source, already in the destination, copied,
    and source items found in the destination at the end (``None`` on a dry run)."""

    store: str
    source: int = 0
    present: int = 0
    copied: int = 0
    verified: int | None = None

    @property
    def ok(self) -> bool:
        return self.verified is None or self.verified == self.source


@dataclass
class MigrationReport:
    source: str
    dest: str
    dry_run: bool
    stores: list[StoreCount] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stores)


@dataclass
class _Store:
    """How to read one store of a backend, and write an item of it, by id."""

    read: Callable[[Backend], Awaitable[Sequence[Any]]]
    key: Callable[[Any], str]
    write: Callable[[Backend, list[Any]], Awaitable[None]]


async def _enqueue_all(b: Backend, tasks: list[Any]) -> None:
    for task in tasks:
        await b.task_queue.enqueue(task)


async def _set_all(b: Backend, results: list[Any]) -> None:
    for result in results:
        await b.result_storage.set(result)


async def _save_all(b: Backend, schedules: list[Any]) -> None:
    for schedule in schedules:
        await b.schedule_storage.save_schedule(schedule)


async def _log_all(b: Backend, events: list[Any]) -> None:
    await b.event_storage.log_events(events)


_STORES: dict[str, _Store] = {
    "tasks": _Store(lambda b: b.task_queue.list_tasks(), lambda t: t.id, _enqueue_all),
    "results": _Store(lambda b: b.result_storage.list_results(), lambda r: r.task_id, _set_all),
    "events": _Store(lambda b: b.event_storage.get_events(), lambda e: e.id, _log_all),
    "schedules": _Store(lambda b: b.schedule_storage.list_schedules(), lambda s: s.id, _save_all),
}


def parse_stores(what: str | Iterable[str] | None) -> list[str]:
    """``"tasks,results"`` or a list of store names; ``None`` means all four."""
    if what is None:
        return list(STORES)
    names = [w.strip() for w in (what.split(",") if isinstance(what, str) else what)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STORES]
    if unknown or not names:
        raise ValidationError(
            f"unknown store(s) {', '.join(unknown) or '(none given)'}: "
            f"choose from {', '.join(STORES)}"
        )
    return [n for n in STORES if n in names]


async def _copy_store(
    name: str, src: Backend, dst: Backend, dry_run: bool, progress: ProgressHook | None
) -> StoreCount:
    store = _STORES[name]
    items = await store.read(src)
    count = StoreCount(name, source=len(items))
    present = {store.key(i) for i in await store.read(dst)}
    missing = [i for i in items if store.key(i) not in present]
    count.present = count.source - len(missing)
    done = count.present
    if progress:
        progress(name, done, count.source)
    for start in range(0, len(missing), BATCH):
        batch = missing[start : start + BATCH]
        if not dry_run:
            await store.write(dst, batch)
            count.copied += len(batch)
        done += len(batch)
        if progress:
            progress(name, done, count.source)
    if not dry_run:
        there = {store.key(i) for i in await store.read(dst)}
        count.verified = sum(1 for i in items if store.key(i) in there)
    return count


async def _carry_shards(src: Backend, dst: Backend) -> None:
    """A sharded queue stays sharded: its count is raised at the destination before its tasks
    are copied (directory and bucket locations; a destination with more shards keeps them,
    SQLite has none)."""
    source, dest = src.task_queue, dst.task_queue
    if not (isinstance(source, FileTaskQueue) and isinstance(dest, FileTaskQueue)):
        return
    for queue in await source.list_queues():
        shards = await source.get_shards(queue)
        if shards > await dest.get_shards(queue):
            await dest.set_shards(queue, shards)


def _describe(location: Location) -> str:
    return repr(location) if isinstance(location, Backend) else os.fspath(location)


async def migrate_async(
    source: Location,
    dest: Location,
    *,
    what: str | Iterable[str] | None = None,
    dry_run: bool = False,
    progress: ProgressHook | None = None,
) -> MigrationReport:
    """Copy ``what`` (default: all four stores) from ``source`` to ``dest``.

    Each is a path, a URL (``s3://...``, ``memory://...``, ``sqlite:///file.db``) or a
    ``Backend``; locations are opened and closed here, ``Backend`` objects are used as given
    (open them first). ``dry_run`` counts what would be copied and writes nothing.
    """
    stores = parse_stores(what)
    report = MigrationReport(_describe(source), _describe(dest), dry_run)
    src, dst = make_backend(source), make_backend(dest)
    owned = [b for b, loc in ((src, source), (dst, dest)) if not isinstance(loc, Backend)]
    for b in owned:
        await b.open()
    try:
        if "tasks" in stores and not dry_run:
            await _carry_shards(src, dst)
        for name in stores:
            report.stores.append(await _copy_store(name, src, dst, dry_run, progress))
    finally:
        for b in owned:
            await b.close()
    return report


def migrate(
    source: Location,
    dest: Location,
    *,
    what: str | Iterable[str] | None = None,
    dry_run: bool = False,
    progress: ProgressHook | None = None,
) -> MigrationReport:
    """Blocking ``migrate_async``: ``omniq.migrate("./omniq_data", "sqlite:///omniq.db")``."""
    return run_sync(migrate_async(source, dest, what=what, dry_run=dry_run, progress=progress))
