"""Sharded queues (omniq.storage.file.shards): one queue over several prefixes.

Every behaviour that could break is checked on the rename stores (local, memory), on the lease
stores through the simulated bucket (instant, the test's clock), and the whole path once on a
real S3 server (moto)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.scale_sim import SimBackend

from conftest import backend_param
from omniq.exceptions import LeaseLostError, StorageError, ValidationError
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
    cloud = backend_kind in ("s3", "gcs", "azure")
    emulator = emulator_for(backend_kind, tmp_path_factory) if cloud else None
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


@pytest.mark.parametrize("backend_kind", ["local", "memory", "sim", "s3", "gcs", "azure"],
                         indirect=True)  # fmt: skip
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
        assert (stats.pending, stats.shards) == (24, 4)

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


async def test_a_corrupt_count_is_reported_and_strands_no_task(backend_factory):
    """An unreadable count is reported (once per process) and left in place: every process
    uses the shard folders found instead, until the count is written again."""
    async with backend_factory() as backend:
        q = backend.task_queue
        await q.set_shards("default", 4)
        ids = {await q.enqueue(Task(func="f")) for _ in range(24)}
        await backend.objects.put("tasks/default/shards.json", b"{not json")
    for _ in range(2):  # two processes: both claim from every shard
        async with backend_factory() as backend:
            q = backend.task_queue
            assert await q.get_shards("default") == 4
            events = await backend.get_event_storage().get_events(event_type=EventType.CORRUPTED)
            assert any("shards.json" in e.message for e in events)
    async with backend_factory() as backend:
        q = backend.task_queue
        assert {t.id for t in await _drain(q)} == ids
        assert await q.set_shards("default", 4) == 4  # the operator writes the count again
        assert await backend.objects.get("tasks/default/shards.json") == b'{"shards":4}'


async def test_empty_shards_keep_their_folders(backend_factory, monkeypatch):
    """Raising the count makes each new shard's folder (a marker object), so with the count
    unreadable the folders found are exact even for shards that hold no task: a process that
    still has the old count cached enqueues there, and consumers claim from there."""
    async with backend_factory() as producer, backend_factory() as consumer:
        await producer.task_queue.set_shards("default", 8)  # cached by the producer
        await producer.objects.put("tasks/default/shards.json", b"8 shards")
        ids = {await producer.task_queue.enqueue(Task(func="f")) for _ in range(40)}
        assert await consumer.task_queue.get_shards("default") == 8
        assert {t.id for t in await _drain(consumer.task_queue)} == ids


async def test_the_reaper_finds_a_shard_the_count_no_longer_names(backend_factory, clock):
    """A count removed by hand hides no shard from the reaper and the look-ups, and the
    reaper's sweep raises it back to the shard folders it found, so claims see them too."""
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
        assert await q.get_shards("default") == 4
    async with backend_factory() as backend:
        assert {t.id for t in await _drain(backend.task_queue)} == set(ids)


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


@pytest.mark.parametrize("shape", ["directory", "symlink", "stray shard file"])
async def test_a_hostile_count_or_shard_name_stops_no_worker(tmp_path, clock, shape):
    """A directory or a link in place of shards.json, or a file named like a shard folder, on
    local disk: claims and the reaper go on, for that queue and the others."""
    from omniq.backend.file import FileBackend

    def local(**kw):
        return FileBackend(base_dir=str(tmp_path / "d"), fs_protocol="file", **kw)

    async with local(visibility_timeout=30) as backend:
        q = backend.task_queue
        await q.set_shards("aaa", 2)
        waiting = {await q.enqueue(Task(func="f", queue_name="aaa")) for _ in range(6)}
        held = await q.enqueue(Task(func="f", queue_name="bbb"))
        assert (await q.dequeue("bbb")).id == held  # and its worker dies
    queue_dir = tmp_path / "d" / "tasks" / "aaa"
    if shape == "directory":
        (queue_dir / "shards.json").unlink()
        (queue_dir / "shards.json").mkdir()
    elif shape == "symlink":
        (queue_dir / "shards.json").unlink()
        (tmp_path / "elsewhere.json").write_text('{"shards": 9}')
        (queue_dir / "shards.json").symlink_to(tmp_path / "elsewhere.json")
    else:
        (queue_dir / "s05").write_text("stray")
    clock.advance(31)
    async with local(visibility_timeout=30) as backend:
        q = backend.task_queue
        assert [t.id for t in await q.requeue_expired()] == [held]
        got = set()
        while (task := await q.dequeue(["aaa", "bbb"])) is not None:
            got.add(task.id)
        assert got == waiting | {held}


