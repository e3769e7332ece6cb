"""The task queue on object stores (S3, GCS, Azure): claims by conditional create of a lease.

Object stores have no atomic rename, so a task's payload stays at ``pending/<name>`` from
enqueue until it leaves the queue, and a claim is the conditional create (``If-None-Match: *`` /
``ifGenerationMatch=0``) of a small lease object ``running/<name>``: exactly one creator wins.
Renewal, completion, retry and take-over of an expired lease are compare-and-swap writes of that
lease object on its version (ETag / generation), so a worker whose lease was taken over cannot
finish the task.

Leaving the lease is done in two steps, so that a crash at any point loses nothing: first the
lease object is swapped (fenced) for a *settle record* that names where the task goes next and
carries its bytes; then the task is written there, its pending payload deleted, and the lease
deleted. Whoever finds an expired settle record (the reaper) takes it over and completes it.

A pending listing includes the payloads of running tasks; the queue subtracts the running
listing from it, one extra listing per refresh rather than a failed create per running task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime

import msgspec

from omniq.exceptions import (
    CorruptFileError,
    LeaseLostError,
    SerializationError,
    SettleDeferredError,
    StorageError,
    TaskBusyError,
    TaskNotFoundError,
)
from omniq.models._time import utcnow, utcnow_ms
from omniq.models.event import TaskEvent
from omniq.models.result import TaskResult
from omniq.models.task import Lease, Task, TaskStatus
from omniq.storage.checks import DequeueCall
from omniq.storage.file.cloud import ConflictError, deadline
from omniq.storage.file.common import FileStoreContext, from_ms, logger, to_ms
from omniq.storage.file.doorbell import Doorbell
from omniq.storage.file.hints import SqsHints
from omniq.storage.file.keys import (
    PendingIndex,
    PendingName,
    is_pending_name,
    parse_pending,
    pending_stem,
    split_ext,
    task_id_of,
)
from omniq.storage.file.objects import VersionMismatch
from omniq.storage.file.reaper_turn import ReaperTurn
from omniq.storage.file.records import FINISHED_DIRS
from omniq.storage.file.shards import is_valid_location, lease_key, queue_of
from omniq.storage.file.task_queue import (
    _DIR_OF_STATUS,
    FINISH_VERB,
    PENDING,
    RUNNING,
    FileTaskQueue,
)
from omniq.storage.lifecycle import delivered as _delivered
from omniq.storage.lifecycle import fence_seconds, lease_holder, log_recovered
from omniq.storage.lifecycle import lease_token as _token

__all__ = ["LeaseRecord", "LeaseTaskQueue"]


class LeaseRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The content of a lease object. With ``settle_to`` it is a settle record: the lease is
    being released and the task's next object (``settle_to``, holding ``settle_data``) is
    written before the lease is deleted."""

    token: str
    expires_ms: int
    worker_id: str | None = None
    settle_to: str | None = None
    settle_data: bytes | None = None
    #: A hold, not a claim: the settle of the lease ``<queue>/<name>`` named here is writing
    #: this name's payload (a requeue to a new name). Nobody may claim the name before that
    #: settle record is gone, or a reaper completing it could write the payload back after
    #: the task ran and finished. The settle drops the hold last; a reaper drops an expired
    #: hold once the settle record is gone.
    held_for: str | None = None
    #: A reaper's take-over of an expired lease: whoever completes the settle reports the
    #: expiry (its event, a dead-lettered task's result) first, in case the reaper died
    #: before it did. At least once: a report may repeat, none is lost.
    expired: bool = False


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(LeaseRecord).decode


def _parsed(name: str) -> PendingName | None:
    """The parts of a pending payload's name; ``None`` for a stray (not one of ours)."""
    parsed = parse_pending(split_ext(name)[0])
    return parsed if parsed is not None and is_pending_name(name) else None


def _retrieved(future: asyncio.Future[list[str]]) -> None:
    """Mark a future's outcome seen (a cancelled one has none)."""
    if not future.cancelled():
        future.exception()


#: A settle starts no request later than this before its record expires: a request sent
#: before lands before a reaper (whose clock is within this of ours) may take the record over.
SETTLE_MARGIN_MS = 2000

#: When the claim look running in this task began (``_claim_next``): a hint heard since then
#: may be for a task its listing missed (``_rest``).
_LOOK_BEGAN: contextvars.ContextVar[float] = contextvars.ContextVar("omniq_look_began")


