"""The bucket reaper's costs: which lease objects a sweep reads, and who holds the reaper turn.

Run on a simulated bucket whose clock is OmniQ's (the ``clock`` fixture), so that object write
times and lease expiries move together and nothing depends on this machine's speed. The drivers'
write times (what the simulation stands in for) are checked against the real emulators in
``test_objects.py``."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.scale_sim import SimBackend

from omniq.exceptions import StorageError, TaskBusyError
from omniq.models._time import utcnow, utcnow_ms
from omniq.models.task import Task, TaskStatus
from omniq.storage.file.cloud import Backoff
from omniq.storage.file.simulated import ProviderError, SimulatedBucket, SimulatedObjectStore

pytestmark = pytest.mark.file_layout("the lease-object reaper on a simulated bucket")


def _backend(bucket: SimulatedBucket, **settings: float) -> SimBackend:
    return SimBackend(SimulatedObjectStore(bucket, instant=True), **settings)


async def test_a_sweep_reads_only_the_leases_whose_holder_missed_a_renewal(clock):
    """A live holder rewrites its lease every third of it; a sweep reads a lease only once the
    listing shows it unwritten for half a lease, so live leases cost the reaper nothing."""
    backend = _backend(SimulatedBucket("s3", seed=1), visibility_timeout=30)
    async with backend:
        q = backend.task_queue
        await q.enqueue(Task(func="live"))
        await q.enqueue(Task(func="dead"))
        first, second = await q.dequeue("default"), await q.dequeue("default")
        assert first is not None and second is not None
        live, dead = (first, second) if first.func == "live" else (second, first)
        assert await q._sweep_expired() == []
        assert q.reap_stats == {"skipped": 2}
        recovered = []
        for _ in range(4):  # 40 s: the live holder renews every 10 s, the dead one never does
            clock.advance(10)
            live = await q.renew_lease(live)
            recovered += await q._sweep_expired()
        # The dead lease was read at 20 s (not expired yet) and at 30 s (recovered); the live
        # one never.
        assert [t.id for t in recovered] == [dead.id]
        assert q.reap_stats["read"] == 2, q.reap_stats
        assert (await q.get_task(dead.id)).status is TaskStatus.PENDING
        assert (await q.finish_task(live)).status is TaskStatus.COMPLETED


async def test_a_lease_shorter_than_the_configured_one_is_recovered_in_its_own_time(clock):
    """A lease this process granted for less than the configured visibility timeout lowers the
    sweep's threshold: it is recovered once it expires, not half the configured timeout later."""
    backend = _backend(SimulatedBucket("s3", seed=1), visibility_timeout=600)
    async with backend:
        q = backend.task_queue
        task_id = await q.enqueue(Task(func="f"))
        assert await q.dequeue("default", visibility_timeout=4) is not None
        clock.advance(3)
        assert await q._sweep_expired() == []
        clock.advance(2)
        assert [t.id for t in await q._sweep_expired()] == [task_id]


def _on(clock, *backends: SimBackend) -> list:
    """The backends' reaper turns, their monotonic clocks driven by the test's clock."""
    turns = [b.task_queue.reaper_turn for b in backends]
    for turn in turns:
        turn._monotonic = lambda: clock.now.timestamp()
    return turns


async def test_the_reaper_turn_stays_with_its_holder_until_it_lapses(clock):
    """The holder renews the turn by compare-and-swap every interval without reading it; the
    others look at it every two intervals (and a second) and take it over once they have seen
    the same version for that long."""
    bucket = SimulatedBucket("s3", seed=1)
    a, b = _backend(bucket, reap_interval=10), _backend(bucket, reap_interval=10)
    async with a, b:
        ta, tb = _on(clock, a, b)
        assert await ta.take()
        assert not await tb.take()  # first sight of this version
        reads = bucket.requests["get"]
        clock.advance(10)
        assert await ta.take()  # renewed
        assert not await tb.take()  # not time to look again
        assert bucket.requests["get"] == reads  # neither read the turn
        clock.advance(25)  # 35 s: the holder stops renewing (last at 10 s)
        assert not await tb.take()  # a new version since its last look: the holder is alive
        clock.advance(21)
        assert await tb.take()  # the same version for 21 s: lapsed
        assert not await ta.take()  # its renewal fails: b holds the turn now
        clock.advance(10)
        assert not await ta.take()
        assert await tb.take()