async def test_two_raises_at_once_keep_the_larger(backend_factory, backend_kind, monkeypatch):
    """Both read the count before either writes: with compare-and-swap the second writer
    reads again, so the smaller raise is refused (it would lower the count) or lands first.
    A local directory has no compare-and-swap (documented): the smaller may land last there,
    and the reaper's sweep raises the count back to the shard folders the larger made."""
    read = ShardCounts._read
    both_read = asyncio.Event()
    reads = 0

    async def read_together(self, queue):
        nonlocal reads
        found = await read(self, queue)
        reads += 1
        if reads == 2:
            both_read.set()
        await both_read.wait()
        return found

    async with backend_factory() as one, backend_factory() as other:
        monkeypatch.setattr(ShardCounts, "_read", read_together)
        small = asyncio.create_task(other.task_queue.set_shards("default", 2))
        big = asyncio.create_task(one.task_queue.set_shards("default", 8))
        results = await asyncio.gather(small, big, return_exceptions=True)
        monkeypatch.setattr(ShardCounts, "_read", read)
    async with backend_factory() as fresh:
        if backend_kind == "local":
            assert results == [1, 1]  # both wrote; the last one stays
            await fresh.task_queue.requeue_expired()  # a reaper's sweep
        else:
            assert isinstance(results[0], ValidationError) or results[0] == 1, results
            assert results[1] in (1, 2), results
        assert await fresh.task_queue.get_shards("default") == 8


async def test_look_ups_find_a_shard_the_count_no_longer_names(backend_factory):
    """A fresh process (a dashboard, the CLI) finds tasks in shard folders beyond the stored
    count: look-ups list the queue's folders."""
    async with backend_factory() as backend:
        await backend.task_queue.set_shards("default", 4)
        ids = [await backend.task_queue.enqueue(Task(func="f")) for _ in range(12)]
        await backend.objects.delete("tasks/default/shards.json")
    async with backend_factory() as backend:
        q = backend.task_queue
        far = next(i for i in ids if shard_of(i, 4) != 0)
        assert (await q.get_task(far)).status is TaskStatus.PENDING
        assert await q.get_queue_size("default") == 12
        assert await q.cancel_task(far)


async def test_a_retried_dead_letter_goes_back_to_its_home_shard(backend_factory):
    async with backend_factory() as backend:
        q = backend.task_queue
        _, tasks = await _leased(q, 12)
        for task in tasks:
            failed = await q.finish_task(task, TaskStatus.FAILED, "boom")
            failed.status = TaskStatus.PENDING
            await q.update_task(failed)
        for where, names in (await _pending_by_location(backend)).items():
            assert {location("default", shard_of(task_id_of(n), 4)) for n in names} == {where}
        assert len(await _drain(q)) == 12


async def test_a_task_back_in_pending_rings_the_doorbell(clock):
    """Recovered by a reaper: idle consumers elsewhere learn of it by the doorbell (their idle
    listings visit one shard a wake)."""
    bucket = SimulatedBucket("s3", seed=1)
    async with SimBackend(SimulatedObjectStore(bucket, instant=True)) as backend:
        q = backend.task_queue
        await _leased(q, 4)
        clock.advance(60)
        rung = [p for p in bucket.paths() if "/doorbell/" in p]
        assert len(await q.requeue_expired()) == 4
        assert len([p for p in bucket.paths() if "/doorbell/" in p]) == len(rung) + 1


