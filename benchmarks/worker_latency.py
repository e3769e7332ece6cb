"""No-op tasks end to end through a worker: throughput and enqueue->start latency per kind.

    python benchmarks/worker_latency.py [--tasks 2000] [--latency-samples 200]

Throughput: N tasks enqueued up front, then a burst worker (concurrency 4) drains them.
Latency: an idle worker is running; one task at a time is enqueued and its start time (taken
inside the task) is compared with its creation time. Prints a markdown table and writes JSON to
benchmarks/results/worker_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or -m

from benchmarks import bench_tasks
from omniq import AsyncOmniQ

RESULTS = Path(__file__).parent / "results"


def make_app(base: str) -> AsyncOmniQ:
    app = AsyncOmniQ(base)
    app.task(name="noop")(bench_tasks.started_at)
    app.task(name="noop_async")(bench_tasks.started_at_async)
    return app


async def throughput(base: str, kind: str, n: int) -> float:
    app = make_app(base)
    name = "noop_async" if kind == "async" else "noop"
    for _ in range(n):
        await app.enqueue(name)
    t0 = time.perf_counter()
    stats = await app.run_worker(kind=kind, concurrency=4, burst=True)
    elapsed = time.perf_counter() - t0
    assert stats.completed == n, stats
    return n / elapsed


async def latency(base: str, kind: str, samples: int) -> list[float]:
    app = make_app(base)
    name = "noop_async" if kind == "async" else "noop"
    worker = app.worker(kind=kind, concurrency=4)
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)  # let it go idle (and start its process pool)
    out = []
    for _ in range(samples):
        handle = await app.enqueue(name)
        task = await app.backend.task_queue.get_task(handle.id)
        started = await handle.result(timeout=30)
        out.append((started - task.created_at.timestamp()) * 1000)
        await asyncio.sleep(0.02)
    worker.stop()
    await runner
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="omniq-worker-bench-")
    report: dict[str, Any] = {"cpus": os.cpu_count(), "kinds": {}}
    try:
        for kind in ("thread", "async", "process"):
            n = args.tasks if kind != "process" else max(100, args.tasks // 4)
            rate = asyncio.run(throughput(os.path.join(tmp, f"tp-{kind}"), kind, n))
            lat = asyncio.run(latency(os.path.join(tmp, f"lat-{kind}"), kind, args.latency_samples))
            q = statistics.quantiles(lat, n=100)
            report["kinds"][kind] = {
                "tasks": n, "tasks_per_s": rate, "latency_ms_p50": statistics.median(lat),
                "latency_ms_p99": q[98], "samples": len(lat),
            }  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| worker kind | tasks | throughput (tasks/s) | enqueue→start p50 | p99 |")
    print("|---|---|---|---|---|")
    for kind, r in report["kinds"].items():
        print(
            f"| {kind} | {r['tasks']} | {r['tasks_per_s']:,.0f} | {r['latency_ms_p50']:.1f} ms"
            f" | {r['latency_ms_p99']:.1f} ms |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worker_latency.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
