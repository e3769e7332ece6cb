"""Sharded queues (omniq.storage.file.shards): one queue over several prefixes.

Every behaviour that could break is checked on the rename stores (local, memory), on the lease
stores through the simulated bucket (instant, the test's clock), and the whole path once on a
real S3 server (moto)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.scale_sim import SimBackend

from conftest import backend_param
from omniq.exceptions import LeaseLostError, ValidationError
from omniq.models.event import EventType
from omniq.models.task import Task, TaskStatus
from omniq.storage.file.keys import task_id_of
from omniq.storage.file.shards import ShardCounts, location, queue_of, shard_of, split_lease_key
from omniq.storage.file.simulated import SimulatedBucket, SimulatedObjectStore

pytestmark = pytest.mark.file_layout("sharded folders are the file backend's layout")


@pytest.fixture(params=["local", "memory", "sim", "s3"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return backend_param(request)


@pytest.fixture
def backend_factory(backend_kind, tmp_path, tmp_path_factory):
    """Backends sharing one location (several processes' views of one queue)."""
    from conftest import emulator_for, make_backend

    if backend_kind == "sim":
        bucket = SimulatedBucket("s3", seed=1)
        return lambda **kw: SimBackend(SimulatedObjectStore(bucket, instant=True), **kw)
    if backend_kind == "memory":
        from omniq.backend.file import FileBackend

        url = f"memory://shards-{tmp_path.name}"
        return lambda **kw: FileBackend.from_url(url, **kw)
    emulator = emulator_for(backend_kind, tmp_path_factory) if backend_kind == "s3" else None
    url = emulator.url() if emulator is not None else None
    return lambda **kw: make_backend(backend_kind, tmp_path, emulator, url, **kw)


async def _pending_by_location(backend, queue: str = "default") -> dict[str, list[str]]:
    out = {}
    for shard in range(await backend.task_queue.get_shards(queue)):
        where = location(queue, shard)
        names = await backend.objects.list(f"tasks/{where}/pending")
        if names:
            out[where] = names
    return out


async def _drain(q, finish: bool = False) -> list[Task]:
    """Dequeue until nothing is due (finishing each task if ``finish``)."""
    out = []
    while (task := await q.dequeue("default")) is not None:
        out.append(task)
        if finish:
            await q.finish_task(task)
    return out


async def _leased(q, count: int) -> tuple[list[str], list[Task]]:
    """Shard the queue 4 ways, enqueue ``count`` tasks and dequeue them all."""
    await q.set_shards("default", 4)
    ids = [await q.enqueue(Task(func="f")) for _ in range(count)]
    return ids, [await q.dequeue("default") for _ in ids]


async def test_a_sharded_queue_spreads_its_tasks_and_delivers_each_once(backend_factory):
    async with backend_factory() as backend:
        q = backend.task_queue
        assert await q.get_shards("default") == 1
        assert await q.set_shards("default", 4) == 1
        ids = {await q.enqueue(Task(func="f", args=(i,))) for i in range(24)}
        placed = await _pending_by_location(backend)
        assert len(placed) >= 2, placed  # 24 random ids all in one of 4 shards: 4 ** -23
        for where, names in placed.items():  # each task in the shard its id hashes to
            assert {location("default", shard_of(task_id_of(n), 4)) for n in names} == {where}
        assert await q.get_queue_size("default") == 24
        assert len(await q.list_tasks("default", TaskStatus.PENDING)) == 24
        (stats,) = await q.queue_stats()
        assert stats.pending == 24

        delivered = []
        while (task := await q.dequeue("default")) is not None:
            delivered.append(task)
            assert task.lease is not None and task.lease.key is not None
            where, name = split_lease_key("default", task.lease.key)
            assert queue_of(where) == "default" and task.id in name
            running = await q.get_task(task.id)
            assert running is not None and running.status is TaskStatus.RUNNING
            assert running.lease is not None and running.lease.key == task.lease.key
        assert sorted(t.id for t in delivered) == sorted(ids)
        assert {split_lease_key("default", t.lease.key)[0] for t in delivered} == set(placed)
        for task in delivered:
            task = await q.renew_lease(task)
            await q.finish_task(task)
            assert (await q.get_task(task.id)).status is TaskStatus.COMPLETED
        assert await _pending_by_location(backend) == {}
        with pytest.raises(LeaseLostError):
            await q.finish_task(delivered[0])


async def test_raising_the_count_keeps_the_tasks_queued_before(backend_factory):
    async with backend_factory() as backend:
        q = backend.task_queue
        before = {await q.enqueue(Task(func="f")) for _ in range(5)}
        await q.set_shards("default", 3)
        after = {await q.enqueue(Task(func="f")) for _ in range(12)}
        assert await q.get_queue_size("default") == 17
        assert {t.id for t in await _drain(q, finish=True)} == before | after


async def test_the_count_is_checked_and_can_only_be_raised(backend_factory):
    async with backend_factory() as backend:
        q = backend.task_queue
        await q.set_shards("default", 4)
        with pytest.raises(ValidationError, match="raised, not lowered"):
            await q.set_shards("default", 2)
        for bad in (0, 65, "3", True, 2.0):
            with pytest.raises(ValidationError, match="1-64"):
                await q.set_shards("default", bad)
        for name in ("../x", "a/b", ""):
            with pytest.raises(ValidationError):
                await q.set_shards(name, 2)
            with pytest.raises(ValidationError):
                await q.get_shards(name)
        assert await q.set_shards("default", 4) == 4  # the same count: nothing changes
        assert await q.get_shards("default") == 4


async def test_other_processes_follow_a_raised_count(backend_factory, monkeypatch):
    async with backend_factory() as one, backend_factory() as other:
        assert await one.task_queue.get_shards("default") == 1  # read, and cached
        await other.task_queue.set_shards("default", 8)
        assert await one.task_queue.get_shards("default") == 1  # until the cache expires
        monkeypatch.setattr(ShardCounts, "TTL", 0.0)
        assert await one.task_queue.get_shards("default") == 8
        ids = {await one.task_queue.enqueue(Task(func="f")) for _ in range(16)}
        assert len(await _pending_by_location(other)) >= 2
        assert {t.id for t in await _drain(other.task_queue)} == ids


async def test_an_expired_lease_in_a_shard_is_recovered_there(backend_factory, clock):
    async with backend_factory(visibility_timeout=30) as backend:
        q = backend.task_queue
        ids, first = await _leased(q, 8)
        clock.advance(31)
        recovered = await q.requeue_expired()
        assert sorted(t.id for t in recovered) == sorted(ids)
        again = await _drain(q)
        assert sorted(t.id for t in again) == sorted(ids)
        assert all(t.attempts == 2 for t in again)
        where = {t.id: split_lease_key("default", t.lease.key)[0] for t in first}
        assert all(split_lease_key("default", t.lease.key)[0] == where[t.id] for t in again)


async def test_a_retry_with_a_delay_stays_in_its_shard(backend_factory, clock):
    async with backend_factory() as backend:
        q = backend.task_queue
        ids, tasks = await _leased(q, 8)
        where = {t.id: split_lease_key("default", t.lease.key)[0] for t in tasks}
        for task in tasks:
            await q.requeue_task(task, eta=clock.now + timedelta(seconds=10))
        assert await q.dequeue("default") is None  # not due yet
        for shard in range(4):  # no hold left behind
            leases = await backend.objects.list(f"tasks/{location('default', shard)}/running")
            assert leases == []
        clock.advance(11)
    async with backend_factory() as backend:  # another consumer: its listings are new
        again = await _drain(backend.task_queue)
        assert sorted(t.id for t in again) == sorted(ids)
        assert all(split_lease_key("default", t.lease.key)[0] == where[t.id] for t in again)


async def test_a_corrupt_count_is_set_aside_and_strands_no_task(backend_factory):
    async with backend_factory() as backend:
        q = backend.task_queue
        await q.set_shards("default", 4)
        ids = {await q.enqueue(Task(func="f")) for _ in range(24)}
        await backend.objects.put("tasks/default/shards.json", b"{not json")
    async with backend_factory() as backend:
        q = backend.task_queue
        assert {t.id for t in await _drain(q)} == ids
        assert await backend.objects.list("corrupt/tasks/default") == ["shards.json"]
        events = await backend.get_event_storage().get_events(event_type=EventType.CORRUPTED)
        assert len(events) == 1 and "shards.json" in events[0].message
        await q.set_shards("default", 4)  # the operator writes the count again
        assert await q.get_shards("default") == 4


async def test_the_reaper_finds_a_shard_the_count_no_longer_names(backend_factory, clock):
    """A count removed by hand hides shards from claims, not from the reaper and look-ups."""
    async with backend_factory(visibility_timeout=30) as backend:
        q = backend.task_queue
        ids, leased = await _leased(q, 16)
        far = [t for t in leased if split_lease_key("default", t.lease.key)[0] != "default"]
        assert far
    async with backend_factory(visibility_timeout=30) as backend:
        await backend.objects.delete("tasks/default/shards.json")
        q = backend.task_queue
        clock.advance(31)
        recovered = await q.requeue_expired()
        assert sorted(t.id for t in recovered) == sorted(ids)
        assert (await q.get_task(far[0].id)).status is TaskStatus.PENDING


def test_locations_and_lease_keys():
    assert location("q", 0) == "q" and location("q", 7) == "q/s07"
    assert queue_of("q/s07") == "q" and queue_of("q") == "q"
    assert split_lease_key("q", "00005-1-a.json") == ("q", "00005-1-a.json")
    assert split_lease_key("q", "s07/00005-1-a.json") == ("q/s07", "00005-1-a.json")
    for bad in ("s00/x.json", "s64/x.json", "../x.json", "pending/x.json", "s1/x.json"):
        with pytest.raises(ValueError):
            split_lease_key("q", bad)
    assert [shard_of("01ABC", 1), shard_of("01ABC", 1)] == [0, 0]
    assert {shard_of(f"id{i}", 8) for i in range(200)} == set(range(8))