@contextlib.asynccontextmanager
async def _resting_consumer() -> AsyncIterator[tuple[SimBackend, SimBackend]]:
    """A producer and a consumer of a queue sharded 4 ways on one simulated bucket, the
    consumer idle (a round of empty listings, then a rest) and no reaper in the way."""
    bucket = SimulatedBucket("s3", seed=1)
    async with (
        SimBackend(SimulatedObjectStore(bucket, instant=True)) as producer,
        SimBackend(SimulatedObjectStore(bucket, instant=True)) as consumer,
    ):
        producer.task_queue._maybe_reap = _nothing
        consumer.task_queue._maybe_reap = _nothing
        await producer.task_queue.set_shards("default", 4)
        for _ in range(3):
            assert await consumer.task_queue.dequeue("default") is None
        yield producer, consumer


def _ring_once(q) -> None:
    """The consumer's doorbell is heard once (as a second's marker read after a ring)."""
    heard = iter([True])

    async def one_ring(queue: str) -> bool:
        return next(heard, False)

    q.doorbell.heard = one_ring


async def _nothing() -> None:
    return None


async def test_a_ring_wakes_an_idle_consumer_for_every_shard(clock):
    """After a ring an idle consumer claims the tasks of every shard, not one shard's share
    and then a rest (its idle back-off is over once it hears the ring or claims)."""
    async with _resting_consumer() as (producer, consumer):
        ids = {await producer.task_queue.enqueue(Task(func="f")) for _ in range(16)}
        _ring_once(consumer.task_queue)
        got = [await consumer.task_queue.dequeue("default") for _ in ids]
        assert {t.id for t in got if t is not None} == ids


async def test_a_ring_costs_an_idle_consumer_one_listing_per_empty_shard(clock):
    """Woken by a ring for a task another consumer already took, an idle consumer lists each
    shard's pending/ once (one request: empty) and not running/ (two requests a shard before)."""
    async with _resting_consumer() as (producer, consumer):
        await producer.task_queue.enqueue(Task(func="f"))
        taken = await producer.task_queue.dequeue("default")
        await producer.task_queue.finish_task(taken)
        q = consumer.task_queue
        _ring_once(q)
        before = q._objects.requests["list"]
        assert await q.dequeue("default") is None
        assert q._objects.requests["list"] - before == 4


async def test_cancel_and_update_find_a_task_in_a_shard_made_elsewhere(backend_factory):
    """A process that looked at the queue before another raised its count (its count and
    folder listing cached for 30 s) still cancels and updates a task in a new shard: a look-up
    that finds nothing lists the folders again."""
    async with backend_factory() as web, backend_factory() as admin:
        await web.task_queue.enqueue(Task(func="f"))
        assert await web.task_queue.get_queue_size("default") == 1  # cached: one shard
        await admin.task_queue.set_shards("default", 4)
        far = next(t for t in (Task(func="f") for _ in range(100)) if shard_of(t.id, 4))
        await admin.task_queue.enqueue(far)
        found = await web.task_queue.get_task(far.id)
        found.priority = 3
        await web.task_queue.update_task(found)
        assert await web.task_queue.cancel_task(far.id)


async def test_a_stray_named_like_a_shard_does_not_raise_the_count(backend_factory):
    """Only folders holding the marker ``set`` writes count: a stray object under ``s63/``
    (or named ``s05``) is swept and searched, never counted — the count cannot be lowered, and
    every idle consumer would list 64 shards a ring from then on."""
    async with backend_factory() as backend:
        q = backend.task_queue
        await q.set_shards("default", 4)
        await backend.objects.put("tasks/default/s63/junk", b"stray")
        await backend.objects.put("tasks/default/s05", b"stray")
        await q.requeue_expired()  # the sweep that raises a lowered count back
        assert await q.get_shards("default") == 4
        await backend.objects.put("tasks/default/shards.json", b"not a count")
    async with backend_factory() as backend:
        assert await backend.task_queue.get_shards("default") == 4  # the marked folders


