"""The file task queue: claims by atomic move, leases in object names, order in listings.

Layout under ``<base>/<tasks_dir>/<queue>/``: ``pending/``, ``running/``, ``completed/``,
``failed/`` (the dead letter) and ``cancelled/``. A task file's directory is its status; the
``status`` field inside is only a copy (``get_task`` and ``list_tasks`` report the directory's).
A finished task's file is its record (``FinishedRecord``: the final task, its result and
events), written under the lease and then moved into place by ``finish_task``. The file of a
running task is the pending payload as it was claimed: ``attempts`` inside it counts
deliveries *before* this one, so a reaper that finds an expired lease knows the lost delivery
counted and raises the count.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from omniq.exceptions import (
    CorruptFileError,
    LeaseLostError,
    StorageError,
    TaskNotFoundError,
    ValidationError,
)
from omniq.models._time import utcnow, utcnow_ms
from omniq.models.event import TaskEvent
from omniq.models.ids import is_valid_name, validate_id, validate_name
from omniq.models.record import as_record, as_task
from omniq.models.result import TaskResult
from omniq.models.task import Lease, Task, TaskStatus
from omniq.serialization import check_arguments
from omniq.storage.base import QueueStats, TaskQueue
from omniq.storage.checks import DequeueCall, dequeue_call, lease_duration, poll
from omniq.storage.file.common import FileStoreContext, from_ms, logger, to_ms
from omniq.storage.file.keys import (
    DUE_END,
    PendingIndex,
    RunningName,
    is_finished_name,
    is_pending_name,
    is_running_name,
    parse_pending,
    parse_running,
    pending_stem,
    running_name,
    split_ext,
    task_id_of,
)
from omniq.storage.file.records import FINISHED_DIRS, read_record
from omniq.storage.file.shards import (
    ShardCounts,
    lease_key,
    location,
    queue_of,
    shard_of,
    split_lease_key,
)
from omniq.storage.file.wakeup import Wakeup, notifications_work
from omniq.storage.lifecycle import (
    at_rest,
    check_final,
    expire_delivery,
    expiry_for,
    fence_seconds,
    final_copy,
    lease_holder,
    log_recovered,
    lost_delivery,
    queued_copy,
    record_expiry,
    take_over_token,
)
from omniq.storage.lifecycle import delivered as _delivered
from omniq.storage.lifecycle import lease_token as _token

PENDING, RUNNING = "pending", "running"
STATE_DIRS = (PENDING, RUNNING, *FINISHED_DIRS)
_DIR_OF_STATUS = {
    TaskStatus.PENDING: PENDING,
    TaskStatus.RUNNING: RUNNING,
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}
_STATUS_OF_DIR = {d: s for s, d in _DIR_OF_STATUS.items()}
# What finishing a task in a final status is called in messages ("cannot complete task ...").
FINISH_VERB = {
    TaskStatus.COMPLETED: "complete",
    TaskStatus.FAILED: "fail",
    TaskStatus.CANCELLED: "cancel",
}


class FileTaskQueue(TaskQueue):
    """Task queue over an ``ObjectStore``; see the module docstring for the layout.

    ``claim_stats`` counts claim attempts by outcome: ``won``, ``lost`` (another consumer
    took the name first) and ``relists`` (listings forced by lost races); object stores count
    more (``LeaseTaskQueue``)."""

    CONTENDED_SECONDS = 5.0
    LOST_IN_A_ROW = 2  # lost races in a row that make the listing stale
    _contended_until = 0.0

    def __init__(self, ctx: FileStoreContext, tasks_dir: str) -> None:
        self._ctx = ctx
        self._objects = ctx.objects
        self._root = tasks_dir
        self._config = ctx.config
        self._indexes: dict[str, PendingIndex] = {}  # by location (shards.py)
        self._shards = ShardCounts(ctx, tasks_dir)
        self._shard_cursor: dict[str, int] = {}  # queue -> the shard it lists next
        self._last_reap = 0.0
        root = self._objects.local_directory(tasks_dir)
        self._wakeup = Wakeup(notifications=root is not None and notifications_work(root))
        self.idle_waits = 0  # how often a dequeue waited for tasks (tests, benchmarks)
        self.claim_stats: Counter[str] = Counter()

    # ----------------------------------------------------------------- paths and reading

    def _dir(self, where: str, state: str) -> str:
        """The folder of one state at a location (a queue, or a shard of it: ``shards.py``);
        finished records are kept per queue, whatever the shard."""
        if state != PENDING and state != RUNNING:
            where = queue_of(where)
        return f"{self._root}/{where}/{state}"

    async def _home(self, task: Task) -> str:
        """The location a new task goes to: the shard its id hashes to."""
        shards = await self._shards.count(task.queue_name)
        return location(task.queue_name, shard_of(task.id, shards))

    async def _locations(self, queue: str) -> list[str]:
        """The locations consumers claim from: the stored shard count's."""
        return await self._shards.locations(queue)

    async def _discover(self, queue: str, *, fresh: bool = False) -> list[str]:
        """Every location of ``queue`` that may hold tasks: the stored count's and every shard
        folder found by listing the queue's folder (cached, unless ``fresh``). The reaper and
        the look-ups use it: a count removed or lowered by hand must not hide a shard's tasks
        from them."""
        counted = await self._shards.locations(queue)
        found = await self._shards.discover(queue, fresh=fresh)
        if fresh and len(found) > len(counted):
            await self._raise_back(queue)
            counted = await self._shards.locations(queue)
        return counted + [w for w in found if w not in counted]

    async def _raise_back(self, queue: str) -> None:
        """A count deleted or lowered by hand (or by two raises at once on a local directory)
        leaves shards whose tasks no consumer claims: raise it back to the marked shard
        folders (``ShardCounts.marked``). Logged, never raised: the sweep goes on."""
        stored = await self._shards.count(queue, fresh=True)  # not just raised elsewhere?
        marked = await self._shards.marked(queue, fresh=False)  # _discover just listed them
        if marked <= stored:
            return
        try:
            await self._shards.set(queue, marked)
        except ValidationError:  # raised higher meanwhile
            return
        except StorageError as exc:
            logger.error("queue %s has %d marked shard folders but a count of %d, which could "
                         "not be raised: %s", queue, marked, stored, exc)  # fmt: skip
            return
        logger.error("queue %s had %d marked shard folders but a count of %d: raised back",
                     queue, marked, stored)  # fmt: skip

    def _lease_place(self, task: Task) -> tuple[str, str] | None:
        """``(location, object name)`` of the lease ``task`` holds, ``None`` if none."""
        key = task.lease.key if task.lease is not None else None
        if key is None:
            return None
        try:
            return split_lease_key(task.queue_name, key)
        except ValueError:
            return None

    def state_dir(self, queue: str, state: str) -> str:
        """The folder of one queue's tasks in one state (``pending``, ``completed``...)."""
        return self._dir(queue, state)

    async def _read_task(self, key: str) -> Task:
        return as_task(await self._ctx.read(key, Task))

    def _finished_name(self, task: Task) -> str:
        return task.id + self._ctx.ext

    def _expiry_for(self, task: Task, when: datetime) -> datetime | None:
        return expiry_for(task, when, self._config)

    # ------------------------------------------------------------------------- enqueue

    async def enqueue(self, task: Task) -> str:
        if not isinstance(task, Task):
            raise ValidationError(f"enqueue takes a Task, got {type(task).__name__}")
        if task.status is TaskStatus.RUNNING:
            # A running task carried over (migration) has no lease here: deliver it again.
            task = msgspec.structs.replace(task, status=TaskStatus.PENDING, lease=None)
        check_arguments(task.args, task.kwargs, self._ctx.serializer.format)
        data = self._ctx.serializer.encode(task)  # fails before anything is written
        state = _DIR_OF_STATUS[task.status]
        if state == PENDING:
            name = pending_stem(task) + self._ctx.ext
            where = await self._home(task)
            await self._objects.put(f"{self._dir(where, PENDING)}/{name}", data)
            self._index_add(where, name)
            self._wakeup.notify()
        else:
            key = f"{self._dir(task.queue_name, state)}/{self._finished_name(task)}"
            await self._objects.put(key, data)
        logger.debug("enqueued %s on %s (%s)", task.id, task.queue_name, state)
        return task.id

    # ------------------------------------------------------------------------- dequeue

    async def dequeue(
        self,
        queues: Sequence[str] | str = ("default",),
        timeout: float | None = None,
        *,
        visibility_timeout: float | None = None,
        worker_id: str | None = None,
    ) -> Task | None:
        call = dequeue_call(queues, timeout, visibility_timeout, worker_id, self._config)

        async def look() -> Task | None:
            await self._maybe_reap()
            for queue in call.queues:
                task = await self._claim_next(queue, call.lease_seconds, worker_id, call.deadline)
                if task is not None:
                    return task
            return None

        wait = functools.partial(self._wait_for_tasks, call.queues)
        with self._dequeuing(call):
            return await poll(look, call.deadline, self._config.poll_interval, wait)

    def _dequeuing(self, call: DequeueCall) -> contextlib.AbstractContextManager[None]:
        """Entered for the whole of a dequeue (bucket stores listen for event hints)."""
        return contextlib.nullcontext()

    # With notifications, how long a waiting consumer sleeps at most before looking anyway: a
    # safety net (a lost notification, a task whose due time comes), not the way tasks arrive.
    SAFETY_POLL = 1.0

    async def _wait_for_tasks(self, queues: list[str], remaining: float) -> None:
        """Sleep until a task may be there: woken by an enqueue in this process or a file-system
        notification, else after ``poll_interval`` (no notifications here) or, when every queue
        is watched, ``SAFETY_POLL`` or the first delayed task's due time, whichever is sooner."""
        self.idle_waits += 1
        pause = self._config.poll_interval
        places = [where for queue in queues for where in await self._locations(queue)]
        watched = {where: self._watch(where) for where in places}
        if any(watched.values()) and all(w or self._not_yet_made(p) for p, w in watched.items()):
            pause = max(pause, min(self.SAFETY_POLL, self._until_first_due(queues)))
        await self._wakeup.wait(min(pause, remaining))

    def stop_watching(self) -> None:
        """Close the file-system watch of idle dequeues (a later wait opens it again)."""
        self._wakeup.close()

    async def open(self) -> None:
        """Ready for use (again, after ``close``)."""

    async def close(self) -> None:
        """Release what idle dequeues opened (a later wait opens it again)."""
        self.stop_watching()

    def _not_yet_made(self, where: str) -> bool:
        """Whether ``where`` is a shard (past 0) whose folder no task has made yet: nothing to
        watch there, and with another shard watched, a task enqueued there by another process
        is seen within ``SAFETY_POLL``. (A queue without its folder is polled, as always.)"""
        directory = self._objects.local_directory(self._dir(where, PENDING))
        return where != queue_of(where) and directory is not None and not os.path.isdir(directory)

    def _watch(self, where: str) -> bool:
        directory = self._objects.local_directory(self._dir(where, PENDING))
        return directory is not None and self._wakeup.watch(directory)

    def _until_first_due(self, queues: list[str]) -> float:
        """Seconds until the first listed task that is not due yet is (infinity if none)."""
        firsts = [due for q in queues if (due := self._first_due_ms(q)) is not None]
        return max(0.0, (min(firsts) - utcnow_ms()) / 1000) if firsts else float("inf")

    def _first_due_ms(self, queue: str) -> int | None:
        """The earliest due time in the listings of ``queue``'s locations that are not stale."""
        oldest = time.monotonic() - self._config.listing_ttl
        dues = [
            due for where, index in self._indexes.items()
            if queue_of(where) == queue and index.listed_at >= oldest
            if (due := index.first_due_ms()) is not None
        ]  # fmt: skip
        return min(dues) if dues else None

    def _is_task_name(self, state: str, name: str) -> bool:
        """Whether ``name`` has the shape of a task's object in ``state``; anything else in a
        queue directory is a stray: listings and counts skip it."""
        if state == PENDING:
            return is_pending_name(name)
        if state == RUNNING:
            return is_running_name(name)
        return is_finished_name(name)

    async def _set_aside_strays(self, where: str, state: str, names: list[str]) -> None:
        """Move names of ``state`` that are not task names under ``corrupt/`` (reported); the
        consumer that meets them does this, read-only calls only skip them."""
        for name in names:
            if not self._is_task_name(state, name):
                await self._ctx.set_aside(
                    f"{self._dir(where, state)}/{name}",
                    ValidationError(f"{name!r} is not the name of a {state} task"),
                )

    async def _fresh_index(self, where: str) -> PendingIndex:
        names = await self._objects.list(self._dir(where, PENDING))
        tasks = [n for n in names if is_pending_name(n)]
        if len(tasks) < len(names):
            await self._set_aside_strays(where, PENDING, names)
        index = self._indexes[where] = PendingIndex(tasks, time.monotonic())
        return index

    def _contended(self) -> bool:
        """Every consumer lists the same names in the same order. Once a consumer has lost a
        race (or, on object stores, listed leases it does not hold) it picks at random among
        all the due names of the top priority for ``CONTENDED_SECONDS``, so that competing
        consumers rarely collide; alone, it takes names strictly in order. On local disk a
        lost race is only a failed rename, but with names taken in order every consumer used
        to try every name: n consumers cost n - 1 failed renames per task."""
        return time.monotonic() < self._contended_until

    async def _crowded(self, index: PendingIndex, now_ms: int, deadline: float | None) -> bool:
        """After a try that failed: whether the consumers are chasing few names, so that this
        one steps back (before ``deadline``, the dequeue's) and lists again. Renames are cheap:
        on a local disk, never."""
        return False

    def _met_others(self) -> None:
        """Another consumer is at work here: pick at random for ``CONTENDED_SECONDS``."""
        self._contended_until = time.monotonic() + self.CONTENDED_SECONDS

    def _lost_race(self) -> None:
        self._met_others()
        self.claim_stats["lost"] += 1

    async def _claim_next(
        self, queue: str, lease_seconds: float, worker_id: str | None,
        deadline: float | None = None,
    ) -> Task | None:  # fmt: skip
        """Claim a due task of ``queue``, or ``None``.

        The listing used is never older than ``listing_ttl``, and after ``LOST_IN_A_ROW`` lost
        races the queue is listed again rather than the stale listing walked on. A queue found
        with nothing due is not listed again while it rests (``_rest``, ``_resting``). A name is
        tried once per call: one that keeps failing (a lease left behind, a store answering 409
        busy) would otherwise come back with every listing and keep the call from ever ending.

        A sharded queue (``shards.py``) is listed one shard per refresh, each consumer going
        round them from a shard of its own: the fleet spreads over the shards, priority holds
        within a shard and, across shards, within a round of listings. It rests once a round
        of fresh listings found nothing due."""
        lease_ms = int(lease_seconds * 1000)
        places = await self._locations(queue)
        turn = self._shard_cursor.get(queue)
        if turn is None:
            turn = random.randrange(len(places))
        where = places[turn % len(places)]
        index = self._indexes.get(where)
        fresh = False
        lost = listed = empty = 0
        tried: set[str] = set()
        while True:
            now_ms = utcnow_ms()
            stale = index is None or time.monotonic() - index.listed_at > self._config.listing_ttl
            if stale or lost >= self.LOST_IN_A_ROW:
                if (stale and not listed and not self._has_due(index, now_ms)
                        and await self._resting(queue)):  # fmt: skip
                    return None
                if lost >= self.LOST_IN_A_ROW:
                    self.claim_stats["relists"] += 1
                if len(places) > 1:  # every refresh lists the next shard
                    turn = (turn + 1) % len(places)
                    self._shard_cursor[queue] = turn
                    where = places[turn]
                index, fresh, lost = await self._fresh_index(where), True, 0
                listed += 1
                for gone in tried:
                    index.discard(gone)
                now_ms = utcnow_ms()
            assert index is not None
            name = index.pick_due(now_ms) if self._contended() else index.next_due(now_ms)
            if name is None:
                in_hand = self._due_in_hand(places, turn, now_ms)
                if in_hand is not None:  # another shard's listing in hand has due names
                    turn, fresh = in_hand, False
                    where = places[turn]
                    index = self._indexes[where]
                    continue
                empty += fresh
                if empty >= self._listings_to_rest(queue, len(places)):
                    self._rest(queue, now_ms)
                    return None
                if not fresh and not listed and await self._resting(queue):
                    return None
                index, fresh = None, False
                continue
            index.discard(name)
            tried.add(name)
            task = await self._try_claim(where, name, now_ms, lease_ms, worker_id)
            if task is not None:
                self._claimed(queue)
                return task
            lost += 1
            if await self._crowded(index, now_ms, deadline):  # many after few names
                lost = self.LOST_IN_A_ROW  # list again first

    def _due_in_hand(self, places: list[str], turn: int, now_ms: int) -> int | None:
        """The position in ``places`` (after ``turn``) of a location whose listing is not
        stale and has due names, if there is one."""
        for step in range(1, len(places)):
            index = self._indexes.get(places[(turn + step) % len(places)])
            listed = (
                index is not None and time.monotonic() - index.listed_at <= self._config.listing_ttl
            )
            if listed and self._has_due(index, now_ms):
                return (turn + step) % len(places)
        return None

    @staticmethod
    def _has_due(index: PendingIndex | None, now_ms: int) -> bool:
        first = None if index is None else index.first_due_ms()
        return first is not None and first <= now_ms

    def _listings_to_rest(self, queue: str, shards: int) -> int:
        """How many fresh listings that find nothing due make a queue of ``shards`` shards
        rest: all of them (a round)."""
        return shards

    def _rest(self, queue: str, now_ms: int) -> None:
        """A fresh listing found nothing due. A local listing is a cheap system call, so the
        next poll (or the file-system notification that ends the wait) lists again at once;
        object stores pause the queue's listings (``LeaseTaskQueue``)."""

    async def _resting(self, queue: str) -> bool:
        """Whether ``queue`` must not be listed now, having been found empty a moment ago."""
        return False

    def _claimed(self, queue: str) -> None:
        """A claim of ``queue`` succeeded (object stores end its idle back-off)."""
        self.claim_stats["won"] += 1

    async def _try_claim(
        self, where: str, name: str, now_ms: int, lease_ms: int, worker_id: str | None
    ) -> Task | None:
        """Claim one pending name at location ``where``; ``None`` if another consumer won it
        or it is unreadable."""
        stem, ext = split_ext(name)
        token = _token(worker_id)
        claimed = running_name(stem, now_ms + lease_ms, token, ext)
        running_dir = self._dir(where, RUNNING)
        if not await self._objects.move(
            f"{self._dir(where, PENDING)}/{name}", f"{running_dir}/{claimed}"
        ):
            self._lost_race()
            return None  # another consumer won this one
        try:
            task = await self._read_task(f"{running_dir}/{claimed}")
        except (CorruptFileError, FileNotFoundError):
            return None
        if await self._refuse_misplaced(task, where, name, f"{running_dir}/{claimed}"):
            return None
        return _delivered(task, now_ms, Lease(
            token=token, expires_at=from_ms(now_ms + lease_ms), worker_id=worker_id,
            key=lease_key(where, claimed),
        ))  # fmt: skip

    async def _refuse_misplaced(self, task: Task, where: str, name: str, key: str) -> bool:
        """Set aside a claimed payload that does not belong under the pending ``name`` it was
        found as (a copy into another queue, a replay under a new name); ``True`` if it was.

        Queue and id must always match. With a ``secret_key`` the payload is signed, so the due
        time and priority in the name must match it too, and an id that already finished is
        not run again (a finished task copied back into ``pending/``).
        """
        reason = None
        queue = queue_of(where)
        if task.queue_name != queue:
            reason = f"its payload belongs to queue {task.queue_name!r}, not {queue!r}"
        elif split_ext(name)[0][DUE_END + 1 :] != task.id:
            reason = f"its payload is task {task.id}, not {task_id_of(name)}"
        elif self._ctx.serializer.signs:
            if split_ext(name)[0] != pending_stem(task):
                reason = "its name's due time or priority differs from its signed payload"
            else:
                for state in FINISHED_DIRS:
                    if await self._objects.exists(
                        f"{self._dir(queue, state)}/{self._finished_name(task)}"
                    ):
                        reason = f"task {task.id} already finished ({state}): a replay"
                        break
        if reason is None:
            return False
        await self._ctx.set_aside(key, ValidationError(f"refused to run {name}: {reason}"))
        return True

    # ----------------------------------------------------------------- leases and fencing

    def _held_key(self, task: Task) -> tuple[str, str]:
        """``(running folder, running name)`` of the lease ``task`` holds."""
        place = self._lease_place(task)
        if place is None or parse_running(place[1]) is None:
            raise LeaseLostError(
                f"task {task.id} holds no lease from this queue (was it dequeued?)"
            )
        return self._dir(place[0], RUNNING), place[1]

    def _lost(self, task: Task, action: str) -> LeaseLostError:
        logger.warning(
            "refused to %s task %s: its lease was lost (expired and taken over)", action, task.id
        )
        return LeaseLostError(f"cannot {action} task {task.id}: its lease was lost")

    def _lease_seconds(self, visibility_timeout: float | None) -> float:
        """A lease duration: the one given (validated), else the configured one."""
        return lease_duration(visibility_timeout, self._config)

    async def _move_held(self, task: Task, lease_seconds: float, action: str) -> tuple[str, str]:
        """Rename the task's running object to a fresh lease; only the lease holder can."""
        running_dir, key = self._held_key(task)
        parsed = parse_running(key)
        assert parsed is not None
        _, ext = split_ext(key)
        expiry_ms = to_ms(utcnow() + timedelta(seconds=lease_seconds))
        if expiry_ms == parsed.expiry_ms:  # always a new name: the rename is the proof
            expiry_ms += 1
        new_key = running_name(parsed.stem, expiry_ms, parsed.token, ext)
        if not await self._objects.move(f"{running_dir}/{key}", f"{running_dir}/{new_key}"):
            raise self._lost(task, action)
        assert task.lease is not None and task.lease.key is not None
        shard = task.lease.key[: len(task.lease.key) - len(key)]  # "s<kk>/", or ""
        task.lease = msgspec.structs.replace(
            task.lease, expires_at=from_ms(expiry_ms), key=shard + new_key
        )
        return running_dir, new_key

    async def renew_lease(self, task: Task, visibility_timeout: float | None = None) -> Task:
        await self._move_held(task, self._lease_seconds(visibility_timeout), "renew")
        return task

    def _stored(self, task: Task) -> Task:
        """The task as written at rest: leases live in object names, not in payloads."""
        return at_rest(task)

    def _final_copy(self, task: Task, status: TaskStatus, error: str | None) -> Task:
        return final_copy(task, status, error, self._config)

    def _queued_copy(self, task: Task, eta: datetime | None, error: str | None) -> Task:
        return queued_copy(task, eta, error)

    def _expired_copy(self, task: Task, now: datetime) -> str:
        """Count the lost delivery of a task whose lease expired; return where it goes next:
        back to pending, or to the dead letter after ``max_deliveries``."""
        return _DIR_OF_STATUS[expire_delivery(task, now, self._config)]

    @staticmethod
    def _check_final(status: TaskStatus | str) -> TaskStatus:
        return check_final(status)

    def _finished_record(
        self, task: Task, status: TaskStatus, error: str | None,
        result: TaskResult | None, events: Sequence[TaskEvent], *, appended: bool = False,
    ) -> tuple[Task, bytes]:  # fmt: skip
        """The final task and the encoded record that holds it with its result and events
        (encoded before anything is written: a result that cannot be stored changes nothing);
        ``appended``: encoded to be appended to the task's object."""
        final = self._final_copy(task, status, error)
        final.expires_at = record_expiry(final, result, self._config)
        record = as_record(final, result, events)
        serializer = self._ctx.serializer
        return final, serializer.appended(record) if appended else serializer.encode(record)

    def _finished_key(self, task: Task, status: TaskStatus) -> str:
        return f"{self._dir(task.queue_name, _DIR_OF_STATUS[status])}/{self._finished_name(task)}"

    async def finish_task(
        self,
        task: Task,
        status: TaskStatus = TaskStatus.COMPLETED,
        error: str | None = None,
        *,
        result: TaskResult | None = None,
        events: Sequence[TaskEvent] = (),
    ) -> Task:
        status = self._check_final(status)
        _, held = self._held_key(task)
        # By the object's own format too: a task enqueued as msgpack stays one document.
        append = self._objects.appends and self._ctx.serializer.appends_to(held)
        final, data = self._finished_record(task, status, error, result, events, appended=append)
        verb = FINISH_VERB[status]
        # The fence is a renewal (it fails once a reaper took the lease over); the record then
        # joins the payload under the fresh lease (appended on local disk, where readers take
        # the last line; rewritten elsewhere), and a rename publishes it. A holder killed
        # before the rename leaves a running object that a reaper re-delivers (the payload, or
        # a partial append read as the payload) or moves on to its finished folder (the record).
        running_dir, key = await self._move_held(task, fence_seconds(task, self._config), verb)
        if append:
            try:
                await self._objects.append(f"{running_dir}/{key}", data)
            except FileNotFoundError:  # removed under a live lease (a purge): nothing to finish
                raise self._lost(task, verb) from None
        else:
            await self._objects.put(f"{running_dir}/{key}", data)
        if not await self._objects.move(f"{running_dir}/{key}", self._finished_key(task, status)):
            raise self._lost(task, verb)
        return final

    async def requeue_task(
        self, task: Task, *, eta: datetime | None = None, error: str | None = None
    ) -> Task:
        queued = self._queued_copy(task, eta, error)
        place = self._lease_place(task)
        running_dir, key = await self._move_held(task, fence_seconds(task, self._config), "requeue")
        assert place is not None
        await self._objects.put(f"{running_dir}/{key}", self._ctx.serializer.encode(queued))
        name = pending_stem(queued) + self._ctx.ext
        if not await self._objects.move(
            f"{running_dir}/{key}", f"{self._dir(place[0], PENDING)}/{name}"
        ):
            raise self._lost(task, "requeue")
        self._index_add(place[0], name)
        self._wakeup.notify()  # a waiting consumer relists and sees the retry's due time
        return queued

    # ---------------------------------------------------------------------- the reaper

    async def _maybe_reap(self) -> None:
        now = time.monotonic()
        if now - self._last_reap >= self._config.reap_interval:
            self._last_reap = now
            try:
                await self.requeue_expired()
            except StorageError as exc:  # claiming goes on; the next interval tries again
                logger.error("reaping expired leases failed: %s", exc)

    async def requeue_expired(self, now: datetime | None = None) -> list[Task]:
        now = now or utcnow()
        now_ms = to_ms(now)
        out: list[Task] = []
        for queue in await self.list_queues():
            try:
                places = await self._discover(queue, fresh=True)
            except StorageError as exc:  # one queue's odd layout stops no other queue's reaping
                logger.error("could not list the shards of queue %s: %s", queue, exc)
                places = [queue]
            for where in places:
                for name in await self._objects.list(self._dir(where, RUNNING)):
                    task = await self._recover_logged(where, name, now_ms, now)
                    if task is not None:
                        out.append(task)
        return out

    async def _recover_logged(
        self, where: str, name: str, now_ms: int, now: datetime
    ) -> Task | None:
        """``_recover_if_expired``; a storage error is logged and leaves the name as it was."""
        try:
            return await self._recover_if_expired(where, name, now_ms, now)
        except StorageError as exc:
            # A full disk, say: the lease stays expired and the next reaper retries;
            # the task's delivery count was not raised (its payload is unchanged).
            logger.error("could not recover expired task %s in %s: %s", name, where, exc)
            return None

    async def _recover_if_expired(
        self, where: str, name: str, now_ms: int, now: datetime
    ) -> Task | None:
        """Re-queue (or dead-letter) the task of one running name if its lease has expired."""
        parsed = parse_running(name)
        if parsed is None or parsed.expiry_ms > now_ms:
            return None
        return await self._recover(where, self._dir(where, RUNNING), name, parsed, now)

    async def _recover(
        self, where: str, running_dir: str, name: str, previous: RunningName, now: datetime
    ) -> Task | None:
        _, ext = split_ext(name)
        stem = previous.stem
        # Take the lease over first: the rename fails if the holder renewed or finished it.
        # The take-over's token names the lost delivery (the worker's token), so that every
        # reaper in a chain of killed ones knows which delivery it recovers.
        delivery = lost_delivery(previous.token)
        token = take_over_token(previous.token)
        expiry_ms = to_ms(now) + int(self._config.visibility_timeout * 1000)
        mine = running_name(stem, expiry_ms, token, ext)
        if not await self._objects.move(f"{running_dir}/{name}", f"{running_dir}/{mine}"):
            return None
        try:
            task = await self._read_task(f"{running_dir}/{mine}")
        except (CorruptFileError, FileNotFoundError):
            return None
        if task.status.is_final:  # its holder died after writing its record: publish it
            target = self._finished_key(task, task.status)
            if await self._objects.move(f"{running_dir}/{mine}", target):
                logger.info("task %s: published the record its worker left in running/", task.id)
            return None
        # Reported before the task moves on, while this take-over holds it: a reaper killed
        # after the report leaves the task in running/ for the next reaper (which reports it
        # again), never a task re-delivered without its lease-expiry event and result.
        # A payload a reaper already rewrote carries the lost delivery's token (that reaper
        # died before the rename below): the delivery counts once, however many reapers die.
        counted = task.lease is not None and task.lease.token == delivery
        dead = False if counted else self._expired_copy(task, now) != PENDING
        # The mark (none on a dead-letter record); names carry leases, so a payload's is
        # ignored on load.
        mark = Lease(token=delivery, expires_at=from_ms(expiry_ms), key=mine)
        task.lease = None if dead else mark
        await self._report_expired(task)
        await self._objects.put(f"{running_dir}/{mine}", self._ctx.serializer.encode(task))
        task.lease = None
        if dead:
            target = f"{self._dir(where, 'failed')}/{self._finished_name(task)}"
        else:
            target = f"{self._dir(where, PENDING)}/{stem}{ext}"
        if not await self._objects.move(f"{running_dir}/{mine}", target):
            return None
        if not dead:
            self._index_add(where, stem + ext)
        log_recovered(task, logger)
        return task

    def _index_add(self, where: str, name: str) -> None:
        index = self._indexes.get(where)
        if index is not None:
            index.add(name)

    def _index_discard(self, where: str, name: str) -> None:
        index = self._indexes.get(where)
        if index is not None:
            index.discard(name)

    async def _report_expired(self, task: Task) -> None:
        """Report a recovery (its event, and a dead-lettered task's result) before the task
        leaves the reaper's hands: at least once, as a recovery that fails midway is retried
        and reported again. (The log line says it once it is done.) A ``StorageError`` stops
        the recovery here: the task stays under this take-over and the next reaper retries."""
        if self.on_lease_expired is not None:
            try:
                await self.on_lease_expired(task)
            except StorageError:
                raise
            except Exception:
                logger.exception("lease-expiry hook failed for task %s", task.id)

    # ------------------------------------------------------------------ lookup and admin

    async def list_queues(self) -> list[str]:
        return sorted(q for q in await self._objects.list_dirs(self._root) if is_valid_name(q))

    async def get_shards(self, queue: str = "default") -> int:
        """How many shards ``queue``'s pending and running tasks are spread over (1 unless
        raised with ``set_shards``; see ``omniq.storage.file.shards``)."""
        return await self._shards.count(validate_name(queue))

    async def set_shards(self, queue: str, shards: int) -> int:
        """Spread ``queue`` over ``shards`` prefixes (1-64), for fleets that outgrow one
        prefix's request rate on a bucket. Workers may run meanwhile: every process follows
        within ``ShardCounts.TTL`` seconds. The count can only be raised (``ValidationError``
        otherwise). Returns the count before."""
        return await self._shards.set(queue, shards)

    async def _locate(self, task_id: str) -> tuple[str, str, str] | None:
        """(location, state dir, name) of a task (``_find``), looking a second time with the
        queues' folders listed afresh if it found nothing: a shard made elsewhere in the last
        ``ShardCounts.TTL`` seconds may hold the task."""
        found = await self._find(task_id)
        if found is None:
            self._shards.forget_folders()
            found = await self._find(task_id)
        return found

    async def _find(self, task_id: str) -> tuple[str, str, str] | None:
        """(location, state dir, name) of a task, trying direct keys before listings."""
        queues = await self.list_queues()
        finished_name = task_id + self._ctx.ext
        for queue in queues:
            for state in FINISHED_DIRS:
                key = f"{self._dir(queue, state)}/{finished_name}"
                try:
                    await self._objects.get(key)
                    return queue, state, finished_name
                except FileNotFoundError:
                    pass
        for queue in queues:
            for state in STATE_DIRS:
                for where, name in await self._placed_names(queue, state):
                    if task_id_of(name) == task_id and self._is_task_name(state, name):
                        return where, state, name
        return None

    async def _state_names(self, where: str, state: str) -> list[str]:
        """Names of the objects that hold the tasks of one state at one location."""
        return await self._objects.list(self._dir(where, state))

    async def _placed_names(self, queue: str, state: str) -> list[tuple[str, str]]:
        """``(location, name)`` of the objects of ``queue``'s tasks in one state, every shard."""
        places = [queue] if state in FINISHED_DIRS else await self._discover(queue)
        return [(where, name) for where in places for name in await self._state_names(where, state)]

    async def _running_lease(self, where: str, name: str) -> tuple[int, str] | None:
        """(expiry ms, token) of the lease on a running name."""
        parsed = parse_running(name)
        return None if parsed is None else (parsed.expiry_ms, parsed.token)

    async def _load(self, where: str, state: str, name: str) -> Task:
        task = await self._read_task(f"{self._dir(where, state)}/{name}")
        task.status = _STATUS_OF_DIR[state]
        task.lease = None  # a running task's lease is in its name; a payload's is a reaper's mark
        if state == RUNNING:
            lease = await self._running_lease(where, name)
            if lease is not None:
                task.attempts += 1
                task.lease = Lease(
                    token=lease[1],
                    expires_at=from_ms(lease[0]),
                    worker_id=lease_holder(lease[1]),
                    key=lease_key(where, name),
                )
        return task

    async def get_task(self, task_id: str) -> Task | None:
        validate_id(task_id, "task id")
        finished_name = task_id + self._ctx.ext
        for queue in await self.list_queues():  # finished tasks: one direct read, no lookup
            for state in FINISHED_DIRS:
                try:
                    return await self._load(queue, state, finished_name)
                except FileNotFoundError:
                    continue
                except CorruptFileError:
                    return None
        # A task may move between the listings of one lookup (and so hide from it) or between
        # the lookup and the read: look again before saying there is none.
        for _ in range(3):
            found = await self._locate(task_id)
            if found is None:
                continue
            try:
                return await self._load(*found)
            except FileNotFoundError:
                continue
            except CorruptFileError:
                return None
        return None

    async def list_tasks(
        self,
        queue_name: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        queues = [validate_name(queue_name)] if queue_name else await self.list_queues()
        if status is None:
            states = list(STATE_DIRS)
        else:
            try:
                states = [_DIR_OF_STATUS[TaskStatus(status)]]
            except ValueError:
                raise ValidationError(f"unknown task status {status!r}") from None
        out: list[Task] = []
        for queue in queues:
            for state in states:
                # In name order across shards: priority, then due time.
                placed = sorted(await self._placed_names(queue, state), key=lambda p: p[1])
                for where, name in placed:
                    if not self._is_task_name(state, name):
                        continue
                    if limit is not None and len(out) >= limit:
                        return out
                    try:
                        out.append(await self._load(where, state, name))
                    except (FileNotFoundError, CorruptFileError):
                        continue
        return out

    async def _update_source(self, task: Task) -> tuple[str, str, str, Task]:
        """Check an ``update_task`` argument: (location, state, name) of the task as it is now,
        and the copy to store."""
        if not isinstance(task, Task):
            raise ValidationError(f"update_task takes a Task, got {type(task).__name__}")
        found = await self._locate(task.id)
        if found is None:
            raise TaskNotFoundError(f"no task {task.id}")
        stored = self._stored(task)
        stored.updated_at = utcnow()
        return (*found, stored)

    async def update_task(self, task: Task) -> None:
        where, state, name, stored = await self._update_source(task)
        src = f"{self._dir(where, state)}/{name}"
        target_state = _DIR_OF_STATUS[task.status]
        if target_state == PENDING:
            target_name = pending_stem(stored) + self._ctx.ext
        elif target_state == RUNNING:
            if state == RUNNING:
                target_name = name
            else:
                expires = utcnow() + timedelta(seconds=self._config.visibility_timeout)
                target_name = running_name(
                    pending_stem(stored), to_ms(expires), _token(), self._ctx.ext
                )
            # The running file keeps the pre-delivery attempt count (see module docstring).
            stored.attempts = max(0, stored.attempts - 1)
        else:
            target_name = self._finished_name(stored)
        data = self._ctx.serializer.encode(stored)
        target = await self._target_location(stored, where, state)
        dst = f"{self._dir(target, target_state)}/{target_name}"
        if src != dst and not await self._objects.move(src, dst):
            raise TaskNotFoundError(f"task {task.id} moved while it was being updated")
        await self._objects.put(dst, data)
        if state == PENDING:
            self._index_discard(where, name)
        if target_state == PENDING:
            self._index_add(target, target_name)

    async def _target_location(self, stored: Task, where: str, state: str) -> str:
        """Where an updated task goes: the shard it is in, unless it moves to another queue or
        comes back from a finished state (a retry of the dead letter): then its home shard."""
        if state in FINISHED_DIRS or stored.queue_name != queue_of(where):
            return await self._home(stored)
        return where

    async def _find_pending(self, task_id: str) -> tuple[str, str] | None:
        """(location, name) of a task that is pending now, if it is."""
        validate_id(task_id, "task id")
        found = await self._locate(task_id)
        return None if found is None or found[1] != PENDING else (found[0], found[2])

    async def cancel_task(self, task_id: str) -> bool:
        found = await self._find_pending(task_id)
        if found is None:
            return False
        where, name = found
        target = f"{self._dir(where, 'cancelled')}/{task_id}{split_ext(name)[1]}"
        if not await self._objects.move(f"{self._dir(where, PENDING)}/{name}", target):
            return False
        self._index_discard(where, name)
        try:
            task = await self._read_task(target)
        except CorruptFileError:
            return True
        now = utcnow()
        task.status, task.completed_at, task.updated_at = TaskStatus.CANCELLED, now, now
        task.expires_at = self._expiry_for(task, now)
        await self._objects.put(target, self._ctx.serializer.encode(task))
        return True

    async def delete_task(self, task_id: str) -> bool:
        validate_id(task_id, "task id")
        name = task_id + self._ctx.ext
        removed = False
        for queue in await self.list_queues():
            for state in FINISHED_DIRS:
                removed = await self._objects.delete(f"{self._dir(queue, state)}/{name}") or removed
        return removed

    async def get_queue_size(self, queue_name: str = "default") -> int:
        placed = await self._placed_names(validate_name(queue_name), PENDING)
        return sum(1 for _, n in placed if is_pending_name(n))

    async def cleanup_expired_tasks(self, now: datetime | None = None) -> int:
        return (await self.cleanup_finished(now))[0]

    async def cleanup_finished(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete finished tasks past their expiry: (records removed, how many of them held
        a result — removed with them)."""
        now = now or utcnow()
        removed = with_result = 0
        for queue in await self.list_queues():
            for state in FINISHED_DIRS:
                directory = self._dir(queue, state)
                for name in await self._objects.list(directory):
                    if not is_finished_name(name):
                        continue
                    try:
                        task = await read_record(self._ctx, f"{directory}/{name}")
                    except (FileNotFoundError, CorruptFileError):
                        continue
                    expires = task.expires_at or self._expiry_for(
                        task, task.completed_at or task.updated_at or task.created_at
                    )
                    expired = expires is not None and expires <= now
                    if expired and await self._objects.delete(f"{directory}/{name}"):
                        removed += 1
                        with_result += task.result is not None
        return removed, with_result

    async def queue_stats(self, now: datetime | None = None) -> list[QueueStats]:
        now_ms = to_ms(now or utcnow())
        out = []
        for queue in await self.list_queues():
            stats = QueueStats(queue=queue, shards=await self._shards.count(queue))
            oldest: int | None = None
            for _, name in await self._placed_names(queue, PENDING):
                parsed = parse_pending(split_ext(name)[0])
                if parsed is None or not is_pending_name(name):
                    continue
                stats.pending += 1
                if parsed.due_ms > now_ms:
                    stats.delayed += 1
                elif oldest is None or parsed.due_ms < oldest:
                    oldest = parsed.due_ms
            stats.oldest_due_at = from_ms(oldest) if oldest is not None else None
            for where, name in await self._placed_names(queue, RUNNING):
                if not self._is_task_name(RUNNING, name):
                    continue
                running = await self._running_lease(where, name)
                if running is None:
                    continue
                stats.running += 1
                if running[0] <= now_ms:
                    stats.expired_leases += 1
                else:
                    holder = lease_holder(running[1]) or "unknown"
                    stats.workers[holder] = stats.workers.get(holder, 0) + 1
            for state in FINISHED_DIRS:
                names = await self._objects.list(self._dir(queue, state))
                setattr(stats, state, sum(1 for n in names if is_finished_name(n)))
            out.append(stats)
        return out
