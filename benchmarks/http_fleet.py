"""Worker processes on one real S3 server over HTTP (issue 14): requests and lost races per task.

    python benchmarks/http_fleet.py [--tasks 1000] [--procs 20] [--slots 2] [--seconds 0.2]
                                    [--shards 1]

Starts SeaweedFS on 127.0.0.1 (tests/emulators.py) behind the counting proxy of the tests
(tests/s3proxy.py: every request counted by kind and HTTP status), enqueues ``--tasks`` tasks
that sleep ``--seconds``, and runs ``--procs`` worker processes (async, ``--slots`` each, burst
mode) until the queue is drained. Checks that every task completed exactly once and counts,
per task: billable requests (PUT, GET, HEAD, LIST; DELETE is free on S3), failed conditional
creates (412 on a PUT), payload reads that found nothing (GET 404: phantom claims), HEADs
that found nothing (HEAD 404: lease looks before a claim, doorbell reads) and the queues' own
``claim_stats``. Takes about a minute; not part of the test suite. Writes JSON to
benchmarks/results/http_fleet.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the emulator launcher and proxy the tests use

from emulators import start_seaweedfs  # noqa: E402
from omniq import AsyncOmniQ  # noqa: E402
from omniq.backend.file import FileBackend  # noqa: E402
from omniq.models.task import TaskStatus  # noqa: E402
from omniq.worker import Worker  # noqa: E402
from s3proxy import S3Proxy  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BILLABLE = ("put", "get", "head", "list", "post")


def make_app(url: str, options: dict[str, Any]) -> AsyncOmniQ:
    app = AsyncOmniQ(FileBackend.from_url(url, fs_kwargs=options))

    @app.task(name="nap")
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return app


def work(url: str, options: dict[str, Any], slots: int, start: Any, out: Any) -> None:
    """One worker process: drain the queue, report its stats."""

    async def run() -> dict[str, Any]:
        app = make_app(url, options)
        async with app:
            worker = Worker(app, concurrency=slots, kind="async", burst=True, scheduler=False,
                            cleanup_interval=None)  # fmt: skip
            stats = await worker.run()
            claims = getattr(app.backend.task_queue, "claim_stats", {})
            return {"claimed": stats.claimed, "completed": stats.completed, "lost": stats.lost,
                    "claim_stats": dict(claims)}  # fmt: skip

    start.wait()
    out.put(asyncio.run(run()))


async def enqueue(
    url: str, options: dict[str, Any], n: int, seconds: float, shards: int
) -> list[str]:
    app = make_app(url, options)
    async with app:
        if shards > 1:
            await app.backend.task_queue.set_shards("default", shards)  # type: ignore[attr-defined]
        return [(await app.enqueue("nap", seconds)).id for _ in range(n)]


async def check(url: str, options: dict[str, Any], ids: list[str]) -> dict[str, int]:
    app = make_app(url, options)
    async with app:
        queue = app.backend.task_queue
        outcome: Counter[str] = Counter()
        for task_id in ids:
            task = await queue.get_task(task_id)
            if task is None or task.status is not TaskStatus.COMPLETED:
                outcome["not completed"] += 1
            elif task.attempts != 1:
                outcome["delivered more than once"] += 1
        return dict(outcome)


def per_task(requests: Counter[tuple[str, int]], n: int) -> dict[str, float]:
    kinds = Counter[str]()
    for (kind, _), count in requests.items():
        kinds[kind] += count
    out = {kind: round(count / n, 2) for kind, count in sorted(kinds.items())}
    out["billable"] = round(sum(kinds[k] for k in BILLABLE) / n, 2)
    out["failed creates (PUT 412)"] = round(requests["put", 412] / n, 2)
    out["payload misses (GET 404)"] = round(requests["get", 404] / n, 2)
    out["HEAD 404 (looks, doorbell)"] = round(requests["head", 404] / n, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=20)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--shards", type=int, default=1, help="the queue's shard count")
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_seaweedfs(Path(tmp))
        try:
            with S3Proxy(server.endpoint) as proxy:
                options, url = proxy.options(server.options), server.url()
                ids = asyncio.run(enqueue(url, options, args.tasks, args.seconds, args.shards))
                enqueued = Counter(proxy.requests)
                proxy.requests.clear()
                ctx = mp.get_context("spawn")
                start, out = ctx.Event(), ctx.Queue()
                procs = [
                    ctx.Process(target=work, args=(url, options, args.slots, start, out))
                    for _ in range(args.procs)
                ]
                for p in procs:
                    p.start()
                time.sleep(3.0)  # let every process import and connect
                t0 = time.perf_counter()
                start.set()
                reports = [out.get(timeout=600) for _ in procs]
                elapsed = time.perf_counter() - t0
                for p in procs:
                    p.join(30)
                drained = Counter(proxy.requests)
                outcome = asyncio.run(check(url, options, ids))
        finally:
            server.stop()
    claims: Counter[str] = Counter()
    for report in reports:
        claims.update(report["claim_stats"])
    completed = sum(r["completed"] for r in reports)
    result = {
        "label": args.label,
        "tasks": args.tasks,
        "procs": args.procs,
        "slots": args.slots,
        "task_seconds": args.seconds,
        "shards": args.shards,
        "tasks_per_s": round(args.tasks / elapsed, 1),
        "completed_by_workers": completed,
        "duplicates": completed - args.tasks + outcome.get("not completed", 0),
        "lost": outcome.get("not completed", 0),
        "lost_leases": sum(r["lost"] for r in reports),
        "redelivered": outcome.get("delivered more than once", 0),
        "enqueue_per_task": per_task(enqueued, args.tasks),
        "workers_per_task": per_task(drained, args.tasks),
        "lifecycle_billable_per_task": round(
            per_task(enqueued, args.tasks)["billable"] + per_task(drained, args.tasks)["billable"],
            2,
        ),
        "claim_stats_per_task": {k: round(v / args.tasks, 3) for k, v in sorted(claims.items())},
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "http_fleet.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[args.label] = result
    path.write_text(json.dumps(stored, indent=1) + "\n")


if __name__ == "__main__":
    main()