async def test_clock_jumps_and_skew_do_not_move_the_turn(clock):
    """Lapse is judged by each consumer's monotonic clock, not by the expiry the holder wrote
    by its own: a wall clock that jumps (or a holder's clock far behind) changes nothing."""
    bucket = SimulatedBucket("s3", seed=1)
    a, b = _backend(bucket, reap_interval=10), _backend(bucket, reap_interval=10)
    async with a, b:
        ta, tb = _on(clock, a, b)
        ticks = [0.0]
        tb._monotonic = lambda: ticks[0]  # b's monotonic clock moves on its own
        assert await ta.take()
        for _ in range(6):
            clock.advance(3600)  # the wall clock jumps an hour at each renewal
            ticks[0] += 10
            assert await ta.take()
            assert not await tb.take()


async def test_a_consumer_with_a_shorter_interval_or_lease_takes_the_turn_over(clock):
    """The turn records the shortest reap interval and lease its holder knows: a consumer that
    needs sweeps more often, or leases read earlier, takes it over and keeps the smaller values
    of both (no see-saw between the two)."""
    bucket = SimulatedBucket("s3", seed=1)
    slow = _backend(bucket, reap_interval=300, visibility_timeout=3600)
    short = _backend(bucket, reap_interval=300, visibility_timeout=3600)
    fast = _backend(bucket, reap_interval=5, visibility_timeout=3600)
    async with slow, short, fast:
        t_slow, t_short, t_fast = _on(clock, slow, short, fast)
        assert await t_slow.take()
        assert await t_fast.take()  # it sweeps every 5 s, not every 300
        assert not await t_slow.take()
        await short.task_queue.enqueue(Task(func="f"))
        assert await short.task_queue.dequeue("default", visibility_timeout=30) is not None
        clock.advance(1)
        assert await t_short.take()  # its 30-s leases need earlier reads
        assert (t_short.interval, t_short.shortest_lease_ms) == (5.0, 30_000)  # fast's kept
        assert not await t_fast.take()
        assert not await t_slow.take()
        clock.advance(1)
        fresh = _backend(bucket, reap_interval=2, visibility_timeout=3600)  # no lease yet
        async with fresh:
            (t_fresh,) = _on(clock, fresh)
            assert await t_fresh.take()  # a shorter interval...
            assert t_fresh.shortest_lease_ms == 30_000  # ...and the lease the turn knew, kept


async def test_a_turn_nobody_renews_is_taken_over_whatever_expiry_it_says(clock):
    """A stray ``.reaper`` with an expiry a year ahead (or a holder's clock hours ahead) does
    not stop the sweeps: it lapses like any turn nobody renews."""
    bucket = SimulatedBucket("s3", seed=1)
    backend = _backend(bucket, reap_interval=5)
    async with backend:
        (turn,) = _on(clock, backend)
        far = utcnow() + timedelta(days=365)
        record = {"token": "x", "expires_ms": int(far.timestamp() * 1000)}
        await backend.objects.put(turn.key, json.dumps(record).encode())
        assert not await turn.take()
        clock.advance(11)
        assert await turn.take()


async def test_a_renewal_written_but_answered_with_an_error_keeps_the_turn(clock):
    """The holder's version went stale (its last renewal was written, the answer lost): it
    reads the turn, finds its own token, and carries on as the holder."""
    bucket = SimulatedBucket("s3", seed=1)
    a, b = _backend(bucket, reap_interval=10), _backend(bucket, reap_interval=10)
    async with a, b:
        ta, tb = _on(clock, a, b)
        assert await ta.take()
        ta._version = "stale"
        clock.advance(10)
        assert await ta.take()
        assert not await tb.take()


