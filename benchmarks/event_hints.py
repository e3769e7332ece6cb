"""Pickup of a task enqueued into an idle queue on S3, with and without event hints (issue 14).

    python benchmarks/event_hints.py [--trials 10]

Starts moto's server on 127.0.0.1 (tests/emulators.py: it delivers the bucket's ObjectCreated
events to an SQS queue), lets a consumer's queue go idle, then times enqueue (by another
backend) to claim, ``--trials`` times per mode: ``doorbell`` (the default: a marker read once
a second) and ``hints`` (``event_hints`` set to the SQS queue). Prints a table and writes
benchmarks/results/event_hints.json. Takes about a minute; not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the emulator launcher the tests use

from emulators import Emulator, sqs_hints_queue, start_moto  # noqa: E402
from omniq.backend.file import FileBackend  # noqa: E402
from omniq.models.task import Task  # noqa: E402

RESULTS = Path(__file__).parent / "results"


async def pickups(server: Emulator, hints: bool, trials: int) -> list[float]:
    url = server.url()
    options = dict(server.options)
    producer = FileBackend.from_url(url, fs_kwargs=options)
    async with producer:  # makes the bucket
        extra: dict[str, Any] = {"event_hints": await sqs_hints_queue(server, url)} if hints else {}
        consumer = FileBackend.from_url(url, fs_kwargs=options, **extra)
        async with consumer:
            seconds = []
            for _ in range(trials):
                while await consumer.task_queue.dequeue("default", timeout=0) is not None:
                    pass
                await asyncio.sleep(3.0)  # idle: the queue rests, its doorbell is read
                waiting = asyncio.ensure_future(consumer.task_queue.dequeue("default", timeout=30))
                await asyncio.sleep(0.5)
                started = time.perf_counter()
                await producer.task_queue.enqueue(Task(func="pick-me-up"))
                task = await waiting
                assert task is not None
                seconds.append(time.perf_counter() - started)
                await consumer.task_queue.finish_task(task)
            return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    server = start_moto(Path(tempfile.mkdtemp(prefix="omniq-hints-")))
    try:
        rows = {
            mode: asyncio.run(pickups(server, mode == "hints", args.trials))
            for mode in ("doorbell", "hints")
        }
    finally:
        server.stop()
    print("| idle queue, moto on 127.0.0.1 | pickup median | max |")
    print("|---|---|---|")
    for mode, seconds in rows.items():
        print(f"| {mode} | {statistics.median(seconds):.3f} s | {max(seconds):.3f} s |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "event_hints.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
