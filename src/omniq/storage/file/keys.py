"""Object names of the task queue: the order and the lease live in the names.

pending:  ``{rank:05d}-{due_ms:013d}-{task_id}{ext}``; rank = PRIORITY_MAX - priority, so an
          ascending listing is priority (high first), then due time, then id (creation order).
running:  ``{pending stem}~{lease_expiry_ms:013d}~{lease_token}{ext}``; the lease is renewed or
          taken over by renaming, which fails for whoever no longer holds the old name.
finished: ``{task_id}{ext}`` under completed/, failed/ or cancelled/.

Due times are 13 digits of milliseconds: the models refuse due times past 2286-11-20
(``omniq.models._time.MAX_DUE``), so the field never needs a 14th digit.
"""

from __future__ import annotations

import bisect
import random
import re
from typing import NamedTuple

from omniq.models.ids import ID_PATTERN, is_valid_id
from omniq.models.task import PRIORITY_MAX, Task
from omniq.serialization.codecs import EXTENSIONS
from omniq.storage.file.common import to_ms

RANK_WIDTH = 5
DUE_OFFSET = RANK_WIDTH + 1
DUE_END = DUE_OFFSET + 13


def split_ext(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    return (name, "") if dot < 0 else (name[:dot], name[dot:])


def pending_stem(task: Task) -> str:
    return f"{PRIORITY_MAX - task.priority:0{RANK_WIDTH}d}-{to_ms(task.due_at):013d}-{task.id}"


_EXT = "(?:" + "|".join(re.escape(e) for e in EXTENSIONS.values()) + ")"
_STEM = rf"(\d{{{RANK_WIDTH}}})-(\d{{13}})-({ID_PATTERN})"
# Only names of exactly these shapes are tasks; anything else in a queue directory is a stray
# (an operator's file, a hostile name) that listings skip and consumers set aside.
_PENDING_RE = re.compile(_STEM + _EXT, re.ASCII)
_RUNNING_RE = re.compile(rf"({_STEM})~(\d{{13}})~([A-Za-z0-9_-]{{1,160}}){_EXT}", re.ASCII)
_FINISHED_RE = re.compile(ID_PATTERN + _EXT, re.ASCII)


def is_pending_name(name: str) -> bool:
    """Whether ``name`` is a pending task's name (``rank-due-id.ext``)."""
    return _PENDING_RE.fullmatch(name) is not None


def is_running_name(name: str) -> bool:
    return _RUNNING_RE.fullmatch(name) is not None


def is_finished_name(name: str) -> bool:
    return _FINISHED_RE.fullmatch(name) is not None


class PendingName(NamedTuple):
    rank: str
    due_ms: int
    task_id: str


def parse_pending(stem: str) -> PendingName | None:
    """The parts of a pending stem (a pending name without its extension), or ``None``."""
    match = _STEM_RE.fullmatch(stem)
    return None if match is None else PendingName(match[1], int(match[2]), match[3])


_STEM_RE = re.compile(_STEM, re.ASCII)


def running_name(stem: str, expiry_ms: int, token: str, ext: str) -> str:
    return f"{stem}~{expiry_ms:013d}~{token}{ext}"


class RunningName(NamedTuple):
    stem: str
    expiry_ms: int
    token: str


def parse_running(name: str) -> RunningName | None:
    """The parts of a running name (with or without its extension), or ``None``."""
    _, ext = split_ext(name)
    match = _RUNNING_RE.fullmatch(name if ext in EXTENSIONS.values() else name + ".json")
    return None if match is None else RunningName(match[1], int(match[5]), match[6])


def task_id_of(name: str) -> str | None:
    """The task id in any task object name (pending, running or finished)."""
    base, _ = split_ext(name)
    stem = base.split("~", 1)[0]
    parsed = parse_pending(stem)
    if parsed is not None:
        return parsed.task_id
    return stem if is_valid_id(stem) else None


class PendingIndex:
    """A cached, sorted listing of one queue's pending names, consumed from the front.

    Names are grouped by priority rank; within a group they sort by due time, so the first name
    of a group that is not due yet means no later one is either. Choosing the next task costs
    O(priorities), whatever the queue's length. The listing goes stale as other processes enqueue
    and claim; the queue refreshes it every ``listing_ttl`` seconds and whenever it runs dry. On
    object stores it may hold only the head of the queue (see ``horizon``).
    """

    __slots__ = ("_buckets", "_cursors", "_ranks", "horizon", "listed_at")

    def __init__(self, names: list[str], listed_at: float, horizon: str | None = None) -> None:
        self.listed_at = listed_at
        # A listing of the head of the queue only: names after ``horizon`` were not listed, so
        # own enqueues beyond it are left for a later listing (taking them first would jump
        # the unlisted names before them).
        self.horizon = horizon
        self._buckets: dict[str, list[str]] = {}
        for name in sorted(names):
            self._buckets.setdefault(name[:RANK_WIDTH], []).append(name)
        self._ranks = sorted(self._buckets)
        self._cursors = dict.fromkeys(self._ranks, 0)

    def __len__(self) -> int:
        return sum(len(b) - self._cursors[r] for r, b in self._buckets.items())

    def next_due(self, now_ms: int) -> str | None:
        """The first name, in queue order, whose due time has come."""
        for rank in self._ranks:
            bucket, cursor = self._buckets[rank], self._cursors[rank]
            if cursor < len(bucket):
                name = bucket[cursor]
                if int(name[DUE_OFFSET:DUE_END]) > now_ms:
                    continue
                return name
        return None

    def pick_due(self, now_ms: int) -> str | None:
        """One of the due names of the highest priority that has any, at random (consumers
        that listed the same names then rarely try the same one)."""
        for rank in self._ranks:
            bucket, cursor = self._buckets[rank], self._cursors[rank]
            end = self._due_end(bucket, cursor, now_ms)
            if end > cursor:
                return bucket[random.randrange(cursor, end)]
        return None

    def due_left(self, now_ms: int, at_most: int) -> int:
        """How many names left are due, counted up to ``at_most``."""
        count = 0
        for rank in self._ranks:
            bucket, cursor = self._buckets[rank], self._cursors[rank]
            count += self._due_end(bucket, cursor, now_ms) - cursor
            if count >= at_most:
                break
        return count

    @staticmethod
    def _due_end(bucket: list[str], cursor: int, now_ms: int) -> int:
        """The position after the due names of one priority's ``bucket`` from ``cursor`` (names
        of one priority sort by due time: the due ones come first)."""
        if cursor >= len(bucket) or int(bucket[cursor][DUE_OFFSET:DUE_END]) > now_ms:
            return cursor
        probe = bucket[cursor][:DUE_OFFSET] + str(now_ms + 1).zfill(DUE_END - DUE_OFFSET)
        return bisect.bisect_left(bucket, probe, cursor)

    def first_due_ms(self) -> int | None:
        """The earliest due time (ms) of the names left, ``None`` if there is none."""
        dues = [
            int(bucket[cursor][DUE_OFFSET:DUE_END])
            for rank, bucket in self._buckets.items()
            if (cursor := self._cursors[rank]) < len(bucket)
        ]
        return min(dues) if dues else None

    def discard(self, name: str) -> None:
        rank = name[:RANK_WIDTH]
        bucket = self._buckets.get(rank)
        if bucket is None:
            return
        cursor = self._cursors[rank]
        if cursor < len(bucket) and bucket[cursor] == name:
            self._cursors[rank] = cursor + 1
            return
        i = bisect.bisect_left(bucket, name, cursor)
        if i < len(bucket) and bucket[i] == name:
            del bucket[i]

    def add(self, name: str) -> None:
        if self.horizon is not None and name > self.horizon:
            return
        rank = name[:RANK_WIDTH]
        bucket = self._buckets.get(rank)
        if bucket is None:
            self._buckets[rank] = [name]
            self._cursors[rank] = 0
            bisect.insort(self._ranks, rank)
            return
        cursor = self._cursors[rank]
        i = bisect.bisect_left(bucket, name, cursor)
        if i >= len(bucket) or bucket[i] != name:
            bucket.insert(i, name)

    def names(self) -> list[str]:
        return [n for r in self._ranks for n in self._buckets[r][self._cursors[r] :]]
