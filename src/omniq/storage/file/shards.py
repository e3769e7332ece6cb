"""Sharded queues: one queue's pending and running objects spread over several prefixes.

A bucket takes a bounded request rate per prefix (S3: 3,500 writes and 5,500 reads a second per
partitioned prefix), and every consumer of one queue lists and claims under the same one. A
queue with ``K`` shards keeps shard 0 where an unsharded queue keeps its tasks
(``<tasks>/<queue>/pending|running/``, the seed's layout) and shard ``k`` (1 <= k < K) under
``<tasks>/<queue>/s<kk>/pending|running/``. Finished records stay per queue.

A *location* names one shard of a queue: ``<queue>`` (shard 0) or ``<queue>/s<kk>``. An enqueue
puts a task in the shard its id hashes to; a retry stays where it is; a lease's key carries its
location (``s<kk>/<name>``; bare for shard 0), so renewals and finishes need no look-up.

``K`` is stored in ``<tasks>/<queue>/shards.json`` and read by every process (again every
``TTL`` seconds): it can be raised while workers run (enqueuers and consumers follow within
``TTL``), never lowered, as tasks in the shards above would no longer be claimed.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib

import msgspec

from omniq.exceptions import StorageError, ValidationError
from omniq.models.ids import is_valid_name, validate_name
from omniq.storage.file.common import FileStoreContext
from omniq.storage.file.objects import NotAnObjectError, VersionMismatch

__all__ = [
    "SHARDS_FILE",
    "SHARDS_MAX",
    "ShardCounts",
    "lease_key",
    "location",
    "queue_of",
    "shard_of",
    "split_lease_key",
]

SHARDS_FILE = "shards.json"
SHARDS_MAX = 64
_SHARD_RE = re.compile(r"s(\d{2})", re.ASCII)


class _Count(msgspec.Struct):
    shards: int


def shard_of(task_id: str, shards: int) -> int:
    """The shard a new task goes to: a stable hash of its id (CRC-32: not Python's ``hash``,
    which differs between processes)."""
    return 0 if shards <= 1 else zlib.crc32(task_id.encode()) % shards


def location(queue: str, shard: int) -> str:
    """``<queue>`` for shard 0, ``<queue>/s<kk>`` for the others."""
    return queue if shard == 0 else f"{queue}/s{shard:02d}"


def queue_of(where: str) -> str:
    """The queue of a location (a queue name is its own shard 0)."""
    return where.partition("/")[0]


def shard_dir(name: str) -> int | None:
    """The shard number of a folder name under a queue (``s07`` -> 7), else ``None``."""
    match = _SHARD_RE.fullmatch(name)
    shard = None if match is None else int(match[1])
    return shard if shard is not None and 0 < shard < SHARDS_MAX else None


def is_valid_location(where: str) -> bool:
    queue, _, shard = where.partition("/")
    return is_valid_name(queue) and (not shard or shard_dir(shard) is not None)


def lease_key(where: str, name: str) -> str:
    """A lease's key: its object's name, prefixed by the shard folder past shard 0."""
    _, _, shard = where.partition("/")
    return f"{shard}/{name}" if shard else name


def split_lease_key(queue: str, key: str) -> tuple[str, str]:
    """``(location, name)`` of a lease key of ``queue`` (see ``lease_key``)."""
    shard, sep, name = key.rpartition("/")
    if not sep:
        return queue, key
    if shard_dir(shard) is None:
        raise ValueError(f"{key!r} is not a lease key")
    return f"{queue}/{shard}", name


def check_count(shards: object) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= SHARDS_MAX:
        raise ValidationError(f"a queue's shard count is a whole number 1-{SHARDS_MAX}, "
                              f"not {shards!r}")  # fmt: skip
    return shards


class ShardCounts:
    """Each queue's shard count as stored, cached for ``TTL`` seconds.

    Raising the count first writes a marker object in each new shard's folder
    (``s<kk>/shard``), so that a shard's folder exists from then on, tasks or none: a count
    that cannot be read (corrupt, or a directory in its place) is reported and replaced by the
    shard folders found, which is then exact. It is not set aside: the count is shared state,
    and a set-aside racing an operator's rewrite could move the good one."""

    TTL = 30.0
    MARKER = "shard"

    def __init__(self, ctx: FileStoreContext, root: str) -> None:
        self._ctx = ctx
        self._root = root
        self._known: dict[str, tuple[int, float]] = {}  # queue -> (count, monotonic read time)
        self._found: dict[str, tuple[list[int], float]] = {}  # queue -> shard folders, when
        # (queue, event loop) -> the read in flight: a backend may serve several loops (its
        # blocking view runs on the sync wrapper's), and a future belongs to one.
        self._reading: dict[tuple[str, asyncio.AbstractEventLoop], asyncio.Future[int]] = {}
        self._reported: set[str] = set()  # queues whose unreadable count was reported

    def _key(self, queue: str) -> str:
        return f"{self._root}/{queue}/{SHARDS_FILE}"

    async def count(self, queue: str, *, fresh: bool = False) -> int:
        """The stored count (cached ``TTL`` seconds unless ``fresh``; 1 if none is stored)."""
        known = self._known.get(queue)
        if not fresh and known is not None and time.monotonic() - known[1] < self.TTL:
            return known[0]
        loop = asyncio.get_running_loop()
        reading = self._reading.get((queue, loop))
        if reading is None:  # one read for every caller on this loop that needs it meanwhile
            reading = self._reading[queue, loop] = loop.create_task(self._refresh(queue))
            reading.add_done_callback(lambda _: self._reading.pop((queue, loop), None))
        return await asyncio.shield(reading)

    async def _refresh(self, queue: str) -> int:
        started = time.monotonic()
        shards = (await self._read(queue))[0]
        known = self._known.get(queue)
        if known is not None and known[1] > started:  # this process's own set() meanwhile
            return known[0]
        self._known[queue] = (shards, time.monotonic())
        return shards

    async def locations(self, queue: str) -> list[str]:
        """The locations consumers claim from: every shard of the stored count."""
        return [location(queue, k) for k in range(await self.count(queue))]

    async def _read(self, queue: str) -> tuple[int, str | None]:
        """The stored count and its version (``None``: absent, or a store without versions)."""
        key = self._key(queue)
        objects = self._ctx.objects
        version = None
        try:
            if objects.capabilities.compare_and_swap:
                data, version = await objects.get_versioned(key)
            else:
                data = await objects.get(key)
            shards = check_count(msgspec.json.decode(data, type=_Count).shards)
        except FileNotFoundError:
            return 1, None
        except (msgspec.DecodeError, msgspec.ValidationError, ValidationError) as exc:
            problem: Exception = exc
        except NotAnObjectError as exc:  # a directory or a link in its place (local disk)
            problem = exc
        else:
            self._reported.discard(queue)
            return shards, version
        found = await self.marked(queue)
        if queue not in self._reported:
            self._reported.add(queue)
            error = ValidationError(
                f"unreadable shard count ({problem}): using the {found} shard folder(s) found "
                "until `omniq shards` writes one"
            )
            await self._ctx.report(key, None, error)
        return found, version

    async def discover(self, queue: str, *, fresh: bool = False) -> list[str]:
        """The locations of ``queue`` up to its highest shard folder (one folder listing,
        cached ``TTL`` unless ``fresh``): shard 0 and every ``s<kk>`` up to the highest found."""
        top = max(await self._folders(queue, fresh), default=0)
        return [location(queue, k) for k in range(top + 1)]

    async def _folders(self, queue: str, fresh: bool) -> list[int]:
        """The shard numbers (past 0) that have a folder, highest first."""
        found = self._found.get(queue)
        if not fresh and found is not None and time.monotonic() - found[1] < self.TTL:
            return found[0]
        names = await self._ctx.objects.list_dirs(f"{self._root}/{queue}")
        shards = sorted({k for n in names if (k := shard_dir(n)) is not None}, reverse=True)
        self._found[queue] = (shards, time.monotonic())
        return shards

    async def marked(self, queue: str, *, fresh: bool = True) -> int:
        """The shard count the folders show: one past the highest shard folder holding the
        marker ``set`` writes (a folder without it, a stray object named like a shard, is
        not counted: it must not raise the count of every consumer for good). The folders
        are listed again unless ``fresh`` is false (just listed)."""
        for shard in await self._folders(queue, fresh):
            marker = f"{self._root}/{location(queue, shard)}/{self.MARKER}"
            if await self._ctx.objects.exists(marker):
                return shard + 1
        return 1

    def forget_folders(self) -> None:
        """Drop the cached folder listings (a look-up that found nothing lists again: a shard
        made in the last ``TTL`` seconds may hold the task)."""
        self._found.clear()

    async def set(self, queue: str, shards: int) -> int:
        """Store ``queue``'s shard count; it can only be raised. Returns the count before.

        On stores with compare-and-swap (buckets, memory) two raises at once keep the larger;
        a local directory writes without one (and gains nothing from shards)."""
        validate_name(queue, "queue name")
        check_count(shards)
        objects = self._ctx.objects
        unreadable = 0
        while True:
            before, version = await self._read(queue)
            if shards < before:
                raise ValidationError(
                    f"queue {queue!r} has {before} shards: the count can be raised, not "
                    f"lowered (the tasks of the shards above {shards} would no longer be "
                    "claimed)"
                )
            for shard in range(max(1, before), shards):  # the folders first, then the count
                await objects.put(f"{self._root}/{location(queue, shard)}/{self.MARKER}", b"")
            if shards == before and queue not in self._reported:
                break
            data = msgspec.json.encode(_Count(shards))
            try:
                if not objects.capabilities.compare_and_swap:
                    await objects.put(self._key(queue), data)
                elif version is None:
                    await objects.create(self._key(queue), data)
                else:
                    await objects.replace(self._key(queue), data, version)
            except (FileExistsError, VersionMismatch):
                # Another process wrote a count meanwhile: compare with it. Twice "exists"
                # with no version to read is something else in the count's place.
                unreadable += version is None
                if unreadable >= 2:
                    raise StorageError(
                        "cannot write the shard count: something that is not an object is in "
                        "its place (remove it)",
                        self._key(queue),
                    ) from None
                continue
            break
        self._reported.discard(queue)
        self._known[queue] = (shards, time.monotonic())
        self._found.pop(queue, None)
        return before
