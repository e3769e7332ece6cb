"""Enqueue and claim rates of the file task queue against a bare file-queue baseline.

    python benchmarks/storage_rates.py [--sizes 1000 100000] [--repeat 3]

The baseline is the floor any file queue pays: one file per task written as temp file +
``os.replace``, claimed by ``os.rename`` from a sorted listing and read back. Every figure is
per task (microseconds) and the median of ``--repeat`` runs; ratios are taken inside each run.
Prints a markdown table and writes JSON to ``benchmarks/results/storage_rates.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from omniq.backend.file import FileBackend
from omniq.models.task import Task

RESULTS = Path(__file__).parent / "results"


def bare_baseline(root: str, n: int) -> tuple[float, float]:
    """(enqueue s, claim s) for n tasks with plain temp-file + rename."""
    pending, running = os.path.join(root, "pending"), os.path.join(root, "running")
    os.makedirs(pending)
    os.makedirs(running)
    encoder = msgspec.json.Encoder()
    payloads = [encoder.encode({"func": "f", "args": [i], "id": f"{i:012d}"}) for i in range(n)]
    os.sync()  # don't bill this phase for the previous one's writeback
    t0 = time.perf_counter()
    for i, data in enumerate(payloads):
        tmp = os.path.join(pending, f".tmp-{i}")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, os.path.join(pending, f"{i:012d}.json"))
    enqueue = time.perf_counter() - t0
    os.sync()
    t0 = time.perf_counter()
    for name in sorted(os.listdir(pending)):
        dst = os.path.join(running, name)
        os.rename(os.path.join(pending, name), dst)
        with open(dst, "rb") as fh:
            msgspec.json.decode(fh.read())
    claim = time.perf_counter() - t0
    return enqueue, claim


async def omniq_run(url: str, n: int, fsync: bool = False) -> tuple[float, float, float]:
    """(enqueue s, claim s, finish s) for n tasks through the public task-queue API."""
    async with FileBackend.from_url(url, fsync=fsync, visibility_timeout=3600) as backend:
        q = backend.get_task_queue()
        tasks = [Task(func="f", args=(i,)) for i in range(n)]
        os.sync()
        t0 = time.perf_counter()
        for task in tasks:
            await q.enqueue(task)
        enqueue = time.perf_counter() - t0
        claimed = []
        os.sync()
        t0 = time.perf_counter()
        while (task := await q.dequeue("default")) is not None:
            claimed.append(task)
        claim = time.perf_counter() - t0
        assert len(claimed) == n, f"claimed {len(claimed)} of {n}"
        os.sync()
        t0 = time.perf_counter()
        for task in claimed:
            await q.finish_task(task)
        finish = time.perf_counter() - t0
        return enqueue, claim, finish


def measure(n: int, repeat: int, tmp: str) -> dict[str, Any]:
    rows: dict[str, list[float]] = {}
    for r in range(repeat):
        base = os.path.join(tmp, f"run-{n}-{r}")
        be, bc = bare_baseline(os.path.join(base, "bare"), n)
        oe, oc, of = asyncio.run(omniq_run(os.path.join(base, "omniq"), n))
        me, mc, mf = asyncio.run(omniq_run(f"memory://bench-{n}-{r}", n))
        for key, value in {
            "bare enqueue": be, "bare claim": bc,
            "local enqueue": oe, "local claim": oc, "local finish": of,
            "memory enqueue": me, "memory claim": mc, "memory finish": mf,
            "local enqueue / bare": be / oe, "local claim / bare": bc / oc,
        }.items():  # fmt: skip
            rows.setdefault(key, []).append(value)
        shutil.rmtree(base, ignore_errors=True)
    out: dict[str, Any] = {}
    for key, values in rows.items():
        if "/" in key:
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        else:
            per_task = [v / n * 1e6 for v in values]
            out[key] = {
                "us_per_task": statistics.median(per_task),
                "spread": [min(per_task), max(per_task)],
                "tasks_per_s": n / statistics.median(values),
            }
    return out


def fsync_cost(n: int, tmp: str) -> dict[str, float]:
    off = asyncio.run(omniq_run(os.path.join(tmp, "fsync-off"), n))
    on = asyncio.run(omniq_run(os.path.join(tmp, "fsync-on"), n, fsync=True))
    return {"enqueue_us_off": off[0] / n * 1e6, "enqueue_us_on": on[0] / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the queues (default: a temp dir)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="omniq-bench-", dir=args.dir)
    try:
        report: dict[str, Any] = {
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, "
            f"Python {platform.python_version()}",
            "sizes": {},
        }
        for n in args.sizes:
            report["sizes"][str(n)] = measure(n, args.repeat, tmp)
        report["fsync"] = fsync_cost(1000, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    sizes = [str(n) for n in args.sizes]
    print(
        f"\nper-task cost in µs (median of {args.repeat}; tasks/s in brackets)"
        f" — {report['machine']}\n"
    )
    print("| operation | " + " | ".join(f"N={n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for key in report["sizes"][sizes[0]]:
        cells = []
        for n in sizes:
            v = report["sizes"][n][key]
            cells.append(
                f"{v['median']:.2f}x"
                if "median" in v
                else f"{v['us_per_task']:.1f} ({v['tasks_per_s']:,.0f}/s)"
            )
        print(f"| {key} | " + " | ".join(cells) + " |")
    if len(sizes) > 1:
        first, last = report["sizes"][sizes[0]], report["sizes"][sizes[-1]]
        growth = last["local claim"]["us_per_task"] / first["local claim"]["us_per_task"]
        print(f"\nlocal claim cost at N={sizes[-1]} vs N={sizes[0]}: {growth:.2f}x")
        report["claim_growth"] = growth
    fs = report["fsync"]
    print(
        f"fsync=True enqueue: {fs['enqueue_us_on']:.0f} µs/task"
        f" vs {fs['enqueue_us_off']:.0f} µs off"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "storage_rates.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