class LeaseTaskQueue(FileTaskQueue):
    """``FileTaskQueue`` on a store with conditional create and compare-and-swap.

    ``claim_stats`` counts claim attempts by outcome: ``won``, ``lost`` (another consumer
    holds the name: a failed conditional create), ``phantom`` (the lease was created but the
    payload was gone: the task finished after the listing; three requests for nothing),
    ``deferred`` (409 twice), ``relists`` (listings forced by failed tries and step-backs),
    ``stepped back`` (pauses after a failed try with few names in hand: ``CROWDED_NAMES``),
    ``looked`` (leases read before a claim: ``LOOK_FIRST_ABOVE``) and ``seen taken`` (names
    skipped so, without a write)."""

    HEAD_NAMES = 1000  # due names a refresh lists before it stops, in pages of HEAD_PAGE
    HEAD_PAGE = 1000  # one request on S3 and GCS whatever the page size, up to 1,000
    IDLE_LIST_MAX = 10.0  # an idle consumer lists a queue at least this often (6 a minute)

    def __init__(self, ctx: FileStoreContext, tasks_dir: str) -> None:
        super().__init__(ctx, tasks_dir)
        self.doorbell = Doorbell(self._objects, tasks_dir)
        self._idle_pause: dict[str, float] = {}  # queue -> the current idle listing interval
        self._quiet: set[str] = set()  # queues found empty and not claimed from since
        self._idle_until: dict[str, float] = {}  # queue -> monotonic time to list it again
        self._mine: dict[str, set[str]] = {}  # location -> names claimed here, still leased
        self._short: set[str] = set()  # locations to list the short way (_short_index)
        self.reaper_turn = ReaperTurn(self._objects, tasks_dir, ctx.config.reap_interval)
        #: Bucket event notifications that end a queue's rest (``hints.py``), if configured.
        self.hints: SqsHints | None = None
        self._hints_task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()  # set while a dequeue waits: hints are received
        self._waited: Counter[str] = Counter()  # queues -> dequeues waiting on them
        self._hinted_at: dict[str, float] = {}  # queue -> monotonic time of its last hint
        self._failing: dict[str, float] = {}  # queue -> share of recent tries failed (``_tried``)
        self._closed = False  # closed: a dequeue still waiting starts no hints again
        #: Leases the reaper's sweeps ``read`` and ``skipped`` (written too recently).
        self.reap_stats: Counter[str] = Counter()

    async def enqueue(self, task: Task) -> str:
        task_id = await super().enqueue(task)
        if _DIR_OF_STATUS[task.status] == PENDING or task.status is TaskStatus.RUNNING:
            await self.doorbell.ring(task.queue_name)
        return task_id

    # ------------------------------------------------------------ choosing a name

    # The loop (``FileTaskQueue._claim_next``) is shared; a lost race costs a round trip
    # here, a phantom claim three, and an idle queue is listed at doubling intervals.

    async def _claim_next(
        self, queue: str, lease_seconds: float, worker_id: str | None,
        deadline: float | None = None,
    ) -> Task | None:  # fmt: skip
        began = _LOOK_BEGAN.set(time.monotonic())  # this look's (several dequeues may look)
        try:
            return await super()._claim_next(queue, lease_seconds, worker_id, deadline)
        finally:
            _LOOK_BEGAN.reset(began)

    def _claimed(self, queue: str) -> None:
        super()._claimed(queue)
        self._end_rest(queue)
        self._quiet.discard(queue)

    #: A failed try (a lost race, mostly) with fewer due names than this in hand: the fleet
    #: is chasing few tasks (a queue near empty), and its consumers keep colliding on them
    #: (half the tries and more failed, measured). The loser steps back a random moment up to
    #: ``CROWDED_PAUSE`` (never past its dequeue's deadline) and lists again, by when the
    #: others have taken those names or lost too: in the simulation failed creates per task
    #: 0.41 -> 0.35 at 1,000 workers, 0.31 -> 0.27 at 100.
    CROWDED_NAMES = 200
    CROWDED_PAUSE = 0.2

    async def _crowded(self, index: PendingIndex, now_ms: int, deadline: float | None) -> bool:
        # A dequeue that must not wait (a burst worker's, timeout 0) tries on as before.
        left = (deadline - time.monotonic()) if deadline is not None else 0.0
        if left <= 0 or index.due_left(now_ms, self.CROWDED_NAMES) >= self.CROWDED_NAMES:
            return False
        self.claim_stats["stepped back"] += 1
        await asyncio.sleep(random.uniform(0, min(self.CROWDED_PAUSE, left)))
        return True

    #: Look before claiming: once more than this share of a consumer's recent tries failed
    #: (each try weighs ``FAILING_WEIGHT`` in the share, the older ones less and less), it
    #: reads a name's lease before creating one and skips the name if it is taken. A failed
    #: claim is a write refused (412): on S3 and GCS a write costs what 12.5 reads do and
    #: their write limits are the tighter ones (S3: 3,500 writes, 5,500 reads per second per
    #: prefix), so a read that finds the name taken more than about one time in twelve pays
    #: for itself. A consumer alone never fails a try and never looks (its task costs the
    #: same five requests). In the simulation: failed creates per task 0.25-0.28 -> 0.17 at
    #: N = 100, 0.35 -> 0.14 at N = 1,000, for about 0.5 reads more per task, costing 1-2%
    #: less (README "Look before claiming").
    LOOK_FIRST_ABOVE = 0.12
    FAILING_WEIGHT = 0.1

    def _tried(self, where: str, failed: bool) -> None:
        queue = queue_of(where)
        share = self._failing.get(queue, 0.0)
        self._failing[queue] = share + self.FAILING_WEIGHT * (float(failed) - share)

    def _looks_first(self, where: str) -> bool:
        """Whether to read a name's lease before claiming it: this consumer's tries at the
        queue have been failing (one whose tries succeed does not look)."""
        return self._failing.get(queue_of(where), 0.0) > self.LOOK_FIRST_ABOVE

    async def _taken(self, where: str, name: str) -> bool:
        """Whether a lease is seen on ``name`` (then counted as a failed try)."""
        self.claim_stats["looked"] += 1
        if not await self._objects.exists(self._lease_key(where, name)):
            return False
        self.claim_stats["seen taken"] += 1
        self._met_others()
        self._tried(where, failed=True)
        return True

    def _rest(self, queue: str, now_ms: int) -> None:
        """A listing found nothing due: do not list ``queue`` again for a while (doubling up to
        ``IDLE_LIST_MAX``, but not past the first due time listed), unless its doorbell rings.
        Not after a hint that came during the look: its listing may have gone out before the
        task came, and the next look (``poll_interval`` later) lists again."""
        if self._hinted_at.get(queue, -math.inf) >= _LOOK_BEGAN.get(math.inf):
            return
        pause = min(
            self.IDLE_LIST_MAX, self._idle_pause.get(queue, self._config.listing_ttl / 2) * 2
        )
        self._idle_pause[queue] = pause
        self._quiet.add(queue)
        first = self._first_due_ms(queue)
        if first is not None:
            pause = min(pause, max(0.0, (first - now_ms) / 1000))
        self._idle_until[queue] = time.monotonic() + pause
        self.doorbell.listen(queue)

    @contextlib.contextmanager
    def _dequeuing(self, call: DequeueCall) -> Iterator[None]:
        # With event hints, the queues of a dequeue that may wait are listened for from its
        # start to its end (not only while it sleeps between looks: a hint that came while it
        # looked would go to another consumer, seconds later).
        waits = self.hints is not None and not self._closed and call.deadline is not None
        if waits:
            self._listen(call.queues)
        try:
            yield
        finally:
            if waits:
                self._unlisten(call.queues)

    def _listen(self, queues: list[str]) -> None:
        assert self.hints is not None
        task = self._hints_task
        if task is None or task.done():  # first wait, or after a close (or another loop)
            self._listening = asyncio.Event()
            task = self._hints_task = asyncio.ensure_future(
                self.hints.run(self._hint, self._waited.keys, self._listening)
            )
            task.add_done_callback(self._hints_ended)
        self._waited.update(queues)
        self._listening.set()

    def _unlisten(self, queues: list[str]) -> None:
        for queue in queues:
            self._waited[queue] -= 1
            if self._waited[queue] <= 0:
                del self._waited[queue]
        if not self._waited:
            self._listening.clear()

    def _hint(self, queue: str) -> None:
        """An event says a task came to ``queue``: end its rest, wake a waiting dequeue."""
        self._hinted_at[queue] = time.monotonic()
        self._end_rest(queue)
        self._wakeup.notify()

    def _end_rest(self, queue: str) -> None:
        """List ``queue`` at the next look, every shard of it, and back off from the start."""
        self._idle_pause.pop(queue, None)
        self._idle_until.pop(queue, None)

    def _hints_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("event hints stopped: %s", task.exception())

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        task, self._hints_task = self._hints_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # its end is logged by _hints_ended; a cancel of ours stands
        await super().close()

    def _listings_to_rest(self, queue: str, shards: int) -> int:
        """A round of the shards, unless the queue was resting and its idle timer (not its
        doorbell) ended the rest: then one shard, the next in turn. The doorbell wakes for
        every shard; the timer is the safety net for a missed ring, and listing every shard
        at each would multiply an idle consumer's cost by the shard count."""
        return 1 if queue in self._idle_pause else shards

    async def _resting(self, queue: str) -> bool:
        """Whether ``queue`` should not be listed now: it was found empty a moment ago and its
        doorbell has not rung since."""
        if time.monotonic() >= self._idle_until.get(queue, 0.0):
            return False
        try:
            rung = await self.doorbell.heard(queue)
        except StorageError as exc:  # a hint only: the idle listing still comes
            logger.warning("could not read the doorbell of %s: %s", queue, exc)
            return True
        if rung:
            self._end_rest(queue)  # every shard is listed again, not one
            return False
        return True

    # ------------------------------------------------------------------ names and leases

    def _is_task_name(self, state: str, name: str) -> bool:
        # A lease object is named like the pending payload it holds.
        return super()._is_task_name(PENDING if state == RUNNING else state, name)

    def _lease_key(self, where: str, name: str) -> str:
        return f"{self._dir(where, RUNNING)}/{name}"

    def _payload_key(self, where: str, name: str) -> str:
        return f"{self._dir(where, PENDING)}/{name}"

    def _lease_ms(self, seconds: float | None = None) -> int:
        return to_ms(utcnow()) + int((seconds or self._config.visibility_timeout) * 1000)

    async def _read_lease(self, where: str, name: str) -> tuple[LeaseRecord, str] | None:
        try:
            data, version = await self._objects.get_versioned(self._lease_key(where, name))
        except FileNotFoundError:
            return None
        try:
            return _decode(data), version
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._ctx.set_aside(self._lease_key(where, name), exc)
            return None

    async def _drop_lease(self, where: str, name: str, version: str) -> None:
        with contextlib.suppress(VersionMismatch):  # taken over: the new holder deletes it
            await self._objects.delete_version(self._lease_key(where, name), version)

    async def _state_names(self, where: str, state: str) -> list[str]:
        if state != PENDING:
            return await super()._state_names(where, state)
        payloads = await self._objects.list(self._dir(where, PENDING))
        leased = set(await self._objects.list(self._dir(where, RUNNING)))
        return [n for n in payloads if n not in leased]

    async def _fresh_index(self, where: str) -> PendingIndex:
        """List the head of the queue: pages in name order (priority, then due time) until
        ``HEAD_NAMES`` due, unleased names are in hand. A listing costs a request per page, so
        listing a whole long queue each refresh would make dequeue slow down as it grows.

        Within a priority names sort by due time, so after the first name that is not due yet
        the rest of that priority is not due either: where the store can start a listing after
        a name, the listing jumps to the next priority instead of paging through a backlog of
        delayed tasks (retries waiting out their back-off, say).
        """
        quiet = queue_of(where) in self._quiet and where not in self._short  # one listing anyway
        if quiet and not await self._any_pending(where):
            # Idle (and woken by the doorbell, until a claim): an empty shard costs one
            # listing, not two (running/ is not listed).
            index = self._indexes[where] = PendingIndex([], time.monotonic())
            return index
        if where in self._short:
            short = await self._short_index(where)
            if short is not None:
                return short
        # The leases are listed while the first page of payloads comes: a round trip less
        # per refresh. (Either order only decides which names are tried: a name claimed
        # between the two listings is a lost race, as it would be a moment later.)
        running = asyncio.ensure_future(self._objects.list(self._dir(where, RUNNING)))
        try:
            return await self._head_index(where, running)
        finally:
            # Not awaited: an error of the pending/ listing stands; the outcome of the running/
            # one (if it was not taken) is retrieved so that it is not reported as lost.
            running.cancel()
            running.add_done_callback(_retrieved)

    async def _head_index(self, where: str, running: asyncio.Future[list[str]]) -> PendingIndex:
        """``_fresh_index`` once the listing of the leases (``running``) is under way."""
        leased: set[str] | None = None
        now_ms = to_ms(utcnow())
        first_page: int | None = None  # payloads in the first page: all of them, if not full
        names: list[str] = []
        strays: list[str] = []
        due = 0
        horizon: str | None = None
        start_after: str | None = None
        while True:
            jump: str | None = None
            listing = self._objects.list_pages(
                self._dir(where, PENDING), self.HEAD_PAGE, start_after
            )
            async with contextlib.aclosing(listing) as pages:
                async for page in pages:
                    if leased is None:
                        leased = set(await running)
                        self._note_leases(where, leased)
                    if first_page is None:
                        first_page = len(page)
                    for name in page:
                        if name in leased:
                            continue
                        parsed = _parsed(name)
                        if parsed is None:
                            strays.append(name)
                            continue
                        names.append(name)
                        if parsed.due_ms <= now_ms:
                            due += 1
                        elif self._objects.seeks:
                            jump = f"{parsed.rank}-{'9' * 13}~"  # past this priority's names
                            break
                    if jump is not None:
                        break
                    if due >= self.HEAD_NAMES and page:
                        horizon = page[-1]
                        break
            if jump is None:
                break
            start_after = jump
        # Payloads and leases fit a page, with room to grow: list them together next time. (A
        # queue with strays, in either folder, stays the long way: a sub-folder lists as one
        # name there, but as every object in it in a listing of both.)
        payloads = first_page if first_page is not None and first_page < self.HEAD_PAGE else None
        if (
            self._objects.seeks and payloads is not None and not strays
            and payloads + len(leased or ()) <= self.HEAD_PAGE * 9 // 10
            and all(_parsed(name) is not None for name in leased or ())
        ):  # fmt: skip
            self._short.add(where)
        return await self._new_index(where, names, strays, horizon)

    async def _short_index(self, where: str) -> PendingIndex | None:
        """The index from one listing of ``pending/`` and ``running/`` together (sibling
        folders that sort one after the other, on a store that can start a listing after a
        name): one request where the long way (``_head_index``) takes two, while the payloads
        and leases fit a page, as they do unless a backlog has built up. A location is listed
        this way once a listing the long way found it short (``_short``), until this way finds
        it long: ``None`` if the payloads alone fill a page; the index, but the long way
        next, if the leases took a page more or strays were found."""
        payloads: list[str] = []
        leased: set[str] = set()
        listing = self._objects.list_folders(
            f"{self._root}/{where}", (PENDING, RUNNING), self.HEAD_PAGE
        )
        pages_listed = 0
        async with contextlib.aclosing(listing) as pages:
            async for page in pages:
                pages_listed += 1
                for folder, name in page:
                    if folder == PENDING:
                        payloads.append(name)
                    else:
                        leased.add(name)
                if not leased and len(payloads) >= self.HEAD_PAGE:
                    self._short.discard(where)
                    return None
        self._note_leases(where, leased)
        names: list[str] = []
        strays: list[str] = []
        for name in payloads:
            if name not in leased:
                (strays if _parsed(name) is None else names).append(name)
        odd_leases = any(_parsed(name) is None for name in leased)  # a sub-folder, say
        if pages_listed > 1 or strays or odd_leases:  # the long way: side by side, at once
            self._short.discard(where)
        return await self._new_index(where, names, strays, None)

    def _note_leases(self, where: str, leased: set[str]) -> None:
        """Forget own claims no longer leased; others hold tasks here: pick at random."""
        mine = self._mine[where] = self._mine.get(where, set()) & leased
        if leased - mine:
            self._met_others()

    async def _new_index(
        self, where: str, names: list[str], strays: list[str], horizon: str | None
    ) -> PendingIndex:
        await self._set_aside_strays(where, PENDING, strays)
        index = PendingIndex(names, time.monotonic(), horizon)
        self._indexes[where] = index
        return index

    async def _any_pending(self, where: str) -> bool:
        """Whether ``pending/`` holds anything (one listing request of one name)."""
        listing = self._objects.list_pages(self._dir(where, PENDING), 1)
        async with contextlib.aclosing(listing) as pages:
            async for page in pages:
                if page:
                    return True
        return False

    async def _find(self, task_id: str) -> tuple[str, str, str] | None:
        """Find a task without a window in which it hides: its payload stays in ``pending/``
        from enqueue until it is finished (a retry writes the new name before deleting the old
        one), and its finished record is written before the payload is deleted. So list the
        payloads first, then look for a finished record. A task keeps its shard until it is
        finished, so the shards are looked at one after another."""
        for queue in await self.list_queues():
            for where in await self._discover(queue):
                names = [
                    n
                    for n in await self._objects.list(self._dir(where, PENDING))
                    if is_pending_name(n) and task_id_of(n) == task_id
                ]
                if names:
                    leased = set(await self._objects.list(self._dir(where, RUNNING)))
                    held = [n for n in names if n in leased]
                    return (where, RUNNING, held[0]) if held else (where, PENDING, names[0])
            for state in FINISHED_DIRS:
                name = task_id + self._ctx.ext
                if await self._objects.exists(f"{self._dir(queue, state)}/{name}"):
                    return queue, state, name
        return None

    async def _running_lease(self, where: str, name: str) -> tuple[int, str] | None:
        found = await self._read_lease(where, name)
        return None if found is None else (found[0].expires_ms, found[0].token)

    async def _load(self, where: str, state: str, name: str) -> Task:
        if state != RUNNING:
            return await super()._load(where, state, name)
        task = await self._read_task(self._payload_key(where, name))
        task.status = TaskStatus.RUNNING
        found = await self._read_lease(where, name)
        if found is not None:
            record, version = found
            task.attempts += 1
            task.lease = Lease(
                token=record.token,
                expires_at=from_ms(record.expires_ms),
                worker_id=record.worker_id or lease_holder(record.token),
                key=lease_key(where, name),
                version=version,
            )
        return task

    # -------------------------------------------------------------------------- claims

    async def _try_claim(
        self, where: str, name: str, now_ms: int, lease_ms: int, worker_id: str | None
    ) -> Task | None:
        self.reaper_turn.learn_lease(lease_ms / 1000)
        if self._looks_first(where):
            if await self._taken(where, name):
                return None
            now_ms = utcnow_ms()  # the lease runs from its create, not from before the look
        record = LeaseRecord(token=_token(worker_id), expires_ms=now_ms + lease_ms,
                             worker_id=worker_id)  # fmt: skip
        try:
            version = await self._objects.create(self._lease_key(where, name), _encode(record))
        except FileExistsError:
            self._tried(where, failed=True)
            self._lost_race()
            return None  # held by another worker (or expired: the reaper's business)
        except ConflictError as exc:  # busy, not taken: it stays pending for a later listing
            logger.info("claim of %s deferred: %s", name, exc)
            self.claim_stats["deferred"] += 1
            return None
        # Read only once the lease is ours: a payload read before could predate a rewrite by
        # the previous holder (a reaper's attempts + 1, an admin update) that settled between.
        try:
            task = await self._read_task(self._payload_key(where, name))
        except (FileNotFoundError, CorruptFileError):
            # Finished (or set aside) after our listing: give the name back. Another consumer
            # is at work here, and our listing is stale.
            self._met_others()
            self.claim_stats["phantom"] += 1  # (a look first would have seen no lease either)
            await self._drop_lease(where, name, version)
            return None
        if await self._refuse_misplaced(task, where, name, self._payload_key(where, name)):
            await self._drop_lease(where, name, version)
            return None
        self._tried(where, failed=False)
        self._mine.setdefault(where, set()).add(name)
        return _delivered(task, now_ms, Lease(
            token=record.token, expires_at=from_ms(record.expires_ms), worker_id=worker_id,
            key=lease_key(where, name), version=version,
        ))  # fmt: skip

    def _held(self, task: Task) -> tuple[str, str, str]:
        """``(location, name, version)`` of the lease ``task`` holds."""
        place = self._lease_place(task)
        if place is None or task.lease is None or task.lease.version is None:
            raise LeaseLostError(
                f"task {task.id} holds no lease from this queue (was it dequeued?)"
            )
        return (*place, task.lease.version)

    async def _swap(self, task: Task, record: LeaseRecord, action: str) -> str:
        """Compare-and-swap the task's lease object; only its holder can."""
        where, name, version = self._held(task)
        try:
            return await self._objects.replace(
                self._lease_key(where, name), _encode(record), version
            )
        except VersionMismatch:
            raise self._lost(task, action) from None

    async def renew_lease(self, task: Task, visibility_timeout: float | None = None) -> Task:
        seconds = self._lease_seconds(visibility_timeout)
        self._held(task)
        self.reaper_turn.learn_lease(seconds)
        assert task.lease is not None
        record = LeaseRecord(token=task.lease.token, expires_ms=self._lease_ms(seconds),
                             worker_id=task.lease.worker_id)  # fmt: skip
        version = await self._swap(task, record, "renew")
        task.lease = msgspec.structs.replace(
            task.lease, expires_at=from_ms(record.expires_ms), version=version
        )
        return task

    async def _release(self, task: Task, settle_to: str, data: bytes, action: str) -> None:
        """Fence with a settle record, then settle: the holder's way out of a lease."""
        where, name, _ = self._held(task)
        assert task.lease is not None
        # The settle record lives as long as the lease it replaces: if its writer dies mid-way,
        # a reaper completes it as soon as it would have re-delivered.
        record = LeaseRecord(
            token=task.lease.token, expires_ms=self._lease_ms(fence_seconds(task, self._config)),
            worker_id=task.lease.worker_id, settle_to=settle_to, settle_data=data,
        )  # fmt: skip
        version = await self._swap(task, record, action)
        try:
            await self._settle(where, name, record, version)
        except StorageError as exc:  # the outcome stands in the settle record
            deferred = SettleDeferredError(f"{action} recorded, settle left to a reaper ({exc})")
            deferred.transient = exc.transient
            raise deferred from exc

    async def _settle(self, where: str, name: str, record: LeaseRecord, version: str) -> None:
        """Write the task where the settle record says, drop its pending payload (unless that
        is where it goes), then the lease. Every step is idempotent."""
        assert record.settle_to is not None and record.settle_data is not None
        payload = self._payload_key(where, name)
        # No write may start once a reaper could take the record over: the writes are not
        # conditional, and one landing after the reaper's completion (say after throttled
        # retries) could bring a finished task's payload back, or delete a new one. Stopped
        # here, the settle is left to the reaper, which completes it.
        target = self._new_pending_name(record.settle_to, payload)
        left_ms = max(0, record.expires_ms - utcnow_ms())  # short leases: half of what is left
        with deadline(record.expires_ms - min(SETTLE_MARGIN_MS, left_ms // 2)):
            hold: str | None = None
            if target is not None:
                hold = await self._hold(*target, f"{where}/{name}", record)
            # In this order, not in parallel: a reader must always find the task somewhere
            # (with the payload deleted first, get_task and a waiting caller would see none).
            if target is None or hold is not None:
                await self._objects.put(record.settle_to, record.settle_data)
            if record.settle_to != payload:
                await self._objects.discard(payload)
            await self._drop_lease(where, name, version)
            if target is not None and hold is not None:
                await self._drop_lease(*target, hold)

    def _new_pending_name(self, settle_to: str, payload: str) -> tuple[str, str] | None:
        """``(location, name)`` if a settle writes a pending payload under another name than
        the one it leaves (a requeue with a new due time, an admin move), else ``None``."""
        if settle_to == payload or not settle_to.startswith(self._root + "/"):
            return None
        where, _, rest = settle_to[len(self._root) + 1 :].rpartition(f"/{PENDING}/")
        if "/" in rest or not is_valid_location(where):
            return None
        return where, rest

    async def _hold(self, where: str, name: str, source: str, record: LeaseRecord) -> str | None:
        """Hold ``name`` for the settle of ``source``; its version, or ``None`` if someone else
        holds the name: the task moved on there (its payload was written by an earlier try of
        this settle, by an older version without holds), and it must not be written again."""
        mark = _encode(LeaseRecord(token=record.token, expires_ms=record.expires_ms,
                                   held_for=source))  # fmt: skip
        key = self._lease_key(where, name)
        try:
            return await self._objects.create(key, mark)
        except FileExistsError:
            pass
        found = await self._read_lease(where, name)
        if found is not None and found[0].held_for == source:
            return found[1]  # an earlier try of this settle (killed, or out of time)
        logger.warning("%s is held by another lease: the settle of %s does not write it", key,
                       source)  # fmt: skip
        return None

    async def finish_task(
        self,
        task: Task,
        status: TaskStatus = TaskStatus.COMPLETED,
        error: str | None = None,
        *,
        result: TaskResult | None = None,
        events: Sequence[TaskEvent] = (),
    ) -> Task:
        # The settle record (the fence) carries the whole record: the result and events are
        # readable once it is written to completed/, or once a reaper completes the settle.
        status = self._check_final(status)
        final, data = self._finished_record(task, status, error, result, events)
        await self._release(task, self._finished_key(task, status), data, FINISH_VERB[status])
        return final

    async def requeue_task(
        self, task: Task, *, eta: datetime | None = None, error: str | None = None
    ) -> Task:
        queued = self._queued_copy(task, eta, error)
        name = pending_stem(queued) + self._ctx.ext
        data = self._ctx.serializer.encode(queued)
        where = self._held(task)[0]  # a retry stays in its shard
        await self._release(task, self._payload_key(where, name), data, "requeue")
        self._index_add(where, name)
        self._wakeup.notify()
        return queued

    # ---------------------------------------------------------------------- the reaper

    SWEEP_READS = 16  # lease reads (and recoveries) a sweep keeps in flight

    async def _maybe_reap(self) -> None:
        # Reaping lists every running/ folder: one consumer per reap interval does it for
        # all, the holder of the reaper turn (see reaper_turn.py).
        now = time.monotonic()
        if now - self._last_reap >= self.reaper_turn.interval:
            self._last_reap = now
            try:
                if await self.reaper_turn.take():
                    await self._sweep_expired(full=self.reaper_turn.full_sweep_due(), turn=True)
                    if self.doorbell.sweep_due():
                        await self.doorbell.sweep(await self.list_queues())
            except StorageError as exc:  # claiming goes on; the next interval tries again
                logger.error("reaping expired leases failed: %s", exc)

    async def requeue_expired(self, now: datetime | None = None) -> list[Task]:
        """Every lease read, ``SWEEP_READS`` at a time (a worker's start-up reap: one after
        another, the 4,000 leases of a busy fleet took a starting worker 80 s at 20 ms)."""
        return await self._sweep_expired(full=True, now=now)

    async def reap_at_start(self) -> None:
        """The sweep's light form without the turn: the leases that missed a renewal. (A
        thousand workers starting beside a busy fleet would otherwise read 4,000 leases each;
        a lease of another's that is still quiet expires into the turn holder's sweeps.)"""
        await self._sweep_expired()

    async def _sweep_expired(
        self, *, full: bool = False, now: datetime | None = None, turn: bool = False
    ) -> list[Task]:
        """The reaper's sweep: ``requeue_expired``, reading (unless ``full``) only the leases
        the listing shows unwritten for at least half the shortest lease known to the fleet
        (the reaper turn's; the configured visibility timeout if no consumer said).

        A live holder rewrites its lease every third of it, so its leases are not read; a
        lease is read once its holder has missed a renewal. The margin of half a lease absorbs
        a store clock ahead of this one by less; a larger skew, or a lease shorter than any
        consumer told the turn, waits for the next full sweep (once a minute, fleet-wide).
        Reads run ``SWEEP_READS`` at a time. The reaper turn's sweep (``turn``) renews the turn
        as it goes, and stops if the turn changed hands meanwhile; other sweeps leave it alone."""
        now = now or utcnow()
        shortest_ms = self.reaper_turn.shortest_lease_ms
        quiet_for = shortest_ms / 2000 if shortest_ms else self._config.visibility_timeout / 2
        quiet_since = now.timestamp() - quiet_for
        out: list[Task] = []
        for queue in await self.list_queues():
            try:
                places = await self._discover(queue, fresh=full)
            except StorageError as exc:  # one queue's odd layout stops no other queue's sweep
                logger.error("could not list the shards of queue %s: %s", queue, exc)
                places = [queue]
            for where in places:  # shard by shard
                if not await self._sweep_location(where, full, quiet_since, now, out, turn):
                    return out  # the turn changed hands: its new holder sweeps
        return out

    async def _sweep_location(
        self, where: str, full: bool, quiet_since: float, now: datetime, out: list[Task],
        turn: bool,
    ) -> bool:  # fmt: skip
        """Sweep one location's leases into ``out``; ``False`` if the turn was lost (``turn``:
        the reaper turn's sweep)."""
        now_ms = to_ms(now)
        listed = await self._objects.list_modified(self._dir(where, RUNNING))
        names = [n for n in listed if self._is_task_name(RUNNING, n)]
        due = [n for n in names if full or (listed[n] or 0.0) <= quiet_since]
        self.reap_stats["skipped"] += len(names) - len(due)
        for start in range(0, len(due), self.SWEEP_READS):
            reaper = self.reaper_turn
            if turn and reaper.held and reaper.renewal_due() and not await reaper.take():
                return False
            batch = due[start : start + self.SWEEP_READS]
            self.reap_stats["read"] += len(batch)
            found = await asyncio.gather(
                *(self._recover_logged(where, name, now_ms, now) for name in batch)
            )
            out.extend(task for task in found if task is not None)
        return True

    async def _recover_if_expired(
        self, where: str, name: str, now_ms: int, now: datetime
    ) -> Task | None:
        if not self._is_task_name(RUNNING, name):
            return None
        found = await self._read_lease(where, name)
        if found is None or found[0].expires_ms > now_ms:
            return None
        return await self._recover_lease(where, name, *found, now)

    async def _recover_lease(
        self, where: str, name: str, record: LeaseRecord, version: str, now: datetime
    ) -> Task | None:
        lease_key = self._lease_key(where, name)
        if record.held_for is not None:
            await self._release_hold(where, name, record.held_for, version)
            return None
        if record.settle_to is not None:  # its holder died while settling: finish the job
            record.token, record.expires_ms = _token(), self._lease_ms()
            try:
                version = await self._objects.replace(lease_key, _encode(record), version)
            except VersionMismatch:
                return None
            task = None
            if record.expired and record.settle_data is not None:
                try:
                    task = self._ctx.serializer.decode(record.settle_data, Task, record.settle_to)
                except SerializationError as exc:  # settled unread, as before; read at the claim
                    logger.error("settle record of %s unreadable, not reported: %s", name, exc)
            if task is None:
                await self._settle(where, name, record, version)
                return None
            return await self._settle_expired(where, name, task, record, version)
        try:
            task = await self._read_task(self._payload_key(where, name))
        except (FileNotFoundError, CorruptFileError):
            await self._drop_lease(where, name, version)  # a lease on nothing: drop it
            return None
        if self._expired_copy(task, now) == PENDING:
            settle_to = self._payload_key(where, name)
        else:
            settle_to = f"{self._dir(where, 'failed')}/{self._finished_name(task)}"
        taken = LeaseRecord(
            token=_token(), expires_ms=self._lease_ms(), settle_to=settle_to,
            settle_data=self._ctx.serializer.encode(task), expired=True,
        )  # fmt: skip
        try:  # the take-over: fails if the holder renewed or finished meanwhile
            version = await self._objects.replace(lease_key, _encode(taken), version)
        except VersionMismatch:
            return None
        return await self._settle_expired(where, name, task, taken, version)

    async def _release_hold(self, where: str, name: str, source: str, version: str) -> None:
        """An expired hold: drop it once the settle it was for is done (its record gone)."""
        source_where, _, source_name = source.rpartition("/")
        if is_valid_location(source_where) and is_pending_name(source_name):
            found = await self._read_lease(source_where, source_name)
            # Kept only for a settle record that writes this very name: a hold naming
            # anything else (itself, a plain lease, a hostile value) would pin the task.
            if found is not None and found[0].settle_to == self._payload_key(where, name):
                return  # that settle is not done: whoever completes it drops the hold
        await self._drop_lease(where, name, version)
        await self._back_to_pending(where, name)

    async def _settle_expired(
        self, where: str, name: str, task: Task, record: LeaseRecord, version: str
    ) -> Task:
        """Report a recovery, then settle it (see ``LeaseRecord.expired``)."""
        await self._report_expired(task)
        await self._settle(where, name, record, version)
        if task.status is TaskStatus.PENDING:
            await self._back_to_pending(where, name)
        log_recovered(task, logger)
        return task

    # ------------------------------------------------------------------ admin moves

    async def cancel_task(self, task_id: str) -> bool:
        found = await self._find_pending(task_id)
        if found is None:
            return False
        where, name = found
        try:
            task = await self._read_task(self._payload_key(where, name))
        except (FileNotFoundError, CorruptFileError):
            return False
        final = self._final_copy(task, TaskStatus.CANCELLED, None)
        record = LeaseRecord(
            token=_token(), expires_ms=self._lease_ms(),
            settle_to=f"{self._dir(where, 'cancelled')}/{self._finished_name(task)}",
            settle_data=self._ctx.serializer.encode(final),
        )  # fmt: skip
        try:  # a claim by settle record: fails if a worker claimed it first
            version = await self._objects.create(self._lease_key(where, name), _encode(record))
        except FileExistsError:
            return False
        await self._settle(where, name, record, version)
        self._index_discard(where, name)
        return True

    async def update_task(self, task: Task) -> None:
        """Rewrite a task in whatever state it is in (an admin tool). A pending or running task
        is taken under a lease first, so no claim or finish races the rewrite; a running task's
        worker thereby loses its lease (its outcome is refused) and the task, left RUNNING under
        a lease nobody holds, is re-delivered when that lease expires."""
        where, state, name, stored = await self._update_source(task)
        if state in FINISHED_DIRS:
            await self._refuse_while_settling(where, task.id)
        target_state = _DIR_OF_STATUS[task.status]
        if target_state == RUNNING:
            stored.attempts = max(0, stored.attempts - 1)  # payloads count earlier deliveries
        place = await self._target_location(stored, where, state)
        if target_state in (PENDING, RUNNING):
            target_name = pending_stem(stored) + self._ctx.ext
            target = self._payload_key(place, target_name)
        else:
            target_name = self._finished_name(stored)
            target = f"{self._dir(place, target_state)}/{target_name}"
        data = self._ctx.serializer.encode(stored)
        lease = _encode(LeaseRecord(token=_token(), expires_ms=self._lease_ms()))
        if state in FINISHED_DIRS:
            source = f"{self._dir(where, state)}/{name}"
            await self._objects.put(target, data)
            if source != target:
                await self._objects.delete(source)
        else:
            record = LeaseRecord(token=_token(), expires_ms=self._lease_ms(), settle_to=target,
                                 settle_data=data)  # fmt: skip
            version = await self._take_control(where, state, name, record)
            self._index_discard(where, name)
            if target_state == RUNNING and target == self._payload_key(where, name):
                # Stays running under the same name: rewrite the payload, keep the lease held.
                await self._objects.put(target, data)
                await self._objects.replace(self._lease_key(where, name), lease, version)
                return
            await self._settle(where, name, record, version)
        if target_state == RUNNING:  # a lease nobody holds: it expires and is re-delivered
            with contextlib.suppress(FileExistsError):  # a worker claimed it meanwhile
                await self._objects.create(self._lease_key(place, target_name), lease)
        elif target_state == PENDING:
            await self._back_to_pending(place, target_name)

    async def _back_to_pending(self, where: str, name: str) -> None:
        """A task pending again (recovered, released, moved): idle consumers elsewhere learn
        of it by the doorbell, not by their idle listings (one shard a wake)."""
        self._index_add(where, name)
        await self.doorbell.ring(queue_of(where))

    async def _refuse_while_settling(self, queue: str, task_id: str) -> None:
        """A finished record is written before its settle record is gone: until then a
        rewrite (``app.retry`` of a task that just failed) would be undone by whoever
        completes the settle. One listing of ``running/`` per shard, on an admin path only."""
        for _, name in await self._placed_names(queue, RUNNING):
            if is_pending_name(name) and task_id_of(name) == task_id:
                raise TaskBusyError(f"task {task_id} is being settled: try again")

    async def _take_control(self, where: str, state: str, name: str, record: LeaseRecord) -> str:
        """Hold a pending or running task's lease with ``record`` (an admin take-over)."""
        key = self._lease_key(where, name)
        try:
            if state == PENDING:
                return await self._objects.create(key, _encode(record))
            found = await self._read_lease(where, name)
            if found is not None:
                if found[0].held_for is not None or found[0].settle_to is not None:
                    raise TaskBusyError(f"task at {key} is being settled: try again")
                return await self._objects.replace(key, _encode(record), found[1])
        except (FileExistsError, VersionMismatch):
            pass
        logger.info("task at %s changed hands during an update", key)
        raise TaskNotFoundError(f"task at {key} moved while it was being updated")
