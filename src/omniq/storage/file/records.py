"""Finished-task records read back for the result and event stores.

A worker finishes a task with one object, ``<tasks>/<queue>/completed|failed|cancelled/<id>``,
that holds the final task, its result and the events of its last delivery
(``FinishedRecord``). ``FileBackend`` gives a ``FinishedRecords`` to its result and event
stores, so that ``get``, ``list_results`` and ``get_events`` find what lives there; result and
event stores built on their own read only their own folders.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from omniq.exceptions import CorruptFileError
from omniq.models.record import FinishedRecord, as_record, replace_result
from omniq.models.task import Task
from omniq.storage.file.common import FileStoreContext
from omniq.storage.file.keys import is_finished_name

if TYPE_CHECKING:
    from omniq.storage.file.task_queue import FileTaskQueue

FINISHED_DIRS = ("completed", "failed", "cancelled")


async def read_record(ctx: FileStoreContext, key: str) -> FinishedRecord:
    """Read a finished task's object as a record (a bare ``Task`` of older versions reads as a
    record without result or events). Pickles keep their class, so those are read as tasks."""
    kind = Task if key.endswith(".pickle") else FinishedRecord
    return as_record(await ctx.read(key, kind))


class FinishedRecords:
    """Looks records up by task id (a direct read per queue and finished folder, never a
    listing of tasks) and scans them all (``list_results``, time queries of events).

    ``queue_cache`` seconds: how long the list of queues is reused (on buckets a listing is a
    request; on local disk it is not cached).
    """

    def __init__(self, queue: FileTaskQueue, ctx: FileStoreContext, queue_cache: float) -> None:
        self._queue = queue
        self._ctx = ctx
        self._queue_cache = queue_cache
        self._queues: list[str] = []
        self._listed_at = float("-inf")

    async def _queue_names(self) -> list[str]:
        now = time.monotonic()
        if now - self._listed_at >= self._queue_cache:
            self._queues = await self._queue.list_queues()
            self._listed_at = now
        return self._queues

    def _key(self, queue: str, state: str, task_id: str) -> str:
        return f"{self._queue.state_dir(queue, state)}/{task_id}{self._ctx.ext}"

    async def _find(self, task_id: str) -> tuple[str, FinishedRecord] | None:
        for queue in await self._queue_names():
            for state in FINISHED_DIRS:
                key = self._key(queue, state, task_id)
                try:
                    return key, await read_record(self._ctx, key)
                except FileNotFoundError:
                    continue
                except CorruptFileError:  # set aside and reported
                    return None
        return None

    async def read(self, task_id: str) -> FinishedRecord | None:
        """The record of a finished task, or ``None`` (not finished, or no such task)."""
        found = await self._find(task_id)
        return None if found is None else found[1]

    async def task(self, task_id: str) -> Task | None:
        """The task in whatever state it is (to imply the ENQUEUED event of an unfinished one)."""
        return await self._queue.get_task(task_id)

    async def scan(self) -> list[FinishedRecord]:
        """Every record of every queue, by queue, folder and task id."""
        out: list[FinishedRecord] = []
        for queue in await self._queue.list_queues():
            for state in FINISHED_DIRS:
                folder = self._queue.state_dir(queue, state)
                for name in sorted(await self._ctx.objects.list(folder)):
                    if not is_finished_name(name):
                        continue
                    try:
                        out.append(await read_record(self._ctx, f"{folder}/{name}"))
                    except (FileNotFoundError, CorruptFileError):
                        continue
        return out

    async def drop_result(self, task_id: str) -> bool:
        """Remove the result a record holds (``ResultStorage.delete``); ``True`` if it had one."""
        found = await self._find(task_id)
        if found is None or found[1].result is None:
            return False
        key, record = found
        await self._ctx.objects.put(key, self._ctx.serializer.encode(replace_result(record, None)))
        return True
