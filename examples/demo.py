"""OmniQ demo: a few hundred tasks through a worker pool, on a plain directory.

Run with ``make demo``. Enqueues quick, slow, flaky (fail once, then succeed on retry), broken
(fail every time: dead letter), delayed and high-priority tasks; runs a thread worker pool with
a progress bar until everything is final; prints the status table, a result and one task's
event timeline. An every-second schedule fires meanwhile: the worker's scheduler turns its runs
into tasks.
"""

from __future__ import annotations

import logging
import random
import shutil
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from omniq import OmniQ, TaskFailedError
from omniq.cli import status_table
from omniq.sync import run_sync

BASE = Path("./omniq_data/demo")
shutil.rmtree(BASE, ignore_errors=True)
app = OmniQ(str(BASE))
console = Console(width=None if sys.stdout.isatty() else 120)
logging.getLogger("omniq").setLevel(logging.ERROR)  # the dead-letter warnings are expected here
_failed_once: set[int] = set()
_lock = threading.Lock()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds:.2f} s"


@app.task(max_retries=2, retry_delay=0.2)
def flaky(n: int) -> int:
    with _lock:
        first_try = n not in _failed_once
        _failed_once.add(n)
    if first_try:
        raise ConnectionError(f"flaky({n}): transient failure, will retry")
    return n * n


@app.task(max_retries=1, retry_delay=0.1)
def broken(n: int) -> None:
    raise ValueError(f"broken({n}) always fails")


@app.task(queue="high", priority=9)
def urgent(n: int) -> str:
    return f"urgent {n} done"


def main() -> None:
    handles = [add.delay(i, i) for i in range(200)]
    handles += [slow.delay(random.uniform(0.05, 0.3)) for _ in range(40)]
    handles += [flaky.delay(i) for i in range(40)]
    handles += [broken.delay(i) for i in range(5)]
    handles += [app.enqueue(add, 1000, i, delay=1.0) for i in range(10)]
    handles += [urgent.delay(i) for i in range(5)]
    total = len(handles)
    console.print(f"enqueued [bold]{total}[/bold] tasks into {app.backend.url}")
    every = app.schedule(add, interval=1, args=(40, 2), id="demo-every-second", max_instances=None)

    worker = app.wrapped.worker(queues=["high", "default"], concurrency=8, kind="thread")
    thread = threading.Thread(target=lambda: run_sync(worker.run()), daemon=True)
    t0 = time.perf_counter()
    thread.start()
    columns = (TextColumn("draining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("tasks", total=total)
        while True:
            stats = app.backend.get_task_queue(async_mode=False).queue_stats()
            runs = app.get_schedule(every.id).run_count  # tasks of the schedule, not counted
            done = sum(s.completed + s.failed for s in stats) - runs
            progress.update(bar, completed=max(0, done))
            if done >= total:
                break
            time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    deadline = time.monotonic() + 10
    while app.get_schedule(every.id).run_count < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # let the schedule fire at least twice
    app.pause_schedule(every.id)
    time.sleep(0.3)  # its last task runs
    worker.stop()
    thread.join(30)
    stats = app.backend.get_task_queue(async_mode=False).queue_stats()  # the schedule's runs too
    s = worker.stats
    console.print(
        f"drained in {elapsed:.2f} s: {s.completed} completed, {s.failed} failed for good, "
        f"{s.retried} retries"
    )
    console.print(status_table(stats, app.backend.url))
    console.print(f"add(21, 21) = {handles[21].result(timeout=10)}")
    try:
        handles[280].result(timeout=1)  # a broken() task
    except TaskFailedError as exc:
        console.print(f"[red]a dead-lettered task:[/red] {exc.error}")
    flaky_id = handles[240].id
    timeline = app.backend.get_event_storage(async_mode=False).get_events(task_id=flaky_id)
    console.print("events of a flaky task: " + " -> ".join(e.event_type.value for e in timeline))
    fired = app.get_schedule(every.id)
    run_task = fired.task_id_for(fired.last_run_at)
    console.print(
        f"schedule {every.id} (every 1 s): {fired.run_count} runs, then paused; "
        f"the last run's task returned {app.get_result(run_task, timeout=5)}"
    )
    console.print(f"\nlook around: ls -R {BASE}   or   omniq --url {BASE} schedule list")
    console.print(
        f"see it in a browser: omniq dashboard --url {BASE}   then open http://127.0.0.1:8080/"
    )


if __name__ == "__main__":
    main()