async def test_a_lease_nobody_told_the_turn_about_is_recovered_by_the_next_full_sweep(clock):
    """A worker with short leases that dies before it told the turn: its lease is read, at the
    latest, by the holder's next sweep that reads every lease (once a minute)."""
    bucket = SimulatedBucket("s3", seed=1)
    holder = _backend(bucket, reap_interval=5, visibility_timeout=3600)
    worker = _backend(bucket, reap_interval=5, visibility_timeout=3600)

    async def reap() -> None:
        holder.task_queue._last_reap = float("-inf")  # its reap interval is monotonic time
        await holder.task_queue._maybe_reap()

    async with holder, worker:
        _on(clock, holder, worker)
        await reap()  # the holder's first sweep reads every lease
        task_id = await worker.task_queue.enqueue(Task(func="f"))
        assert await worker.task_queue.dequeue("default", visibility_timeout=30) is not None
        clock.advance(40)  # expired at 30 s; written 40 s ago, under half the holder's 3,600
        await reap()
        assert (await holder.task_queue.get_task(task_id)).status is TaskStatus.RUNNING
        clock.advance(25)  # a minute since the last full sweep
        await reap()
        assert (await holder.task_queue.get_task(task_id)).status is TaskStatus.PENDING


@contextlib.asynccontextmanager
async def _one_claimed(**backoff: int) -> AsyncIterator[tuple[SimBackend, Task]]:
    """A simulated bucket (leases of 30 s, throttled requests retried at once; ``backoff``:
    more ``Backoff`` settings) holding one task, claimed."""
    backend = _backend(SimulatedBucket("s3", seed=1), visibility_timeout=30)
    async with backend:
        backend.objects.backoff = Backoff(base=0.001, **backoff)
        await backend.task_queue.enqueue(Task(func="f"))
        task = await backend.task_queue.dequeue("default")
        assert task is not None
        yield backend, task


async def test_a_settle_throttled_past_its_record_s_expiry_is_left_to_the_reaper(clock):
    """The settle's writes are not conditional: one landing after a reaper completed the same
    settle (after throttled retries, say) could bring a finished task's payload back (it ran
    twice in the 1,000-worker simulation) or delete a new one. So a settle starts no request
    within two seconds of its record's expiry; the reaper completes what is left."""
    async with _one_claimed() as (backend, task):
        q, store, task_id = backend.task_queue, backend.objects, task.id
        original, attempts = store._put, []

        async def slow_down(path, data, *, create, version):
            if "/completed/" in path:  # every write of the finished record: 503, 10 s gone
                attempts.append(path)
                clock.advance(10)
                raise ProviderError(503, "SlowDown")
            return await original(path, data, create=create, version=version)

        store._put = slow_down
        with pytest.raises(StorageError):
            await q.finish_task(task)
        # The fence holds until 30 s: tries at 0, 10 and 20 s, none at 30 (8 before).
        assert len(attempts) == 3
        store._put = original
        assert (await q.get_task(task_id)).status is TaskStatus.RUNNING
        clock.advance(1)
        await q._sweep_expired(full=True)  # the reaper completes the settle
        assert (await q.get_task(task_id)).status is TaskStatus.COMPLETED


async def test_a_settle_of_a_short_lease_is_not_cut_short(clock):
    """The margin shrinks to half of what is left of a short record: a 1-s lease finishes."""
    backend = _backend(SimulatedBucket("s3", seed=1), visibility_timeout=1)
    async with backend:
        q = backend.task_queue
        await q.enqueue(Task(func="f"))
        task = await q.dequeue("default")
        assert task is not None
        assert (await q.finish_task(task)).status is TaskStatus.COMPLETED


@contextlib.contextmanager
def _deletes_refused(store, part: str) -> Iterator[None]:
    """Deletes of the keys containing ``part`` answer 503: the store throttles them."""
    original = store._delete

    async def refuse(path, version):
        if part in path:
            raise ProviderError(503, "SlowDown")
        return await original(path, version)

    store._delete = refuse
    try:
        yield
    finally:
        store._delete = original


async def _listing_anew(q) -> Task | None:
    """A dequeue that lists the queue now: its listing is kept ``listing_ttl``, and a queue
    found empty rests a while, both in real (monotonic) time."""
    q._indexes.clear()
    q._idle_until.clear()
    return await q.dequeue("default")


