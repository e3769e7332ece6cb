"""The dashboard's actions: each changes the store through the app's public API (the same calls
as the CLI's ``retry``, ``cancel``, ``schedule pause`` ...) and says what it did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from omniq.app import AsyncOmniQ
from omniq.models.ids import is_valid_id, is_valid_name
from omniq.models.task import TaskStatus


@dataclass
class Outcome:
    done: bool
    message: str


async def _task_change(
    app: AsyncOmniQ, task_id: str, method: str, past: str, wanted: str
) -> Outcome:
    if not is_valid_id(task_id):
        return Outcome(False, f"no task {task_id!r}")
    if await getattr(app, method)(task_id):
        return Outcome(True, f"task {task_id} {past}")
    task = await app.backend.task_queue.get_task(task_id)
    if task is None:
        return Outcome(False, f"no task {task_id}")
    return Outcome(False, f"task {task_id} is {task.status.value}, not {wanted}: not changed")


async def retry(app: AsyncOmniQ, task_id: str) -> Outcome:
    """A dead-lettered task back to pending (attempts reset)."""
    return await _task_change(app, task_id, "retry", "retried", "failed")


async def cancel(app: AsyncOmniQ, task_id: str) -> Outcome:
    """A pending task cancelled (a CANCELLED result and event are recorded)."""
    return await _task_change(app, task_id, "cancel", "cancelled", "pending")


async def delete(app: AsyncOmniQ, task_id: str) -> Outcome:
    """A finished task deleted, with its result (its events stay until their ttl)."""
    return await _task_change(app, task_id, "delete_task", "deleted", "finished")


async def retry_all(app: AsyncOmniQ, queue: str) -> Outcome:
    """Every failed task of ``queue`` back to pending."""
    if not is_valid_name(queue):
        return Outcome(False, f"no queue {queue!r}")
    failed = await app.backend.task_queue.list_tasks(queue, TaskStatus.FAILED)
    count = sum([await app.retry(t.id) for t in failed])
    return Outcome(True, f"{count} failed task(s) of queue {queue} back to pending")


def _schedule_change(method: str, past: str) -> Callable[[AsyncOmniQ, str], Awaitable[Outcome]]:
    async def change(app: AsyncOmniQ, schedule_id: str) -> Outcome:
        if is_valid_id(schedule_id) and await getattr(app, method)(schedule_id):
            return Outcome(True, f"schedule {schedule_id} {past}")
        return Outcome(False, f"schedule {schedule_id} was not {past} (gone, or already so)")

    change.__doc__ = f"A schedule {past}."
    return change


pause_schedule = _schedule_change("pause_schedule", "paused")
resume_schedule = _schedule_change("resume_schedule", "resumed")
delete_schedule = _schedule_change("delete_schedule", "deleted")


async def purge_expired(app: AsyncOmniQ) -> Outcome:
    """Finished tasks, results and events past their ttl deleted (``omniq cleanup``)."""
    counts = await app.backend.cleanup_expired()
    removed = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return Outcome(True, f"removed {removed}" if removed else "nothing is past its ttl")
