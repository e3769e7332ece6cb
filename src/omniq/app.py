"""``AsyncOmniQ`` and ``OmniQ``: register functions as tasks, enqueue them, wait for results.

``OmniQ`` is the blocking twin: the same object behind ``omniq.sync.SyncWrapper``, so every
coroutine method of ``AsyncOmniQ`` becomes a method that returns its value.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from omniq.backend.base import Backend
from omniq.backend.file import FileBackend
from omniq.backend.sqlite import SCHEME as SQLITE_SCHEME
from omniq.backend.sqlite import SQLiteBackend
from omniq.exceptions import (
    OmniQError,
    ResultTimeoutError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskNotRegisteredError,
    ValidationError,
)
from omniq.models._time import check_seconds, utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.models.ids import validate_id
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.schedule import Misfire, Schedule, ScheduleStatus, ScheduleType
from omniq.models.task import Task, TaskStatus
from omniq.sync import SyncWrapper, blocking_twins, run_sync

if TYPE_CHECKING:
    from omniq.scheduler import Scheduler
    from omniq.worker import Worker, WorkerStats

R = TypeVar("R")
logger = logging.getLogger("omniq.app")


def _describe(task: Task | None) -> str:
    """Where a task is, for a timeout message."""
    if task is None:
        return "no such task"
    if task.status is TaskStatus.RUNNING and task.lease is not None:
        holder = task.lease.worker_id or "a worker"
        return f"running on {holder}, lease until {task.lease.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    if task.status is TaskStatus.PENDING:
        if task.eta is not None and task.eta > utcnow():
            return f"pending, delayed until {task.eta:%Y-%m-%d %H:%M:%S} UTC"
        return f"pending since {task.due_at:%Y-%m-%d %H:%M:%S} UTC: is a worker running?"
    if task.status is TaskStatus.COMPLETED:
        return "completed, but its result is gone (deleted, or past its ttl)"
    return str(task.status.value)


class TaskFunction(Generic[R]):
    """A function registered with an app. Call it to run it here; ``.delay()`` to enqueue it."""

    def __init__(self, app: Any, fn: Callable[..., R], name: str, options: dict[str, Any]) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__module__ = getattr(fn, "__module__", __name__)
        self.is_async = asyncio.iscoroutinefunction(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Enqueue a call with this task's options; returns a handle (awaitable on AsyncOmniQ)."""
        return self.app.enqueue(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


class AsyncTaskHandle:
    """A reference to an enqueued task: ``await handle.result(timeout=10)``."""

    def __init__(self, app: AsyncOmniQ, task_id: str) -> None:
        self.app = app
        self.id = task_id

    async def result(self, timeout: float | None = None) -> Any:
        """The task's return value, waiting up to ``timeout`` seconds (``None``: forever);
        raises ``TaskFailedError`` if it failed, ``ResultTimeoutError`` saying its state."""
        return await self.app.get_result(self.id, timeout=timeout)

    async def task(self) -> Task | None:
        """The stored task in whatever state it is, or ``None`` (deleted, past its ttl)."""
        return await self.app.backend.task_queue.get_task(self.id)

    async def status(self) -> str | None:
        """``"pending"``, ``"running"``, ``"completed"``, ``"failed"``, ``"cancelled"`` or
        ``None``."""
        task = await self.task()
        return task.status.value if task else None

    async def cancel(self) -> bool:
        """Cancel the task if it is still pending; ``False`` otherwise."""
        return await self.app.cancel(self.id)

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"


def make_backend(target: str | os.PathLike[str] | Backend | None, **settings: Any) -> Backend:
    if isinstance(target, Backend):
        if settings:
            raise ValidationError("settings go to the backend's constructor when passing a Backend")
        return target
    if target is None:
        return FileBackend(**settings)
    path = os.fspath(target)
    if path.startswith(SQLITE_SCHEME):
        return SQLiteBackend.from_url(path, **settings)
    return (
        FileBackend.from_url(path, **settings) if "://" in path else FileBackend(path, **settings)
    )


class AsyncOmniQ:
    """The async app: ``app = AsyncOmniQ("./omniq_data")`` (a path, URL or ``Backend``)."""

    def __init__(
        self, backend: str | os.PathLike[str] | Backend | None = None, **settings: Any
    ) -> None:
        self.backend = make_backend(backend, **settings)
        self.registry: dict[str, TaskFunction[Any]] = {}
        # Declared with @app.periodic; saved (or updated) when a scheduler of this app starts.
        self.periodic_schedules: dict[str, Schedule] = {}
        self._schedulers: weakref.WeakSet[Scheduler] = weakref.WeakSet()
        self._opened = False

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.registry)) or "none"
        return f"<{type(self).__name__} {self.backend!r} tasks: {names}>"

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if not self._opened:
            await self.backend.open()
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.backend.close()
            self._opened = False

    async def __aenter__(self) -> AsyncOmniQ:
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------ registry

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        max_retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Any:
        """Register a function: ``@app.task`` or ``@app.task(queue="high", max_retries=3)``.

        The registered name is ``name`` or the function's ``__qualname__``; workers run tasks by
        that name and never import a function that was not registered.
        """
        # Build a throwaway Task to validate the options now, not at the first enqueue.
        Task(
            func=name or "probe", queue_name=queue, max_retries=max_retries,
            retry_delay=retry_delay, timeout=timeout, priority=priority, ttl=ttl,
        )  # fmt: skip
        options = {
            "queue_name": queue, "max_retries": max_retries, "retry_delay": retry_delay,
            "timeout": timeout, "priority": priority, "ttl": ttl,
        }  # fmt: skip

        def register(f: Callable[..., Any]) -> TaskFunction[Any]:
            if not callable(f):
                raise ValidationError(f"@task needs a function, got {f!r}")
            task_name = name or getattr(f, "__qualname__", None)
            if not task_name or "<lambda>" in task_name:
                raise ValidationError(
                    f"cannot derive a stable task name for {f!r}: pass name='...' to @task"
                )
            existing = self.registry.get(task_name)
            if existing is not None and existing.fn is not f:
                raise ValidationError(
                    f"task name {task_name!r} is already registered to another function"
                )
            tf = TaskFunction(self._facade(), f, task_name, options)
            self.registry[task_name] = tf
            return tf

        return register(fn) if fn is not None else register

    def _facade(self) -> Any:
        """What ``TaskFunction.delay`` calls: this app, or the blocking wrapper around it."""
        return getattr(self, "_sync_facade", None) or self

    def resolve(self, name: str) -> TaskFunction[Any]:
        try:
            return self.registry[name]
        except KeyError:
            raise TaskNotRegisteredError(
                f"task function {name!r} is not registered with this app "
                f"(registered: {', '.join(sorted(self.registry)) or 'none'})"
            ) from None

    # ------------------------------------------------------------------ enqueue

    def build_task(
        self, fn: TaskFunction[Any] | Callable[..., Any] | str, args: Sequence[Any],
        kwargs: dict[str, Any], **options: Any,
    ) -> Task:  # fmt: skip
        if isinstance(fn, TaskFunction):
            tf: TaskFunction[Any] | None = fn
        elif isinstance(fn, str):
            tf = self.registry.get(fn)
        else:
            tf = next((t for t in self.registry.values() if t.fn is fn), None)
            if tf is None:
                raise TaskNotRegisteredError(
                    f"{fn!r} is not registered: decorate it with @app.task"
                )
        name = tf.name if tf else str(fn)
        settings = dict(tf.options) if tf else {}
        if options.get("queue") is not None:
            settings["queue_name"] = options.pop("queue")
        options.pop("queue", None)
        settings.update({k: v for k, v in options.items() if v is not None})
        return Task(func=name, args=tuple(args), kwargs=kwargs, **settings)

    async def enqueue(
        self,
        fn: TaskFunction[Any] | Callable[..., Any] | str,
        *args: Any,
        delay: float | None = None,
        eta: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
        ttl: float | None = None,
        **kwargs: Any,
    ) -> AsyncTaskHandle:
        """Enqueue ``fn(*args, **kwargs)``; options override the ones given to ``@app.task``.

        ``fn`` may be a registered function or its registered name (to enqueue work for a worker
        whose code this process does not have).
        """
        task = self.build_task(
            fn, args, kwargs, delay=delay, eta=eta, queue=queue, priority=priority,
            max_retries=max_retries, retry_delay=retry_delay, timeout=timeout, ttl=ttl,
        )  # fmt: skip
        return await self.enqueue_task(task)

    async def enqueue_task(self, task: Task) -> AsyncTaskHandle:
        """Enqueue a prepared ``Task`` and record its ENQUEUED event (file stores imply it
        from the task: no event object is written).

        Once the task is stored the call succeeds: an ``enqueued`` event that cannot be
        written is logged, not raised (a caller retrying after an error would enqueue the task
        twice). If the task itself cannot be stored, nothing is and the error is raised.
        """
        await self.open()
        await self.backend.task_queue.enqueue(task)
        if self.backend.event_storage.implies_enqueued:
            return AsyncTaskHandle(self, task.id)  # read from the task itself: nothing to write
        try:
            await self.backend.event_storage.log_event(
                TaskEvent(
                    task_id=task.id, event_type=EventType.ENQUEUED, queue_name=task.queue_name,
                    data={"func": task.func, "eta": task.eta.isoformat() if task.eta else None},
                )
            )  # fmt: skip
        except OmniQError as exc:
            logger.error("task %s is enqueued but its enqueued event was not: %s", task.id, exc)
        return AsyncTaskHandle(self, task.id)

    # ------------------------------------------------------------------ results

    async def get_result(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's return value, waiting up to ``timeout`` seconds (``None``: forever).

        Raises ``TaskFailedError`` (with the remote traceback) if it failed, and
        ``ResultTimeoutError`` if no result arrived in time.
        """
        result = await self.wait_result(task_id, timeout=timeout)
        if result.status is ResultStatus.SUCCESS:
            return result.result
        if result.status is ResultStatus.CANCELLED:
            raise TaskCancelledError(task_id, result.error or "cancelled")
        raise TaskFailedError(task_id, result.error, result.traceback)

    async def wait_result(self, task_id: str, timeout: float | None = None) -> TaskResult:
        """The stored ``TaskResult``, waiting for it to appear.

        Raises ``TaskNotFoundError`` at once for an id that has neither a task nor a result,
        and stops waiting (``TaskFailedError``) for a task that ended failed or cancelled
        although its result could not be written. The task's state is looked up at the first
        miss and then every ``STATUS_CHECK_SECONDS``.
        """
        validate_id(task_id, "task id")
        timeout = check_seconds(timeout, "timeout")
        await self.open()
        results = self.backend.result_storage
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        next_check = time.monotonic()
        task: Task | None = None
        while True:
            result = await results.get(task_id)
            if result is not None:
                return result
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.STATUS_CHECK_SECONDS
                task = await self.backend.task_queue.get_task(task_id)
                found = await self._result_of_final(task_id, task)
                if found is not None:
                    return found
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(
                    f"no result for task {task_id} within {timeout} s ({_describe(task)})"
                )
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(wait)
            pause = min(pause * 1.5, 0.5)

    STATUS_CHECK_SECONDS = 2.0

    async def _result_of_final(self, task_id: str, task: Task | None) -> TaskResult | None:
        """A result standing in for one that a finished task is missing; raises
        ``TaskNotFoundError`` when there is no such task. ``None``: keep waiting."""
        if task is not None and not task.status.is_final:
            return None
        # Read the result again: it is written before the task finishes, so a task found
        # finished just now may have its result by now.
        result = await self.backend.result_storage.get(task_id)
        if result is not None:
            return result
        if task is None:
            raise TaskNotFoundError(f"no task {task_id} (and no result for it)")
        if task.status is TaskStatus.FAILED:
            return TaskResult(task_id=task_id, status=ResultStatus.FAILED, error=task.error,
                              attempts=task.attempts)  # fmt: skip
        if task.status is TaskStatus.CANCELLED:
            return TaskResult(task_id=task_id, status=ResultStatus.CANCELLED,
                              error=task.error or "cancelled")  # fmt: skip
        return None  # completed, its result deleted or expired: the timeout says so

    async def cancel(self, task_id: str) -> bool:
        """Cancel a pending task; records a CANCELLED result and event. ``False`` if not pending."""
        await self.open()
        if not await self.backend.task_queue.cancel_task(task_id):
            return False
        await self.backend.result_storage.set(
            TaskResult(task_id=task_id, status=ResultStatus.CANCELLED, error="cancelled")
        )
        await self.backend.event_storage.log_event(
            TaskEvent(task_id=task_id, event_type=EventType.CANCELLED)
        )
        return True

    async def delete_task(self, task_id: str) -> bool:
        """Delete a finished (completed, failed or cancelled) task and its result; its events
        stay until their ttl. ``False`` if no finished task has this id (cancel a pending task
        first; a running one cannot be deleted)."""
        await self.open()
        kept = await self._record_events(task_id, implied=True)
        if not await self.backend.task_queue.delete_task(task_id):
            return False
        if kept:
            await self.backend.event_storage.log_events(kept)
        await self.backend.result_storage.delete(task_id)
        return True

    async def _record_events(self, task_id: str, *, implied: bool) -> list[TaskEvent]:
        """On file stores a finished task's record holds its last run's events (and implies its
        ENQUEUED event): before the record is deleted or replaced, the events to keep as event
        objects (with ``implied``, the ENQUEUED one too). Reads deduplicate by event id."""
        events = self.backend.event_storage
        if not events.implies_enqueued:
            return []
        return [e for e in await events.get_events(task_id=task_id) if implied or e.id != task_id]

    async def retry(self, task_id: str) -> bool:
        """Send a dead-lettered (failed) task back to pending, to run now.

        Its attempts start again from 0 (it gets ``max_retries`` retries again); its last error
        stays on the task (``task.error``) and in its events; its failed result is deleted so
        that waiters wait for the new outcome. ``False`` if the task is not failed.
        """
        await self.open()
        queue = self.backend.task_queue
        task = await queue.get_task(task_id)
        if task is None or task.status is not TaskStatus.FAILED:
            return False
        task.status = TaskStatus.PENDING
        task.attempts = 0
        task.eta = task.started_at = task.completed_at = task.lease = None
        kept = await self._record_events(task_id, implied=False)  # ENQUEUED stays implied
        await queue.update_task(task)
        if kept:
            await self.backend.event_storage.log_events(kept)
        await self.backend.result_storage.delete(task_id)
        await self.backend.event_storage.log_event(
            TaskEvent(task_id=task_id, event_type=EventType.ENQUEUED, queue_name=task.queue_name,
                      message=f"retried from the dead letter (last error: {task.error})")
        )  # fmt: skip
        return True

    # ------------------------------------------------------------------ schedules

    def build_schedule(
        self,
        fn: TaskFunction[Any] | Callable[..., Any] | str,
        *,
        cron: str | None = None,
        tz: str | None = None,
        interval: timedelta | float | None = None,
        at: datetime | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        id: str | None = None,
        misfire: Misfire | str = Misfire.ONCE,
        max_instances: int | None = 1,
        max_runs: int | None = None,
        now: datetime | None = None,
    ) -> Schedule:
        """The ``Schedule`` that ``schedule()`` stores (validated; nothing is written)."""
        recipe = (("cron", cron), ("interval", interval), ("at", at))
        given = [name for name, value in recipe if value is not None]
        if len(given) != 1:
            raise ValidationError(
                "a schedule takes exactly one of cron=, interval= and at= "
                f"(got {', '.join(given) or 'none'})"
            )
        if misfire not in tuple(m.value for m in Misfire):
            raise ValidationError(f"misfire must be one of once, all, skip; got {misfire!r}")
        if tz is not None and cron is None:
            raise ValidationError("tz= applies to cron= schedules only")
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        interval = check_seconds(interval, "interval", allow_zero=False)
        now = now or utcnow()
        if at is not None and isinstance(at, datetime) and at.astimezone(now.tzinfo) < now:
            raise ValidationError(f"at={at.isoformat()} is in the past: a one-shot must be later")
        template = self.build_task(
            fn, args, kwargs or {}, queue=queue, priority=priority, max_retries=max_retries,
            timeout=timeout,
        )  # fmt: skip
        kind = {"cron": ScheduleType.CRON, "interval": ScheduleType.INTERVAL}.get(
            given[0], ScheduleType.ONCE
        )
        schedule = Schedule(
            schedule_type=kind, func=template.func, args=template.args, kwargs=template.kwargs,
            queue_name=template.queue_name, priority=template.priority,
            max_retries=template.max_retries, timeout=template.timeout, cron_expression=cron,
            timezone=tz or "UTC", interval=interval, run_at=at, misfire=Misfire(misfire),
            max_instances=max_instances, max_runs=max_runs, created_at=now,
        )  # fmt: skip
        if id is not None:
            schedule.id = validate_id(id, "schedule id")
        return schedule

    async def schedule(
        self, fn: TaskFunction[Any] | Callable[..., Any] | str, **options: Any
    ) -> Schedule:
        """Store a schedule that turns ``fn`` into tasks: ``cron="0 9 * * *"`` (with ``tz=``),
        ``interval=`` (a ``timedelta`` or seconds) or ``at=`` (a one-shot datetime, not in the
        past). Options as ``build_schedule``. Saving an ``id=`` that exists updates its recipe
        and keeps its state (paused stays paused). Returns the stored ``Schedule``."""
        from omniq.scheduler import upsert_schedule

        schedule = self.build_schedule(fn, **options)
        await self.open()
        stored = await upsert_schedule(self.backend.schedule_storage, schedule, utcnow())
        self._schedules_changed()
        return stored

    def periodic(
        self,
        *,
        cron: str | None = None,
        tz: str | None = None,
        interval: timedelta | float | None = None,
        id: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        misfire: Misfire | str = Misfire.ONCE,
        max_instances: int | None = 1,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any]], TaskFunction[Any]]:
        """Register a task and its schedule: ``@app.periodic(cron="*/5 * * * *")``.

        The schedule's id is ``id`` or derived from the task name, so importing the module again
        declares the same schedule. It is saved (or its recipe updated) when a scheduler of this
        app starts — in every worker by default — not at import, when no store may be open.
        """

        def register(f: Callable[..., Any]) -> TaskFunction[Any]:
            tf: TaskFunction[Any] = self.task(f, **task_options)
            schedule = self.build_schedule(
                tf, cron=cron, tz=tz, interval=interval, args=args, kwargs=kwargs,
                id=id or periodic_id(tf.name), misfire=misfire, max_instances=max_instances,
            )  # fmt: skip
            self.periodic_schedules[schedule.id] = schedule
            return tf

        return register

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        await self.open()
        return await self.backend.schedule_storage.get_schedule(schedule_id)

    async def list_schedules(self, status: ScheduleStatus | str | None = None) -> list[Schedule]:
        """Stored schedules (all, or of one status: active, paused, completed)."""
        await self.open()
        return await self.backend.schedule_storage.list_schedules(status)

    async def pause_schedule(self, schedule_id: str) -> bool:
        """Stop firing a schedule; ``False`` if it is not active."""
        await self.open()
        done = await self.backend.schedule_storage.pause_schedule(schedule_id)
        self._schedules_changed()
        return done

    async def resume_schedule(self, schedule_id: str) -> bool:
        """Fire a paused schedule again from its next run time (runs missed meanwhile are not
        fired); ``False`` if it is not paused."""
        await self.open()
        done = await self.backend.schedule_storage.resume_schedule(schedule_id)
        self._schedules_changed()
        return done

    async def delete_schedule(self, schedule_id: str) -> bool:
        await self.open()
        done = await self.backend.schedule_storage.delete_schedule(schedule_id)
        self._schedules_changed()
        return done

    def _schedules_changed(self) -> None:
        for scheduler in list(self._schedulers):
            scheduler.invalidate()

    def scheduler(self, **options: Any) -> Scheduler:
        """A ``Scheduler`` over this app's store that also saves its ``@periodic`` schedules;
        changes made through this app reach it at its next tick. Options as ``Scheduler``."""
        from omniq.scheduler import Scheduler

        scheduler = Scheduler(self.backend, periodic=self.periodic_schedules.values(), **options)
        self._schedulers.add(scheduler)
        return scheduler

    # ------------------------------------------------------------------ workers

    async def run_worker(self, *args: Any, **kwargs: Any) -> WorkerStats:
        """Run a worker until SIGTERM/SIGINT or, with ``burst=True``, until idle.

        Takes the arguments of ``worker()``.
        """
        worker = self.worker(*args, **kwargs)
        with worker.handle_signals():
            return await worker.run()

    def worker(
        self,
        queues: Sequence[str] | str | None = None,
        concurrency: int = 4,
        kind: str = "thread",
        visibility_timeout: float | None = None,
        burst: bool = False,
        grace_period: float = 30.0,
        worker_id: str | None = None,
        scheduler: bool = True,
        cleanup_interval: float | None = 3600.0,
    ) -> Worker:
        """A ``Worker`` for this app: ``await worker.run()``, stopped by ``worker.stop()``.

        With ``scheduler`` (the default) the worker also runs a ``Scheduler``."""
        from omniq.worker import Worker

        return Worker(
            self, queues=queues or ["default"], concurrency=concurrency, kind=kind,
            visibility_timeout=visibility_timeout, burst=burst, grace_period=grace_period,
            worker_id=worker_id, scheduler=scheduler, cleanup_interval=cleanup_interval,
        )  # fmt: skip


def periodic_id(task_name: str) -> str:
    """A schedule id for a task name: ``periodic-<name>`` with unsafe characters replaced (and a
    hash of the name appended when any were, so two names never share an id)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", task_name)[:80]
    if safe != task_name:
        safe += "-" + hashlib.sha256(task_name.encode()).hexdigest()[:8]
    return f"periodic-{safe}"


@blocking_twins(AsyncTaskHandle)
class TaskHandle(SyncWrapper[AsyncTaskHandle]):
    """What ``OmniQ.enqueue`` and ``TaskFunction.delay`` return on the blocking app:
    ``handle.result(timeout=10)`` blocks and returns the value."""


@blocking_twins(AsyncOmniQ)
class OmniQ(SyncWrapper[AsyncOmniQ]):
    """The blocking app: ``OmniQ("./omniq_data")``; its methods return values directly.

    ``add.delay(1, 2)`` and ``app.enqueue(add, 1, 2)`` return a handle whose ``result(timeout)``
    blocks.
    """

    def __init__(
        self, backend: str | os.PathLike[str] | Backend | None = None, **settings: Any
    ) -> None:
        inner = AsyncOmniQ(backend, **settings)
        super().__init__(inner)
        inner._sync_facade = self  # type: ignore[attr-defined]

    def enqueue(self, fn: Any, *args: Any, **kwargs: Any) -> TaskHandle:
        """Enqueue a call of a registered task (or a function) with its options; see
        ``AsyncOmniQ.enqueue``. Returns a blocking handle."""
        return TaskHandle(run_sync(self.wrapped.enqueue(fn, *args, **kwargs)))

    def enqueue_task(self, task: Task) -> TaskHandle:
        """Enqueue a ready-made ``Task``; returns a blocking handle."""
        return TaskHandle(run_sync(self.wrapped.enqueue_task(task)))

    def run_worker(self, *args: Any, **kwargs: Any) -> WorkerStats:
        """Run a worker (blocking) until SIGTERM/SIGINT or, with ``burst=True``, until idle."""
        worker = self.wrapped.worker(*args, **kwargs)
        with worker.handle_signals():  # signals arrive in the main thread, not the loop's
            return run_sync(worker.run())

    def __repr__(self) -> str:
        return repr(self.wrapped).replace("<AsyncOmniQ", "<OmniQ", 1)

    def __enter__(self) -> OmniQ:
        run_sync(self.wrapped.open())
        return self

    def __exit__(self, *exc: Any) -> None:
        run_sync(self.wrapped.close())
