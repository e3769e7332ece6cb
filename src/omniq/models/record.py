"""The finished-task record: a task's final state, outcome and lifecycle events in one object."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from omniq.models.event import EventType, TaskEvent
from omniq.models.result import TaskResult
from omniq.models.task import Task


class FinishedRecord(Task, kw_only=True):
    """A finished task as a worker stores it: the task's fields (final status, ``completed_at``,
    ``expires_at``), plus its ``result`` and the ``events`` of its last delivery.

    It extends ``Task`` rather than wrapping it, so the two read each other: a record decoded
    as a ``Task`` is the final task (the extra fields are skipped), and a bare ``Task`` written
    by an older version decodes as a record without result or events.
    """

    result: TaskResult | None = None
    events: list[TaskEvent] = []


_TASK_FIELDS = Task.__struct_fields__


def as_record(
    task: Task, result: TaskResult | None = None, events: Sequence[TaskEvent] = ()
) -> FinishedRecord:
    """The record of a finished ``task`` (a ``FinishedRecord`` passed in is kept as it is)."""
    if isinstance(task, FinishedRecord) and result is None and not events:
        return task
    fields = {name: getattr(task, name) for name in _TASK_FIELDS}
    return FinishedRecord(**fields, result=result, events=list(events))


def as_task(task: Task) -> Task:
    """A plain ``Task`` (a record read by a decoder that keeps its class, such as pickle)."""
    if type(task) is Task:
        return task
    return Task(**{name: getattr(task, name) for name in _TASK_FIELDS})


def enqueued_event(task: Task) -> TaskEvent:
    """The ENQUEUED event a task implies: at its creation, in its queue. Its id is the task id,
    so that every reader synthesizes the same event (a copy or migration deduplicates it)."""
    return TaskEvent(
        task_id=task.id, event_type=EventType.ENQUEUED, id=task.id, timestamp=task.created_at,
        queue_name=task.queue_name,
        data={"func": task.func, "eta": task.eta.isoformat() if task.eta else None},
    )  # fmt: skip


def replace_result(record: FinishedRecord, result: TaskResult | None) -> FinishedRecord:
    return msgspec.structs.replace(record, result=result)
