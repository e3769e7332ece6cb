"""The doorbell: idle consumers on a bucket learn of new tasks by reading one small object a
second instead of listing the queue (docs/storage-protocol.md, "The doorbell").

An enqueuer rings a queue's doorbell by creating ``<tasks>/<queue>/doorbell/<second>`` (the UTC
second of the enqueue), conditionally and at most once per second per process: each name is
written once, so GCS's one-write-per-second-per-object limit holds however many processes ring.
An idle consumer reads, once a second, the marker of the second that has just ended (a GET: a
twelfth of a LIST's price on S3); a marker it has not seen means "list now". The reaper turn's
holder removes markers older than ``KEEP_SECONDS`` (one listing a minute).

Hints only: a consumer that misses a ring (its clock runs ahead of the enqueuer's by more than
its check offset) still lists the queue on its idle back-off, at most ``IDLE_LIST_MAX`` apart.
"""

from __future__ import annotations

import contextlib
import random
import time

from omniq.exceptions import StorageError
from omniq.models._time import utcnow_ms
from omniq.storage.file.cloud import ConflictError
from omniq.storage.file.common import logger
from omniq.storage.file.objects import ObjectStore

__all__ = ["Doorbell"]

DOORBELL = "doorbell"


class Doorbell:
    """One process's view of the doorbells of the queues under ``root``."""

    KEEP_SECONDS = 120  # markers older than this are removed by the sweep
    SWEEP_SECONDS = 60.0  # how often the reaper turn's holder sweeps (one listing per queue)

    def __init__(self, objects: ObjectStore, root: str) -> None:
        self._objects = objects
        self._root = root
        self._rung: dict[str, int] = {}  # queue -> the last second this process rang
        self._checked: dict[str, int] = {}  # queue -> the last second whose marker was read
        self._next_check: dict[str, float] = {}  # queue -> monotonic time of the next read
        # Read a second's marker a little after it ends (spread over consumers): enqueuers'
        # clocks may run up to this much behind ours and their rings are still heard.
        self.offset = random.uniform(0.1, 0.3)
        self._last_sweep = 0.0
        self.rings = 0
        self.reads = 0

    def _key(self, queue: str, second: int) -> str:
        return f"{self._root}/{queue}/{DOORBELL}/{second:011d}"

    async def ring(self, queue: str) -> None:
        """Tell idle consumers of ``queue`` that a task is there (at most once a second)."""
        second = utcnow_ms() // 1000
        if self._rung.get(queue) == second:
            return
        self._rung[queue] = second
        try:
            await self._objects.create(self._key(queue, second), b"")
            self.rings += 1
        except (FileExistsError, ConflictError):
            pass  # rung already by another process this second
        except StorageError as exc:  # a hint: the enqueue stands, listings find the task
            logger.warning("could not ring the doorbell of %s: %s", queue, exc)

    def listen(self, queue: str) -> None:
        """Start listening after a listing that found nothing due: later seconds are read."""
        self._checked[queue] = utcnow_ms() // 1000 - 1
        self._next_check.setdefault(queue, 0.0)

    async def heard(self, queue: str) -> bool:
        """Whether ``queue`` was rung since ``listen`` (reads at most one marker a second, the
        last two seconds at most)."""
        now = time.monotonic()
        if now < self._next_check.get(queue, 0.0):
            return False
        now_ms = utcnow_ms()
        # The next read: just after the current second ends, plus the offset.
        self._next_check[queue] = now + (1000 - now_ms % 1000) / 1000 + self.offset
        ended = (now_ms - int(self.offset * 1000)) // 1000 - 1  # ended at least offset ago
        first = max(self._checked.get(queue, ended - 1) + 1, ended - 1)
        for second in range(first, ended + 1):
            self._checked[queue] = second
            self.reads += 1
            if await self._objects.exists(self._key(queue, second)):
                return True
        return False

    def sweep_due(self) -> bool:
        """Whether ``SWEEP_SECONDS`` have passed since this process last swept."""
        return time.monotonic() - self._last_sweep >= self.SWEEP_SECONDS

    async def sweep(self, queues: list[str]) -> int:
        """Remove markers older than ``KEEP_SECONDS`` (the reaper turn's holder, once a minute)."""
        self._last_sweep = time.monotonic()
        oldest = utcnow_ms() // 1000 - self.KEEP_SECONDS
        removed = 0
        for queue in queues:
            prefix = f"{self._root}/{queue}/{DOORBELL}"
            for name in await self._objects.list(prefix):
                if name.isdigit() and int(name) < oldest:
                    with contextlib.suppress(FileNotFoundError):
                        await self._objects.discard(f"{prefix}/{name}")
                        removed += 1
        return removed
