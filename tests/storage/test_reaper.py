"""The bucket reaper's costs: which lease objects a sweep reads, and who holds the reaper turn.

Run on a simulated bucket whose clock is OmniQ's (the ``clock`` fixture), so that object write
times and lease expiries move together and nothing depends on this machine's speed. The drivers'
write times (what the simulation stands in for) are checked against the real emulators in
``test_objects.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.scale_sim import SimBackend

from omniq.models.task import Task, TaskStatus
from omniq.storage.file.simulated import SimulatedBucket, SimulatedObjectStore

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


async def test_the_reaper_turn_stays_with_its_holder_until_it_lapses(clock):
    """The holder renews the turn by compare-and-swap (two reap intervals at a time) without
    reading it; the others do not read it before it could have lapsed, and take it over then."""
    bucket = SimulatedBucket("s3", seed=1)
    a, b = _backend(bucket, reap_interval=10), _backend(bucket, reap_interval=10)
    async with a, b:
        qa, qb = a.task_queue, b.task_queue
        assert await qa._reaper_turn()
        assert not await qb._reaper_turn()
        reads = bucket.requests["get"]
        clock.advance(10)
        assert await qa._reaper_turn()  # renewed
        assert not await qb._reaper_turn()  # held until 30 s; b knew it until 20 s
        assert bucket.requests["get"] == reads  # neither read the turn
        clock.advance(25)  # the holder stopped renewing: its term lapsed at 30 s
        assert await qb._reaper_turn()
        assert not await qa._reaper_turn()  # its renewal fails: b holds the turn now
        clock.advance(10)
        assert not await qa._reaper_turn()
        assert await qb._reaper_turn()
