"""Run claims, on every backend: racing schedulers enqueue each run once, and a scheduler that
dies between winning a run and finishing it loses nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from omniq import AsyncOmniQ
from omniq.models.schedule import Schedule, ScheduleType
from omniq.scheduler import Scheduler

T0 = datetime(2026, 6, 1, 6, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def every_second(**kw) -> Schedule:
    return Schedule(
        schedule_type=ScheduleType.INTERVAL, func="tick", interval=1, max_instances=None,
        created_at=T0, **kw,
    )  # fmt: skip


async def test_claim_run_one_winner_then_takeover_when_stale(backend):
    store = backend.schedule_storage
    run = T0 + timedelta(seconds=1)
    claims = await asyncio.gather(
        *(store.claim_run("s1", run, owner=f"o{i}", now=T0, stale_after=60) for i in range(3))
    )
    assert sorted(claims, key=str) == [0, None, None]
    later = T0 + timedelta(seconds=59)
    assert await store.claim_run("s1", run, owner="o9", now=later, stale_after=60) is None
    stale = T0 + timedelta(seconds=61)
    takeovers = await asyncio.gather(
        *(store.claim_run("s1", run, owner=f"t{i}", now=stale, stale_after=60) for i in range(3))
    )
    assert sorted(takeovers, key=str) == [1, None, None]
    assert await store.claim_run("s1", run + timedelta(seconds=1), owner="o", now=T0,
                                 stale_after=60) == 0  # fmt: skip
    # Files keep a claim object per generation (2 here), SQLite one row per run.
    assert await store.forget_runs("s1", before=run + timedelta(seconds=1)) in (1, 2)
    assert await store.forget_runs("s1", before=run + timedelta(seconds=1)) == 0


async def test_three_schedulers_racing_enqueue_each_run_once(backend):
    schedule = every_second()
    once = Schedule(
        schedule_type=ScheduleType.ONCE, func="once", run_at=T0 + timedelta(seconds=2), id="once"
    )
    for s in (schedule, once):
        await backend.schedule_storage.save_schedule(s)
    clock = Clock(T0)
    schedulers = [Scheduler(backend, clock=clock, owner=f"s{i}") for i in range(3)]
    fired = []
    for _ in range(4):
        clock.now += timedelta(seconds=1)
        fired.append(sum(await asyncio.gather(*(s.tick() for s in schedulers))))
    assert fired == [1, 2, 1, 1]
    tasks = await backend.task_queue.list_tasks(status="pending")
    runs = sorted(t.metadata["scheduled_for"] for t in tasks if t.func == "tick")
    assert runs == [(T0 + timedelta(seconds=k)).isoformat() for k in range(1, 5)]
    assert [t.id for t in tasks if t.func == "once"] == [once.task_id_for(once.run_at)]
    assert (await backend.schedule_storage.get_schedule("once")).status.value == "completed"
    stored = await backend.schedule_storage.get_schedule(schedule.id)
    assert stored.run_count == 4 and stored.next_run_at == T0 + timedelta(seconds=5)


class Killed(Exception):
    """Stands for the death of the process at this point."""


async def die_after_claiming(backend, schedule: Schedule, monkeypatch, dies_before: str) -> list:
    """A scheduler wins the first run of ``schedule`` and dies before ``dies_before``; another
    takes the run over once the claim is stale. The tasks then pending."""
    app = AsyncOmniQ(backend)
    await backend.schedule_storage.save_schedule(schedule)
    clock = Clock(T0 + timedelta(seconds=1))
    doomed = Scheduler(backend, clock=clock, owner="doomed")
    target = backend.task_queue if dies_before == "enqueue" else backend.schedule_storage
    real = getattr(target, dies_before)

    async def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(target, dies_before, die)
    with pytest.raises(Killed):
        await doomed.tick()
    monkeypatch.setattr(target, dies_before, real)
    survivor = app.scheduler(clock=clock, owner="survivor", stale_after=60)
    assert await survivor.tick() == 0  # the doomed one holds the run for now
    clock.now += timedelta(seconds=61)  # its claim is stale; survivor's refresh is due too
    await survivor.tick()
    return await backend.task_queue.list_tasks(status="pending")


@pytest.mark.parametrize("dies_before", ["enqueue", "record_run"])
async def test_a_scheduler_dying_after_winning_a_run_does_not_lose_or_double_it(
    backend, monkeypatch, dies_before
):
    schedule = every_second()
    tasks = await die_after_claiming(backend, schedule, monkeypatch, dies_before)
    # Once, whether or not the doomed scheduler got as far as enqueuing it; the runs missed
    # meanwhile collapse into it (misfire="once").
    assert [t.metadata["scheduled_for"] for t in tasks] == [(T0 + timedelta(seconds=1)).isoformat()]
    assert (await backend.schedule_storage.get_schedule(schedule.id)).run_count == 1


@pytest.mark.parametrize("backend_kind", ["memory"])  # the policy, not the store, is tested
async def test_a_taken_over_run_is_not_a_missed_one(backend, monkeypatch):
    tasks = await die_after_claiming(backend, every_second(misfire="skip"), monkeypatch, "enqueue")
    runs = [t.metadata["scheduled_for"] for t in tasks]
    assert runs.count((T0 + timedelta(seconds=1)).isoformat()) == 1  # fired despite "skip"
    assert len(set(runs)) == len(runs)  # and the runs within the grace once each


async def test_a_pause_or_delete_during_a_run_is_not_undone_by_its_record(backend):
    store = backend.schedule_storage
    for change in ("pause", "delete"):
        schedule = every_second(id=f"s-{change}")
        await store.save_schedule(schedule)
        run = schedule.next_run_at
        assert await store.claim_run(schedule.id, run, owner="o", now=T0, stale_after=60) == 0
        advanced = schedule.advance(run)
        if change == "pause":
            assert await store.pause_schedule(schedule.id)
        else:
            assert await store.delete_schedule(schedule.id)
        assert await store.record_run(advanced, run) is False
        stored = await store.get_schedule(schedule.id)
        assert (stored.status.value if stored else None) == (
            "paused" if change == "pause" else None
        )
    unchanged = every_second(id="s-live")
    await store.save_schedule(unchanged)
    run = unchanged.next_run_at
    await store.claim_run(unchanged.id, run, owner="o", now=T0, stale_after=60)
    assert await store.record_run(unchanged.advance(run), run) is True
    assert (await store.get_schedule(unchanged.id)).run_count == 1
