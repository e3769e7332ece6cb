"""OmniQ demo: a queue in a directory, drained by a small loop over the storage API.

Run with ``make demo``. Enqueues tasks on two queues (some delayed, some failing once), claims
them in priority order, stores results and events, then prints what is on disk.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from omniq.backend.file import FileBackend
from omniq.models.event import EventType, TaskEvent
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.task import Task, TaskStatus

BASE = Path("./omniq_data/demo")


def add(x: int, y: int) -> int:
    return x + y


def flaky(n: int) -> int:
    if n % 7 == 0:
        raise RuntimeError(f"flaky({n}) failed")
    return n * n


FUNCTIONS = {"add": add, "flaky": flaky}


async def run_one(backend: FileBackend, task: Task) -> str:
    """Run a claimed task, then record its result, events and final state."""
    events = backend.get_event_storage()
    queue = backend.get_task_queue()
    started = TaskEvent(task_id=task.id, event_type=EventType.STARTED, attempt=task.attempts)
    try:
        value = FUNCTIONS[task.func](*task.args, **task.kwargs)
    except Exception as exc:
        if task.attempts <= task.max_retries:
            await queue.requeue_task(task, eta=None, error=str(exc))
            await events.log_events(
                [
                    started,
                    TaskEvent(task_id=task.id, event_type=EventType.RETRIED, message=str(exc)),
                ]
            )
            return "retried"
        await queue.finish_task(task, TaskStatus.FAILED, error=str(exc))
        await backend.get_result_storage().set(
            TaskResult(
                task_id=task.id, status=ResultStatus.FAILED, error=str(exc), attempts=task.attempts
            )
        )
        await events.log_events([started, TaskEvent(task_id=task.id, event_type=EventType.FAILED)])
        return "failed"
    await queue.finish_task(task)
    await backend.get_result_storage().set(
        TaskResult(task_id=task.id, result=value, attempts=task.attempts)
    )
    await events.log_events([started, TaskEvent(task_id=task.id, event_type=EventType.COMPLETED)])
    return "completed"


async def main() -> None:
    shutil.rmtree(BASE, ignore_errors=True)
    async with FileBackend(base_dir=str(BASE)) as backend:
        queue = backend.get_task_queue()
        tasks = [Task(func="add", args=(i, i), queue_name="default") for i in range(150)]
        tasks += [Task(func="flaky", args=(i,), max_retries=1) for i in range(1, 50)]
        tasks += [Task(func="add", args=(1000, i), queue_name="high", priority=9) for i in range(5)]
        tasks += [Task(func="add", args=(0, i), delay=0.5) for i in range(5)]
        t0 = time.perf_counter()
        for task in tasks:
            await queue.enqueue(task)
            await backend.get_event_storage().log_event(
                TaskEvent(
                    task_id=task.id, event_type=EventType.ENQUEUED, queue_name=task.queue_name
                )
            )
        enqueue_s = time.perf_counter() - t0
        print(f"enqueued {len(tasks)} tasks into {backend.url} in {enqueue_s * 1000:.0f} ms")

        outcomes: Counter[str] = Counter()
        first = []
        t0 = time.perf_counter()
        while (task := await queue.dequeue(["high", "default"], timeout=1.0)) is not None:
            if len(first) < 3:
                first.append(f"{task.queue_name}:{task.func}{task.args}")
            outcomes[await run_one(backend, task)] += 1
        drain_s = time.perf_counter() - t0

        print(f"first claimed: {', '.join(first)}  (high priority first)")
        print(f"drained in {drain_s:.2f} s (the last 1 s is the idle timeout): {dict(outcomes)}")
        print()
        print(f"{'queue':<10}{'pending':>9}{'running':>9}{'completed':>11}{'failed':>8}")
        for name in await queue.list_queues():
            counts = Counter(t.status.value for t in await queue.list_tasks(queue_name=name))
            print(
                f"{name:<10}{counts['pending']:>9}{counts['running']:>9}"
                f"{counts['completed']:>11}{counts['failed']:>8}"
            )
        results = backend.get_result_storage()
        sample = await results.get(tasks[3].id)
        failed = await results.list_results(status=ResultStatus.FAILED)
        print()
        print(f"result of add(3, 3): {sample.result if sample else None}")
        print(
            f"failed results: {len(failed)}, e.g. {failed[0].error!r}" if failed else "no failures"
        )
        timeline = (
            await backend.get_event_storage().get_events(task_id=failed[0].task_id)
            if failed
            else []
        )
        print("events of that task: " + " -> ".join(e.event_type.value for e in timeline))
        print(f"\nlook around: ls -R {BASE}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