async def test_a_requeue_to_a_new_name_is_held_until_the_old_settle_is_done(clock):
    """A retry with a delay settles to a new pending name. Its payload is written first, and
    the old settle record stays until the settle is done: if the new name were claimable in
    between, a reaper completing that record could write the payload back after the task ran
    and finished (it ran twice in the throttled fleet simulation). A hold keeps it unclaimed."""
    async with _one_claimed() as (backend, task):
        q, store, task_id = backend.task_queue, backend.objects, task.id
        with _deletes_refused(store, "/pending/"), pytest.raises(StorageError):
            # the old payload's delete: the settle stops there
            await q.requeue_task(task, eta=utcnow() + timedelta(seconds=1))
        clock.advance(2)  # the new name is due, and written
        assert await _listing_anew(q) is None  # held while the old settle record stands
        clock.advance(40)  # that record expired: a reaper completes it and drops the hold
        await q._sweep_expired(full=True)
        again = await _listing_anew(q)
        assert again is not None and again.id == task_id and again.attempts == 2
        await q.finish_task(again)
        clock.advance(60)
        await q._sweep_expired(full=True)
        assert await _listing_anew(q) is None  # nothing written back
        assert (await q.get_task(task_id)).status is TaskStatus.COMPLETED
        assert [p for p in backend.objects.sim.paths() if "/running/" in p] == []


async def test_an_expired_hold_is_dropped_once_its_settle_is_done(clock):
    """A settler that completed everything but the hold's delete: the reaper drops the hold
    once the settle record it names is gone (not before), and the task runs."""
    async with _one_claimed() as (backend, task):
        q, store, task_id = backend.task_queue, backend.objects, task.id
        original, deletes = store._delete, []

        async def refuse_the_last(path, version):
            deletes.append(path)
            if len(deletes) == 3:  # old payload, old lease, then the hold: refused
                raise ProviderError(503, "SlowDown")
            return await original(path, version)

        store._delete = refuse_the_last
        store.backoff = Backoff(base=0.001, attempts=1)
        with pytest.raises(StorageError):
            await q.requeue_task(task, eta=utcnow() + timedelta(seconds=1))
        store._delete = original
        clock.advance(2)
        assert await _listing_anew(q) is None  # still held
        clock.advance(40)
        await q._sweep_expired(full=True)
        again = await _listing_anew(q)
        assert again is not None and again.id == task_id


async def _requeue_stopped_after_the_new_payload(q, store, task) -> None:
    """A retry with a delay whose settle stops once the new payload is written (and held)."""
    with _deletes_refused(store, "/pending/"), pytest.raises(StorageError):
        await q.requeue_task(task, eta=utcnow() + timedelta(seconds=1))


async def test_an_update_of_a_task_being_settled_is_refused(clock):
    """An admin rewrite must not take over a hold (or a settle record): the settle, completed
    later, would write the task back beside the rewritten one."""
    async with _one_claimed(attempts=1) as (backend, task):
        q, store, task_id = backend.task_queue, backend.objects, task.id
        await _requeue_stopped_after_the_new_payload(q, store, task)
        stored = await q.get_task(task_id)
        assert stored is not None
        stored.priority = 5
        with pytest.raises(TaskBusyError, match="being settled"):
            await q.update_task(stored)
        clock.advance(40)
        await q._sweep_expired(full=True)  # the settle completes
        stored = await q.get_task(task_id)
        assert stored is not None and stored.status is TaskStatus.PENDING
        stored.priority = 5
        await q.update_task(stored)
        again = await _listing_anew(q)
        assert again is not None and again.priority == 5
        await q.finish_task(again)
        clock.advance(60)
        await q._sweep_expired(full=True)
        assert await _listing_anew(q) is None


async def test_a_retry_of_a_failed_task_waits_for_its_settle(clock):
    """The failed record is written before the settle record goes: a retry in between would be
    undone by whoever completes the settle (it deletes the pending payload). Refused until then."""
    async with _one_claimed(attempts=1) as (backend, task):
        q, store, task_id = backend.task_queue, backend.objects, task.id
        with _deletes_refused(store, "/running/"), pytest.raises(StorageError):
            await q.finish_task(task, TaskStatus.FAILED, "boom")
        failed = await q.get_task(task_id)
        assert failed is not None and failed.status is TaskStatus.FAILED
        failed.status, failed.attempts = TaskStatus.PENDING, 0
        with pytest.raises(TaskBusyError, match="being settled"):
            await q.update_task(failed)
        clock.advance(40)
        await q._sweep_expired(full=True)
        await q.update_task(failed)
        again = await _listing_anew(q)
        assert again is not None and again.id == task_id


