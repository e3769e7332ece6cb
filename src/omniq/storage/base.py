"""The four store protocols every backend implements: task queue, results, events, schedules.

The worker and the app talk only to these. Each backend's stores pass the one contract suite in
``tests/storage/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from omniq.models.event import EventType, TaskEvent
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.schedule import Schedule, ScheduleStatus
from omniq.models.task import Task, TaskStatus


@dataclass
class QueueStats:
    """Counts of one queue by state, read from names only (no task payload is read)."""

    queue: str
    pending: int = 0
    delayed: int = 0  # of pending: not due yet
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    oldest_due_at: datetime | None = None  # the longest-waiting runnable task
    workers: dict[str, int] = field(default_factory=dict)  # live lease holders -> tasks held
    expired_leases: int = 0
    shards: int = 1  # prefixes the queue's pending and running tasks spread over (buckets)


class TaskQueue(ABC):
    """Tasks moving pending -> running -> completed / failed / cancelled.

    ``on_lease_expired`` (set by the backend) is awaited with each task the reaper re-queues
    (status PENDING) or moves to the dead letter (status FAILED), whoever runs the reaper, to
    write ``lifecycle.expiry_report``. File stores call it before the task leaves the reaper's
    hands and again if a reaper dies midway (at least once); SQLite writes the report in the
    reaping transaction instead and does not call it.
    """

    on_lease_expired: Callable[[Task], Awaitable[None]] | None = None

    @abstractmethod
    async def enqueue(self, task: Task) -> str:
        """Store ``task`` durably in the state its ``status`` names (normally pending).

        Returns the task id."""

    @abstractmethod
    async def dequeue(
        self,
        queues: Sequence[str] | str = ("default",),
        timeout: float | None = None,
        *,
        visibility_timeout: float | None = None,
        worker_id: str | None = None,
    ) -> Task | None:
        """Claim the next runnable task of the first queue (in the order given) that has one.

        The task comes back RUNNING with ``attempts`` raised and a ``lease`` that expires after
        ``visibility_timeout`` seconds unless renewed. Without ``timeout`` it returns ``None`` at
        once when nothing is runnable; with one it waits up to that many seconds for work.
        """

    @abstractmethod
    async def renew_lease(self, task: Task, visibility_timeout: float | None = None) -> Task:
        """Extend the lease of a running task; raise ``LeaseLostError`` if it was taken over."""

    @abstractmethod
    async def finish_task(
        self,
        task: Task,
        status: TaskStatus = TaskStatus.COMPLETED,
        error: str | None = None,
        *,
        result: TaskResult | None = None,
        events: Sequence[TaskEvent] = (),
    ) -> Task:
        """Move a claimed task to COMPLETED, FAILED or CANCELLED (fenced by its lease).

        ``result`` and ``events`` are stored in the same step as the finish, and only if it
        succeeds (a worker whose lease was lost writes neither): once this returns, the
        backend's result and event stores return them. File stores keep them in the finished
        task's object (one write); SQLite writes their rows in the finishing transaction.
        """

    @abstractmethod
    async def requeue_task(
        self, task: Task, *, eta: datetime | None = None, error: str | None = None
    ) -> Task:
        """Give a claimed task back to pending, runnable at ``eta`` (fenced by its lease)."""

    @abstractmethod
    async def requeue_expired(self, now: datetime | None = None) -> list[Task]:
        """Re-deliver tasks whose lease expired (worker died); return them as re-queued."""

    async def reap_at_start(self) -> None:
        """A long-running worker's reap as it starts (it claims meanwhile): ``requeue_expired``
        where that is cheap. A bucket reads there only the leases that missed a renewal."""
        await self.requeue_expired()

    @abstractmethod
    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a pending task; ``False`` if it is not pending (running or finished)."""

    @abstractmethod
    async def delete_task(self, task_id: str) -> bool:
        """Delete a finished (completed, failed or cancelled) task; ``False`` if there is none.

        Pending and running tasks are never deleted (cancel a pending one first): a worker may
        be claiming or running them.
        """

    @abstractmethod
    async def get_task(self, task_id: str) -> Task | None:
        """The task with this id in whatever state it is, or ``None``."""

    @abstractmethod
    async def list_tasks(
        self,
        queue_name: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Tasks of one queue (or all), optionally of one status."""

    @abstractmethod
    async def update_task(self, task: Task) -> None:
        """Rewrite a stored task; a changed ``status`` moves it to that state (admin operation)."""

    @abstractmethod
    async def get_queue_size(self, queue_name: str = "default") -> int:
        """How many tasks are pending in the queue (runnable now or delayed)."""

    @abstractmethod
    async def list_queues(self) -> list[str]:
        """Names of the queues that have ever held a task."""

    @abstractmethod
    async def cleanup_expired_tasks(self, now: datetime | None = None) -> int:
        """Delete finished tasks past their ttl; return how many."""

    @abstractmethod
    async def queue_stats(self, now: datetime | None = None) -> list[QueueStats]:
        """Per-queue counts by state, oldest runnable task, live lease holders."""


class ResultStorage(ABC):
    """Task results under ``success`` and ``failed``."""

    @abstractmethod
    async def set(self, result: TaskResult) -> None: ...

    @abstractmethod
    async def get(self, task_id: str) -> TaskResult | None: ...

    @abstractmethod
    async def list_results(
        self, status: ResultStatus | str | None = None, limit: int | None = None
    ) -> list[TaskResult]: ...

    @abstractmethod
    async def delete(self, task_id: str) -> bool: ...

    @abstractmethod
    async def cleanup_expired_results(self, now: datetime | None = None) -> int: ...


class EventStorage(ABC):
    """Append-only task events, partitioned by UTC day."""

    @property
    def implies_enqueued(self) -> bool:
        """Whether ``get_events`` returns each task's ENQUEUED event without one being logged
        (read from the task itself): then the app writes none at enqueue."""
        return False

    @abstractmethod
    async def log_event(self, event: TaskEvent) -> None: ...

    @abstractmethod
    async def log_events(self, events: Sequence[TaskEvent]) -> None:
        """Write several events at once (one object per task and day)."""

    @abstractmethod
    async def get_events(
        self,
        task_id: str | None = None,
        event_type: EventType | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[TaskEvent]:
        """Events in time order, filtered; ``limit`` keeps the first ``limit`` of them."""

    @abstractmethod
    async def cleanup_expired_events(self, now: datetime | None = None) -> int: ...


class ScheduleStorage(ABC):
    """Schedules under ``active``, ``paused`` and ``completed``, and the per-run claims that
    let any number of schedulers fire each run once (``claim_run``, ``record_run``,
    ``forget_runs``)."""

    @abstractmethod
    async def save_schedule(self, schedule: Schedule) -> None: ...

    @abstractmethod
    async def get_schedule(self, schedule_id: str) -> Schedule | None: ...

    @abstractmethod
    async def list_schedules(
        self, status: ScheduleStatus | str | None = None
    ) -> list[Schedule]: ...

    @abstractmethod
    async def get_ready_schedules(self, now: datetime | None = None) -> list[Schedule]: ...

    @abstractmethod
    async def pause_schedule(self, schedule_id: str) -> bool: ...

    @abstractmethod
    async def resume_schedule(self, schedule_id: str) -> bool: ...

    @abstractmethod
    async def delete_schedule(self, schedule_id: str) -> bool:
        """Remove the schedule in whatever state it is, and its run claims."""

    @abstractmethod
    async def claim_run(
        self,
        schedule_id: str,
        run_at: datetime,
        *,
        owner: str,
        now: datetime,
        stale_after: float,
    ) -> int | None:
        """Claim the run of ``schedule_id`` at ``run_at``: of any number of racing callers,
        one wins.

        Returns ``None`` when another caller holds the run: it claimed it less than
        ``stale_after`` seconds before ``now``. Returns ``0`` to the first claimant of the run,
        and ``n > 0`` when this call took over a claim older than ``stale_after`` (its holder is
        presumed dead; the n-th takeover of the run). A takeover may find the run half done:
        the caller checks whether the run's task exists before enqueuing it. Claims are
        atomic on the store (a conditional create), never a read-then-write.
        """

    @abstractmethod
    async def record_run(self, schedule: Schedule, run_at: datetime) -> bool:
        """Store ``schedule`` as the holder of the claim on its run at ``run_at`` advanced it
        (next run, run count). A schedule that was paused or deleted since the caller read it
        stays so: ``False``, and nothing of this write remains. A COMPLETED schedule is saved
        as by ``save_schedule``."""

    @abstractmethod
    async def forget_runs(self, schedule_id: str, before: datetime) -> int:
        """Delete the claims of runs earlier than ``before``; return how many were removed."""
