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

import re
import time
import zlib

import msgspec

from omniq.exceptions import StorageError, ValidationError
from omniq.models.ids import is_valid_name, validate_name
from omniq.storage.file.common import FileStoreContext, logger
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
    """Each queue's shard count as stored, cached for ``TTL`` seconds."""

    TTL = 30.0

    def __init__(self, ctx: FileStoreContext, root: str) -> None:
        self._ctx = ctx
        self._root = root
        self._known: dict[str, tuple[int, float]] = {}  # queue -> (count, monotonic read time)
        self._found: dict[str, tuple[list[str], float]] = {}  # queue -> discover()'s, when

    def _key(self, queue: str) -> str:
        return f"{self._root}/{queue}/{SHARDS_FILE}"

    async def count(self, queue: str) -> int:
        known = self._known.get(queue)
        if known is not None and time.monotonic() - known[1] < self.TTL:
            return known[0]
        shards = (await self._read(queue))[0]
        self._known[queue] = (shards, time.monotonic())
        return shards

    async def locations(self, queue: str) -> list[str]:
        """The locations consumers claim from: every shard of the stored count."""
        return [location(queue, k) for k in range(await self.count(queue))]

    async def _read(self, queue: str) -> tuple[int, str | None]:
        """The stored count and its version (``None``: absent, or a store without versions)."""
        key = self._key(queue)
        objects = self._ctx.objects
        try:
            if objects.capabilities.compare_and_swap:
                data, version = await objects.get_versioned(key)
            else:
                data, version = await objects.get(key), None
            return check_count(msgspec.json.decode(data, type=_Count).shards), version
        except FileNotFoundError:
            return 1, None
        except (msgspec.DecodeError, msgspec.ValidationError, ValidationError) as exc:
            problem: Exception = exc
        except NotAnObjectError as exc:  # a directory or a link in its place (local disk)
            problem = exc
        await self._ctx.set_aside(key, ValidationError(f"unreadable shard count: {problem}"))
        return await self._restore(queue), None

    async def _restore(self, queue: str) -> int:
        """After an unreadable count was set aside: write one back (the shard folders found,
        or the count this process knew if higher) so that every process claims from every
        shard that holds tasks. A count another process wrote meanwhile is kept."""
        found = len(await self.discover(queue, fresh=True))
        shards = max(found, self._known.get(queue, (1, 0.0))[0])
        try:
            await self._ctx.objects.put(
                self._key(queue), msgspec.json.encode(_Count(shards)), exclusive=True
            )
        except FileExistsError:
            return (await self._read(queue))[0]
        except StorageError as exc:  # a directory still in the way: claims use the folders
            logger.error("could not write the shard count of queue %s back: %s", queue, exc)
        logger.error("the shard count of queue %s was unreadable: %d written back (the shard "
                     "folders found)", queue, shards)  # fmt: skip
        return shards

    def forget(self) -> None:
        """Drop the cached counts and folder listings (a look-up that found nothing reads
        them again: a count raised in the last ``TTL`` seconds may hide a new shard)."""
        self._known.clear()
        self._found.clear()

    async def discover(self, queue: str, *, fresh: bool = False) -> list[str]:
        """The locations of ``queue`` that hold objects (one folder listing, cached ``TTL``
        unless ``fresh``): shard 0 and every ``s<kk>`` up to the highest folder found."""
        found = self._found.get(queue)
        if not fresh and found is not None and time.monotonic() - found[1] < self.TTL:
            return found[0]
        names = await self._ctx.objects.list_dirs(f"{self._root}/{queue}")
        top = max((k for n in names if (k := shard_dir(n)) is not None), default=0)
        places = [location(queue, k) for k in range(top + 1)]
        self._found[queue] = (places, time.monotonic())
        return places

    async def set(self, queue: str, shards: int) -> int:
        """Store ``queue``'s shard count; it can only be raised. Returns the count before.

        On stores with compare-and-swap (buckets, memory) two raises at once keep the larger;
        a local directory writes without one (and gains nothing from shards)."""
        validate_name(queue, "queue name")
        check_count(shards)
        objects = self._ctx.objects
        while True:
            before, version = await self._read(queue)
            if shards < before:
                raise ValidationError(
                    f"queue {queue!r} has {before} shards: the count can be raised, not "
                    f"lowered (the tasks of the shards above {shards} would no longer be "
                    "claimed)"
                )
            if shards == before:
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
                continue  # another process wrote a count meanwhile: compare with it
            break
        self._known[queue] = (shards, time.monotonic())
        return before
