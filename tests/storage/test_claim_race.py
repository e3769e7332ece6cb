"""Invariant 1 and 2 across processes: each task claimed exactly once, none lost."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from pathlib import Path

import pytest

from omniq.backend.file import FileBackend
from omniq.models.task import Task

N_TASKS = 2000
N_PROCS = 4


def _consume(base_dir: str, start, out) -> None:
    async def run() -> list[str]:
        backend = FileBackend(base_dir=base_dir, listing_ttl=0.2)
        async with backend:
            q = backend.get_task_queue()
            start.wait()
            ids = []
            while (task := await q.dequeue(["default"])) is not None:
                await q.finish_task(task)
                ids.append(task.id)
            return ids

    out.put(asyncio.run(run()))


@pytest.mark.slow
def test_four_processes_claim_each_task_exactly_once(tmp_path: Path) -> None:
    base = str(tmp_path / "race")

    async def fill() -> list[str]:
        async with FileBackend(base_dir=base) as backend:
            q = backend.get_task_queue()
            return [await q.enqueue(Task(func="f", args=(i,))) for i in range(N_TASKS)]

    enqueued = asyncio.run(fill())
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_consume, args=(base, start, out)) for _ in range(N_PROCS)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert sorted(claimed) == sorted(enqueued), "a task was lost"
    assert sum(1 for r in results if r) >= 2, "the race never happened: one process took all"

    async def check() -> None:
        async with FileBackend(base_dir=base) as backend:
            objects = backend.objects
            assert await objects.list("tasks/default/pending") == []
            assert await objects.list("tasks/default/running") == []
            assert len(await objects.list("tasks/default/completed")) == N_TASKS

    asyncio.run(check())
