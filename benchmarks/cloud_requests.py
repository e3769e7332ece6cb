"""Requests per task and tasks/s on the local S3, GCS and Azure emulators.

    python benchmarks/cloud_requests.py [--tasks 200] [--only s3,gcs,azure]

Starts each emulator (tests/emulators.py: moto, fake-gcs-server, Azurite) on 127.0.0.1 and runs:

- ``queue``: the storage API alone — enqueue N tasks, then dequeue + finish_task them.
- ``worker``: the whole lifecycle through the app: enqueue (task + "enqueued" event), a burst
  worker (async, concurrency 4) claims, runs a no-op, writes the result and the batched
  started+completed events, and finishes.
- ``scaling``: claim + finish N tasks from queues of each ``--backlogs`` length, by a consumer
  that did not enqueue them (it must list): requests and time per task must not grow.

Requests are counted at the object-store seam (one per HTTP request, listing pages included),
divided by N. Rates are those of emulators on this machine (moto handles one conditional PUT at a
time here): compare requests, not seconds, with a real bucket. Prints a markdown table and writes
JSON to benchmarks/results/cloud_requests.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the emulator launchers the tests use

from emulators import STARTERS, Emulator  # noqa: E402
from omniq import AsyncOmniQ  # noqa: E402
from omniq.backend.file import FileBackend  # noqa: E402
from omniq.models.task import Task  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KINDS = ("put", "get", "delete", "list", "head")


def per_task(requests: Counter[str], n: int) -> dict[str, float]:
    out = {kind: requests.get(kind, 0) / n for kind in KINDS}
    out["total"] = sum(requests.values()) / n
    return out


async def queue_phase(emulator: Emulator, n: int) -> list[dict[str, Any]]:
    backend = FileBackend.from_url(emulator.url(), fs_kwargs=dict(emulator.options))
    async with backend:
        q, requests = backend.task_queue, backend.objects.requests
        requests.clear()
        t0 = time.perf_counter()
        for i in range(n):
            await q.enqueue(Task(func="f", args=(i,)))
        enqueue_s = time.perf_counter() - t0
        enqueued = Counter(requests)
        requests.clear()
        t0 = time.perf_counter()
        done = 0
        while (task := await q.dequeue("default")) is not None:
            await q.finish_task(task)
            done += 1
        drain_s = time.perf_counter() - t0
        assert done == n, (done, n)
        return [
            {"phase": "enqueue", "tasks_per_s": n / enqueue_s, **per_task(enqueued, n)},
            {"phase": "claim + finish", "tasks_per_s": n / drain_s, **per_task(requests, n)},
        ]


async def noop() -> None:
    return None


async def worker_phase(emulator: Emulator, n: int) -> list[dict[str, Any]]:
    backend = FileBackend.from_url(emulator.url(), fs_kwargs=dict(emulator.options))
    app = AsyncOmniQ(backend)
    app.task(name="noop")(noop)
    async with app:
        requests = backend.objects.requests
        requests.clear()
        for _ in range(n):
            await app.enqueue("noop")
        enqueued = Counter(requests)
        requests.clear()
        t0 = time.perf_counter()
        stats = await app.run_worker(kind="async", concurrency=4, burst=True)
        elapsed = time.perf_counter() - t0
        assert stats.completed == n, stats
        whole = enqueued + requests
        return [
            {"phase": "worker: run", "tasks_per_s": n / elapsed, **per_task(requests, n)},
            {"phase": "worker: whole lifecycle", "tasks_per_s": None, **per_task(whole, n)},
        ]


async def scaling_phase(emulator: Emulator, n: int, backlog: int) -> dict[str, Any]:
    """Claim + finish ``n`` tasks from a queue ``backlog`` long: the cost must not grow with it."""
    backend = FileBackend.from_url(emulator.url(), fs_kwargs=dict(emulator.options))
    async with backend:
        q, requests = backend.task_queue, backend.objects.requests
        for i in range(backlog):
            await q.enqueue(Task(func="f", args=(i,)))
    consumer = FileBackend.from_url(backend.url, fs_kwargs=dict(emulator.options))
    async with consumer:
        q, requests = consumer.task_queue, consumer.objects.requests
        requests.clear()
        t0 = time.perf_counter()
        for _ in range(n):
            task = await q.dequeue("default")
            assert task is not None
            await q.finish_task(task)
        elapsed = time.perf_counter() - t0
    return {"phase": f"claim + finish, {backlog:,} queued", "tasks_per_s": n / elapsed,
            **per_task(requests, n)}  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    head = "| store | phase | tasks/s | " + " | ".join(KINDS) + " | total requests/task |"
    lines = [head, "|" + "---|" * (len(KINDS) + 4)]
    for r in rows:
        rate = f"{r['tasks_per_s']:.0f}" if r["tasks_per_s"] else "—"
        cells = " | ".join(f"{r[k]:.2f}" for k in KINDS)
        lines.append(f"| {r['store']} | {r['phase']} | {rate} | {cells} | {r['total']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--only", default="s3,gcs,azure")
    parser.add_argument(
        "--backlogs",
        default="200,2000",
        help="queue lengths to claim --tasks from (dequeue must stay flat)",
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as logs:
        for kind in args.only.split(","):
            emulator = STARTERS[kind](Path(logs))
            try:
                found = asyncio.run(queue_phase(emulator, args.tasks))
                found += asyncio.run(worker_phase(emulator, args.tasks))
                for backlog in (int(b) for b in args.backlogs.split(",") if b):
                    found.append(asyncio.run(scaling_phase(emulator, args.tasks, backlog)))
                for row in found:
                    rows.append({"store": kind, **row})
                    print(f"{kind:6} {row['phase']:32} {row['total']:.2f} requests/task, "
                          f"{row['tasks_per_s'] or 0:.0f} tasks/s", file=sys.stderr)  # fmt: skip
            finally:
                emulator.stop()
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "cloud_requests.json"
    out.write_text(json.dumps({"tasks": args.tasks, "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
