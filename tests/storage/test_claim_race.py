"""Invariants 1 and 2 across processes: each task claimed exactly once, none lost.

Local disk (claims by rename), one SQLite file (claims by UPDATE under the write lock; a
"database is locked" would fail a consumer), and S3 (claims by conditional create of a lease
object): the moto server (which serializes its PUT handling, see tests/emulators.py),
SeaweedFS, and moto behind a proxy that answers as Ceph RGW does — with its ``If-Match`` on
DELETE ignored, and once more with the store trusting those deletes ("rgw-blind-delete"), so
that every lease delete is unconditional: the protocol's safety never rests on a conditional
delete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest

from omniq.backend.base import Backend
from omniq.backend.file import FileBackend
from omniq.backend.sqlite import SQLiteBackend
from omniq.models.task import Task

N_PROCS = 4


def _backend(spec: dict[str, Any], **settings: Any) -> Backend:
    if spec["url"].startswith("sqlite://"):
        return SQLiteBackend.from_url(spec["url"])  # listing_ttl is a file-store setting
    if spec["url"].startswith("s3://"):
        return FileBackend.from_url(spec["url"], fs_kwargs=spec["options"], **settings)
    return FileBackend(base_dir=spec["url"], **settings)


def _consume(spec: dict[str, Any], start, out) -> None:
    async def run() -> list[str]:
        backend = _backend(spec, listing_ttl=0.2)
        async with backend:
            if spec.get("blind_delete"):  # send If-Match on DELETE to a server that drops it
                caps = backend.objects.capabilities
                assert not caps.conditional_delete, "the probe missed the ignored condition"
                backend.objects.capabilities = dataclasses.replace(caps, conditional_delete=True)
            q = backend.get_task_queue()
            start.wait()
            ids = []
            while (task := await q.dequeue(["default"])) is not None:
                await q.finish_task(task)
                ids.append(task.id)
            return ids

    out.put(asyncio.run(run()))


def _race(spec: dict[str, Any], n_tasks: int) -> None:
    async def fill() -> list[str]:
        async with _backend(spec) as backend:
            q = backend.get_task_queue()
            return [await q.enqueue(Task(func="f", args=(i,))) for i in range(n_tasks)]

    enqueued = asyncio.run(fill())
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_consume, args=(spec, start, out)) for _ in range(N_PROCS)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert sorted(claimed) == sorted(enqueued), "a task was lost"
    assert sum(1 for r in results if r) >= 2, "the race never happened: one process took all"

    async def check() -> None:
        async with _backend(spec) as backend:
            if isinstance(backend, SQLiteBackend):
                [stats] = await backend.task_queue.queue_stats()
                assert (stats.pending, stats.running, stats.completed) == (0, 0, n_tasks)
                return
            objects = backend.objects
            assert await objects.list("tasks/default/pending") == []
            assert await objects.list("tasks/default/running") == []
            assert len(await objects.list("tasks/default/completed")) == n_tasks

    asyncio.run(check())


@pytest.mark.slow
def test_four_processes_claim_each_task_exactly_once(tmp_path: Path) -> None:
    _race({"url": str(tmp_path / "race")}, 2000)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("s3_kind", "n_tasks", "blind_delete"),
    [("moto", 150, False), ("seaweedfs", 120, False), ("rgw", 60, False), ("rgw", 60, True)],
    ids=["moto", "seaweedfs", "rgw", "rgw-blind-delete"],
)
def test_four_processes_on_one_s3_bucket_claim_each_task_exactly_once(
    s3_target, n_tasks, blind_delete
) -> None:
    spec = {"url": s3_target.url(), "options": s3_target.options, "blind_delete": blind_delete}
    _race(spec, n_tasks)


@pytest.mark.slow
def test_four_processes_on_one_sqlite_file_claim_each_task_exactly_once(tmp_path: Path) -> None:
    _race({"url": f"sqlite:///{tmp_path / 'race.db'}"}, 2000)