async def test_an_odd_queue_folder_stops_no_other_queues_reaping(tmp_path, clock):
    """Local disk: queue ``aa`` has a file ``s01`` and a folder ``s02/`` (no count can be
    raised over them); an expired lease of queue ``zz`` is still recovered."""
    from omniq.backend.file import FileBackend

    base = tmp_path / "d"
    async with FileBackend(base_dir=str(base), fs_protocol="file") as backend:
        q = backend.task_queue
        await q.enqueue(Task(func="f", queue_name="zz"))
        held = await q.dequeue("zz", visibility_timeout=5)
        (base / "tasks" / "aa" / "s02").mkdir(parents=True)
        (base / "tasks" / "aa" / "s02" / "shard").write_text("")
        (base / "tasks" / "aa" / "s01").write_text("stray")
        clock.advance(60)
        assert [t.id for t in await q.requeue_expired()] == [held.id]


async def test_something_else_in_the_counts_place_is_an_error_not_a_hang():
    """memory://: an object below ``shards.json/`` makes the count read as absent and its
    create as existing; ``set`` gives up with a StorageError instead of looping."""
    from omniq.backend.file import FileBackend

    async with FileBackend.from_url(f"memory://shards-{uuid.uuid4().hex}") as backend:
        await backend.objects.put("tasks/q/shards.json/x", b"stray")
        with pytest.raises(StorageError, match="not an object"):
            await asyncio.wait_for(backend.task_queue.set_shards("q", 2), 10)


async def test_one_backend_on_two_event_loops(tmp_path, monkeypatch):
    """The blocking view (the sync wrapper's loop, in its thread) and this loop share one
    backend: each loop has its own read of the count in flight (a future belongs to one)."""
    from omniq.backend.file import FileBackend

    read = ShardCounts._read

    async def slow_read(self, queue):  # a bucket round trip, on local disk
        await asyncio.sleep(0.01)
        return await read(self, queue)

    monkeypatch.setattr(ShardCounts, "_read", slow_read)
    monkeypatch.setattr(ShardCounts, "TTL", 0.0)  # every call reads (as every 30 s)
    async with FileBackend(base_dir=str(tmp_path / "d"), fs_protocol="file") as backend:
        blocking = backend.get_task_queue(async_mode=False)

        def from_thread() -> None:
            for i in range(40):
                blocking.enqueue(Task(func="thread", args=(i,)))

        thread = asyncio.get_running_loop().run_in_executor(None, from_thread)
        for i in range(40):
            await backend.task_queue.enqueue(Task(func="loop", args=(i,)))
        await thread
        assert await backend.task_queue.get_queue_size() == 80


async def test_a_read_that_started_before_a_raise_does_not_undo_it(backend_factory, monkeypatch):
    """A read of the count still in flight when this process raises it finishes later with
    the old value: the raise stays what this process uses."""
    read = ShardCounts._read
    first = asyncio.Event()
    calls = 0

    async def first_read_waits(self, queue):
        nonlocal calls
        calls += 1
        found = await read(self, queue)
        if calls == 1:
            await first.wait()
        return found

    monkeypatch.setattr(ShardCounts, "_read", first_read_waits)
    async with backend_factory() as backend:
        q = backend.task_queue
        early = asyncio.create_task(q.get_shards("default"))
        while calls == 0:  # the early read has started
            await asyncio.sleep(0)
        await q.set_shards("default", 4)
        first.set()
        assert await early in (1, 4)
        assert await q.get_shards("default") == 4