async def test_a_hold_naming_anything_but_its_settle_is_dropped(clock):
    """A hold is kept only while the lease it names is a settle record writing the held name:
    one naming itself (or a plain lease, or garbage) would pin the task for good."""
    backend = _backend(SimulatedBucket("s3", seed=1), visibility_timeout=30)
    async with backend:
        q, store = backend.task_queue, backend.objects
        task_id = await q.enqueue(Task(func="f"))
        [name] = await store.list("tasks/default/pending")
        hold = {"token": "x", "expires_ms": utcnow_ms() + 1000, "held_for": f"default/{name}"}
        await store.put(f"tasks/default/running/{name}", json.dumps(hold).encode())
        assert await _listing_anew(q) is None  # held
        clock.advance(1)
        await q._sweep_expired(full=True)
        again = await _listing_anew(q)
        assert again is not None and again.id == task_id


async def test_requeue_expired_reads_every_lease_whoever_holds_the_turn(clock):
    """An explicit ``requeue_expired`` (a burst worker's start, the tools) reaps whatever the
    turn says: a consumer that held the turn and lost it to another still re-queues every
    expired lease (it used to stop at the first renewal it could not make, having read none)."""
    bucket = SimulatedBucket("s3", seed=1)
    a, b = _backend(bucket, reap_interval=10), _backend(bucket, reap_interval=10)
    async with a, b:
        ta, tb = _on(clock, a, b)
        qa = a.task_queue
        for n in range(20):
            await qa.enqueue(Task(func=f"t{n}"))
        held = [await qa.dequeue("default", visibility_timeout=30) for _ in range(20)]
        assert all(held)
        assert await ta.take()
        assert not await tb.take()  # first sight
        clock.advance(40)  # a's turn lapses (not renewed); every lease has expired
        tb.learn_lease(30)  # b grants leases as long: a has no demand to take the turn back
        assert await tb.take()
        assert ta.held and ta.renewal_due()  # a still thinks it holds the turn
        recovered = await qa.requeue_expired()
        assert sorted(t.id for t in recovered) == sorted(t.id for t in held)


async def test_a_starting_worker_reads_only_the_leases_that_missed_a_renewal(clock):
    """``reap_at_start`` (a long-running worker's start, beside its claims) reads only leases
    unwritten for half the lease, holds no turn, and re-queues the expired ones."""
    bucket = SimulatedBucket("s3", seed=1)
    a, b = _backend(bucket, visibility_timeout=30), _backend(bucket, visibility_timeout=30)
    async with a, b:
        qa, qb = a.task_queue, b.task_queue
        await qa.enqueue(Task(func="live"))
        await qa.enqueue(Task(func="dead"))
        first, second = await qa.dequeue("default"), await qa.dequeue("default")
        assert first is not None and second is not None
        live, dead = (first, second) if first.func == "live" else (second, first)
        clock.advance(25)
        live = await qa.renew_lease(live)
        clock.advance(10)  # the dead lease expired at 30 s; the live one was renewed at 25 s
        await qb.reap_at_start()
        assert qb.reap_stats == {"skipped": 1, "read": 1}, qb.reap_stats
        assert not qb.reaper_turn.held
        assert (await qb.get_task(dead.id)).status is TaskStatus.PENDING
        assert (await qb.get_task(live.id)).status is TaskStatus.RUNNING
        assert (await qa.finish_task(live)).status is TaskStatus.COMPLETED


async def test_a_failed_lease_listing_is_not_left_unretrieved(clock, caplog):
    """The refresh of a long queue lists ``running/`` beside ``pending/``: when both fail,
    the pending error is raised and the other is retrieved (asyncio would log "exception was
    never retrieved")."""
    import asyncio
    import gc

    backend = _backend(SimulatedBucket("s3", seed=1))
    async with backend:
        q = backend.task_queue
        await q.enqueue(Task(func="t"))
        objects = q._objects

        async def failing_list(path, *args, **kwargs):
            raise StorageError(f"listing {path} failed")

        def failing_pages(path, *args, **kwargs):
            async def pages():
                await asyncio.sleep(0)  # the running/ listing fails first
                raise StorageError(f"listing {path} failed")
                yield []

            return pages()

        objects.list = failing_list
        objects.list_pages = failing_pages
        with caplog.at_level("ERROR", logger="asyncio"):
            for _ in range(3):
                with pytest.raises(StorageError, match="pending"):
                    await q._fresh_index("default")
            await asyncio.sleep(0)
            gc.collect()
            await asyncio.sleep(0)
        assert "never retrieved" not in caplog.text
