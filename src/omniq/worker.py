"""The worker: claims tasks, runs them (async, thread or process), keeps their leases alive,
records results and events, retries with back-off, and shuts down without losing work."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import logging
import math
import os
import random
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from omniq.daemon_pool import DaemonThreadPool
from omniq.exceptions import (
    ConfigError,
    LeaseLostError,
    SerializationError,
    SettleDeferredError,
    StorageError,
    TaskNotRegisteredError,
    ValidationError,
)
from omniq.models._time import check_seconds, utcnow
from omniq.models.event import EventType, TaskEvent
from omniq.models.ids import validate_name
from omniq.models.result import ResultStatus, TaskResult
from omniq.models.task import Task, TaskStatus

if TYPE_CHECKING:
    from omniq.app import AsyncOmniQ, TaskFunction

logger = logging.getLogger("omniq.worker")

KINDS = ("thread", "process", "async")
CLEANUP_ID = "omniq-cleanup"  # run claims under this id let one worker per interval clean up
MAX_BACKOFF = 3600.0


@contextlib.contextmanager
def _recorded(task: Task) -> Iterator[None]:
    """A requeue whose fence landed is recorded, even if the rest of its settle was refused
    (``SettleDeferredError``): a reaper completes it. The caller carries on as if it had been
    written in full (``_finish`` does the same for a finish)."""
    try:
        yield
    except SettleDeferredError as exc:
        logger.warning("task %s: %s", task.id, exc)


#: A throttled outcome is written again only while the lease has at least this much left
#: after the wait: the fence must land before a reaper may take the lease over.
OUTCOME_MARGIN_SECONDS = 2.0
#: How long after the store last throttled (or answered with a transient error) a slot
#: waits for its outcome again.
THROTTLED_SECONDS = 30.0


@dataclass
class WorkerStats:
    """What a worker did: counts per outcome."""

    worker_id: str
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    lost: int = 0
    released: int = 0
    started_at: float = field(default_factory=time.time)


def _claim(task: Task) -> tuple[str, int]:
    """A claim's key: its task's id and the object the worker holds it by (one per claim, kept
    from the dequeue to the last event; a later claim of the same task is another object)."""
    return task.id, id(task)


def default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "_-" else "_" for c in socket.gethostname())[:40]
    return f"{host or 'host'}_{os.getpid()}"


def backoff(retry_delay: float, attempt: int) -> float:
    """Exponential back-off with jitter: retry_delay * 2^(attempt-1), scaled by 0.5-1.0."""
    base: float = min(MAX_BACKOFF, retry_delay * (2.0 ** max(0, attempt - 1)))
    return base * random.uniform(0.5, 1.0)


def run_in_process(
    module: str, qualname: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Entry point in a pool process: import the task's module and call the plain function."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    fn = getattr(target, "fn", target)  # a TaskFunction wraps the plain function
    return fn(*args, **kwargs)


def remote_traceback(error: BaseException) -> str:
    """The traceback of a task's exception without the worker's own frames above the task."""
    frames = traceback.extract_tb(error.__traceback__)
    skip = (os.sep + "omniq" + os.sep + "worker.py", os.sep + "omniq" + os.sep + "daemon_pool.py",
            os.sep + "asyncio" + os.sep,
            os.sep + "concurrent" + os.sep)  # fmt: skip
    kept = [
        f
        for f in frames
        if not f.filename.endswith(skip) and not any(s in f.filename for s in skip)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(kept)]
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines)


class _Heartbeat:
    """A task's lease renewals: ``beat()`` (a coroutine) runs from ``delay`` seconds after the
    claim until ``cancel()``. Started by a timer, so that the many tasks that end sooner
    never cost a coroutine of their own."""

    def __init__(self, beat: Callable[[], Coroutine[Any, Any, None]], delay: float) -> None:
        self._beat = beat
        self._running: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._running = asyncio.create_task(self._beat())

    def cancel(self) -> None:
        self._timer.cancel()
        if self._running is not None:
            self._running.cancel()


class _Timeout(Exception):
    pass


class Worker:
    """``Worker(app, queues=["high", "default"], concurrency=4, kind="thread")``; ``await run()``.

    ``kind`` is how plain functions run: ``thread`` (default), ``process`` (a spawned process
    pool; the function must be importable by module and name), or ``async`` (only ``async def``
    tasks). ``async def`` tasks always run on the worker's loop. A task past its ``timeout`` is
    cancelled (async) or abandoned (thread/process: the call keeps running, its result is
    dropped) and counts as a failed attempt. With ``scheduler`` (the default) the worker also
    runs the app's ``Scheduler``: due schedule runs become tasks, once each however many workers
    run.
    """

    def __init__(
        self,
        app: AsyncOmniQ,
        queues: Sequence[str] | str = ("default",),
        concurrency: int = 4,
        kind: str = "thread",
        visibility_timeout: float | None = None,
        burst: bool = False,
        grace_period: float = 30.0,
        worker_id: str | None = None,
        scheduler: bool = True,
        cleanup_interval: float | None = 3600.0,
    ) -> None:
        if isinstance(queues, str):
            queues = [q for q in queues.split(",") if q]
        self.queues = [validate_name(q) for q in queues]
        if not self.queues:
            raise ValidationError("a worker needs at least one queue")
        if kind not in KINDS:
            raise ValidationError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        visibility_timeout = check_seconds(
            visibility_timeout, "visibility_timeout", allow_zero=False
        )
        grace_period = check_seconds(grace_period, "grace_period") or 0.0
        self.cleanup_interval = check_seconds(
            cleanup_interval, "cleanup_interval", allow_zero=False
        )
        self.app = app
        self.backend = app.backend
        self.kind = kind
        self.concurrency = concurrency
        config = getattr(self.backend, "config", None)
        default_timeout: float = getattr(config, "visibility_timeout", 60.0)
        self.visibility_timeout = visibility_timeout or default_timeout
        self.burst = burst
        self.grace_period = grace_period
        self.worker_id = worker_id or default_worker_id()
        self.stats = WorkerStats(self.worker_id)
        self._stop = asyncio.Event()
        self._force = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._running: dict[asyncio.Task[None], Task] = {}
        #: Runners whose task function has not returned: what ``concurrency`` bounds. Once it
        #: returns, its slot takes the next task while the outcome is written (see _free_slot).
        self._executing: set[asyncio.Task[None]] = set()
        self._throttled_at = -math.inf  # monotonic time the store last throttled us
        self._throttles_seen = 0  # the store's count of throttling answers, as last seen
        self._objects: Any = None  # the backend's object store (file backends), for that count
        self._wake: asyncio.Future[None] | None = None  # the main loop waiting for a slot
        #: Buffered events of each claim (``_claim``): a task retried at once can be claimed
        #: again here while the outcome of its last attempt is still being written.
        self._events: dict[tuple[str, int], list[TaskEvent]] = {}
        self._processes: concurrent.futures.ProcessPoolExecutor | None = None
        self._threads: DaemonThreadPool | None = None
        self._trouble = 0  # claims in a row that failed with a storage error
        self.scheduler = app.scheduler(owner=self.worker_id) if scheduler else None

    # ------------------------------------------------------------------ control

    def stop(self, force: bool = False) -> None:
        """Stop claiming and shut down gracefully; thread-safe. ``force`` skips the grace period."""
        loop = self._loop
        if loop is not None and threading.current_thread() is not self._loop_thread:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._request_stop, force)
                return
        self._request_stop(force)

    def _request_stop(self, force: bool) -> None:
        if self._stop.is_set():
            force = True  # a second signal means now
        self._force = self._force or force
        self._stop.set()
        self._poke()

    @contextlib.contextmanager
    def handle_signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT stop the worker gracefully (a second one: at once). Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            logger.info("worker %s: got signal %d, shutting down", self.worker_id, signum)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> WorkerStats:
        """Work until stopped, or with ``burst`` until no task is runnable now."""
        self._check_kind()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        if self.kind == "process":
            import multiprocessing

            self._processes = concurrent.futures.ProcessPoolExecutor(
                self.concurrency, mp_context=multiprocessing.get_context("spawn")
            )
        else:  # threads start on first use: an async worker normally needs none
            self._threads = DaemonThreadPool(self.concurrency)
        await self.app.open()
        self._check_store()
        self._objects = getattr(self.backend, "objects", None)  # file backends have one
        self._throttles_seen = self._store_throttles()  # what the app met before is not news
        queue = self.backend.task_queue
        self._banner()
        # A burst worker fires the due schedule runs once, when it is out of work (so that its
        # first claim is not held up by the schedule reads), and drains what they enqueued.
        burst_schedule = self.scheduler is not None and self.burst
        scheduling = None
        if self.scheduler and not self.burst:
            scheduling = asyncio.create_task(self.scheduler.run())
        cleaning = None
        if self.cleanup_interval and not self.burst:
            cleaning = asyncio.create_task(self._cleanup_loop(self.cleanup_interval))
        reaping = None
        try:
            if self.burst:  # what it re-delivers is work for this burst
                await self._reap()
            else:  # claims start at once: on a bucket the reap reads every lease there is
                reaping = asyncio.create_task(self._reap_beside())
            while not self._stop.is_set():
                if not await self._free_slot():
                    break
                try:
                    task = await queue.dequeue(
                        self.queues,
                        timeout=None if self.burst else 0.5,
                        visibility_timeout=self.visibility_timeout,
                        worker_id=self.worker_id,
                    )
                except StorageError as exc:
                    if self.burst:
                        raise
                    await self._store_trouble(exc)
                    continue
                self._trouble = 0
                if task is None:
                    if self.burst:
                        if not self._running and burst_schedule and self.scheduler:
                            burst_schedule = False
                            if await self.scheduler.run_once():
                                continue
                        if not self._running:
                            break
                        await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
                    continue
                self.stats.claimed += 1
                runner = asyncio.create_task(self._execute(task))
                self._running[runner] = task
                self._executing.add(runner)
                runner.add_done_callback(self._done)
            await self._shutdown()
        finally:
            for chore in (cleaning, reaping):
                if chore:  # a reap stopped half-way is a reaper that died: the next completes
                    chore.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await chore
            if self.scheduler and scheduling:
                self.scheduler.stop()  # it finishes the run it is deciding
                await scheduling
            if self._threads:
                self._threads.shutdown()
            if self._processes:
                # Processes still running abandoned (timed-out or released) calls are ended:
                # otherwise interpreter exit would wait for them.
                for proc in list(getattr(self._processes, "_processes", {}).values()):
                    proc.terminate()
                self._processes.shutdown(wait=False, cancel_futures=True)
        return self.stats

    async def _cleanup_loop(self, interval: float) -> None:
        """Every ``interval`` seconds, try to be the worker that cleans up (see ``cleanup``)."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                return
            await self.cleanup(interval)

    async def cleanup(self, interval: float) -> bool:
        """Delete what is past its ttl, if no worker did in this ``interval``-long window.

        The window's run of ``CLEANUP_ID`` is claimed through the schedule store (an exclusive
        create: one request, one winner however many workers try); ``False`` if another worker
        holds it. Claims of earlier windows are removed by the winner."""
        now = utcnow()
        window = datetime.fromtimestamp(now.timestamp() // interval * interval, timezone.utc)
        store = self.backend.schedule_storage
        try:
            claim = await store.claim_run(
                CLEANUP_ID, window, owner=self.worker_id, now=now, stale_after=interval
            )
            if claim is None:
                return False
            counts = await self.backend.cleanup_expired()
            await store.forget_runs(CLEANUP_ID, before=window)
        except StorageError as exc:
            logger.error("worker %s: cleanup failed (%s); next try in %g s", self.worker_id,
                         exc, interval)  # fmt: skip
            return False
        removed = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n)
        logger.info("worker %s: cleanup removed %s", self.worker_id,
                    removed or "nothing (nothing past its ttl)")  # fmt: skip
        return True

    async def _store_trouble(self, exc: StorageError) -> None:
        """The store failed a claim (unreachable, unreadable): wait, with growing pauses up to
        ``MAX_STORE_PAUSE``, and try again instead of dying."""
        self._trouble += 1
        pause = min(self.MAX_STORE_PAUSE, 0.5 * 2 ** min(self._trouble, 10))
        logger.error("worker %s: claiming failed (%s); retrying in %.0f s", self.worker_id, exc,
                     pause)  # fmt: skip
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), pause)

    MAX_STORE_PAUSE = 30.0

    def _check_kind(self) -> None:
        """A kind that cannot run some registered task is a setup mistake: refuse to start
        rather than fail those tasks for good when they arrive."""
        if self.kind != "async":
            return
        plain = sorted(name for name, tf in self.app.registry.items() if not tf.is_async)
        if plain:
            raise ConfigError(
                f"kind='async' runs only async def tasks, but this app registers plain "
                f"functions: {', '.join(plain)}; run the worker with kind='thread' or 'process'"
            )

    def _banner(self) -> None:
        """What this worker is about to do, a line each (INFO)."""
        from omniq import __version__
        from omniq.logs import redact

        names = sorted(self.app.registry)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        lines = [
            f"OmniQ {__version__} worker {self.worker_id} starting",
            f"  location:           {redact(str(getattr(self.backend, 'url', self.backend)))}",
            f"  tasks:              {shown or '(none registered)'}",
            f"  queues:             {', '.join(self.queues)} (in this order)",
            f"  concurrency:        {self.concurrency} ({self.kind})",
            f"  visibility timeout: {self.visibility_timeout:g} s",
            f"  scheduler:          {'on' if self.scheduler else 'off'}"
            + (" (burst: stops when out of work)" if self.burst else ""),
            "  cleanup:            "
            + (f"every {self.cleanup_interval:g} s (one worker of all)"
               if self.cleanup_interval and not self.burst else "off"),
        ]  # fmt: skip
        for line in lines:
            logger.info(line, extra={"worker_id": self.worker_id})

    def _check_store(self) -> None:
        """Refuse concurrent claims on a store that cannot make them race-free."""
        objects: Any = getattr(self.backend, "objects", None)  # file backends have one
        if objects is not None and not objects.capabilities.safe_claims and self.concurrency > 1:
            raise ConfigError(
                f"{objects.url} offers neither an atomic rename nor usable conditional writes "
                "(create + compare-and-swap; the start-up probe logged what it found), so two "
                "claims of one task could both succeed: run a single worker with concurrency=1"
            )

    async def _free_slot(self) -> bool:
        """Wait until fewer than ``concurrency`` task functions run; ``False`` if a stop comes
        first. A slot is free once its function returns: the next claim overlaps the writing
        of the outcome (on a bucket both take a few round trips, and a fleet of 2-s tasks spent
        ~7% of its time finishing with the slot idle); a worker holds at most twice
        ``concurrency`` tasks, running or being finished. (One future per wait, woken by
        ``_done``, ``_slot_freed`` and a stop: a semaphore raced against the stop event cost
        two tasks and a wait per claim.)"""
        while self._slots_full() and not self._stop.is_set():
            self._wake = asyncio.get_running_loop().create_future()
            if self._stop.is_set():  # a signal handler's stop can land between two lines
                break
            await self._wake
        return not self._stop.is_set()

    def _slots_full(self) -> bool:
        """Whether a claim must wait. While the store throttles or answers with transient
        errors (and for ``THROTTLED_SECONDS`` after), a slot waits for its outcome again:
        claims made meanwhile added writes to a throttled store, outcomes ran out of lease, and
        tasks ran twice (simulated GCS, 100 workers of 0.2-s tasks: 3 and 10 of 18,000)."""
        seen = self._store_throttles()
        if seen != self._throttles_seen:
            self._throttles_seen, self._throttled_at = seen, time.monotonic()
        if len(self._executing) >= self.concurrency:
            return True
        throttled = time.monotonic() - self._throttled_at < THROTTLED_SECONDS
        return len(self._running) >= (1 if throttled else 2) * self.concurrency

    def _store_throttles(self) -> int:
        """The store's count of throttled (and other transient) answers it retried."""
        return self._objects.throttled if self._objects is not None else 0

    def _poke(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _slot_freed(self) -> None:
        """The current runner's task function has returned (or will not run)."""
        runner = asyncio.current_task()
        if runner in self._executing:
            self._executing.discard(runner)
            self._poke()

    def _done(self, runner: asyncio.Task[None]) -> None:
        self._running.pop(runner, None)
        self._executing.discard(runner)
        self._poke()
        if not runner.cancelled() and runner.exception() is not None:
            logger.error("task runner crashed", exc_info=runner.exception())

    async def _reap(self) -> None:
        """Re-queue tasks of dead workers (the backend records their events) and remove the
        temporary files killed writers left in this worker's queues. A burst worker re-queues
        every expired task (its work for the burst); a long-running one reaps while it claims,
        the lighter way (``reap_at_start``), as the reaper keeps doing afterwards."""
        queue = self.backend.task_queue
        try:
            await (queue.requeue_expired() if self.burst else queue.reap_at_start())
            await self.backend.sweep_temp_files(self.queues)
        except StorageError as exc:
            logger.error(
                "worker %s: start-up reaping failed (%s); carrying on", self.worker_id, exc
            )

    async def _reap_beside(self) -> None:
        """``_reap`` beside the claims: whatever goes wrong is logged, and claiming goes on
        (the reaper's turns come back to it)."""
        try:
            await self._reap()
        except Exception:
            logger.exception("worker %s: start-up reaping failed; carrying on", self.worker_id)

    async def _shutdown(self) -> None:
        if not self._running:
            logger.info("worker %s: stopping, no task running", self.worker_id)
            return
        if not self._force:
            logger.info(
                "worker %s: stopping, waiting up to %g s for %d running task(s)",
                self.worker_id, self.grace_period, len(self._running),
            )  # fmt: skip
            deadline = time.monotonic() + self.grace_period
            while self._running and not self._force and time.monotonic() < deadline:
                await asyncio.wait(
                    set(self._running), timeout=min(0.1, max(0.0, deadline - time.monotonic()))
                )
        left = list(self._running)
        for runner in left:
            runner.cancel()  # _execute releases its task back to pending
        if left:
            released = self.stats.released
            await asyncio.wait(left)
            logger.info(
                "worker %s: %d unfinished task(s) released back to their queues",
                self.worker_id, self.stats.released - released,
            )  # fmt: skip

    # ------------------------------------------------------------------ one task

    def _event_of(self, task: Task, kind: EventType, message: str | None = None) -> TaskEvent:
        return TaskEvent(
            task_id=task.id, event_type=kind, message=message, queue_name=task.queue_name,
            worker_id=self.worker_id, attempt=task.attempts,
        )  # fmt: skip

    def _note(self, task: Task, kind: EventType, message: str | None = None) -> None:
        """Buffer an event of a running task; ``_flush`` writes the buffer as one object, or
        the finish stores it in the task's record."""
        self._events.setdefault(_claim(task), []).append(self._event_of(task, kind, message))

    async def _finish(
        self, task: Task, status: TaskStatus, result: TaskResult, event: TaskEvent,
        error: str | None = None,
    ) -> None:  # fmt: skip
        """Finish the task with its result and events in one step (its record). The buffered
        events stay buffered if it fails, so that ``_execute`` still writes them."""
        buffered = self._events.pop(_claim(task), [])
        try:
            await self.backend.task_queue.finish_task(
                task, status, error, result=result, events=[*buffered, event]
            )
        except SettleDeferredError as exc:  # recorded, its events with it: a reaper settles it
            logger.warning("task %s: %s", task.id, exc)
        except BaseException:
            if buffered:
                self._events[_claim(task)] = buffered + self._events.get(_claim(task), [])
            raise

    async def _flush(self, task: Task) -> None:
        key = _claim(task)
        events = self._events.pop(key, None)
        if not events:
            return
        try:
            await self.backend.event_storage.log_events(events)
        except asyncio.CancelledError:  # kept for the next flush (written twice, maybe: not lost)
            self._events[key] = events + self._events.get(key, [])
            raise
        except Exception:
            kinds = ", ".join(e.event_type.value for e in events)
            logger.exception("could not record %s event(s) of task %s", kinds, task.id)

    async def _event(self, task: Task, kind: EventType, message: str | None = None) -> None:
        """Record an event now, with any buffered before it (one object, one request)."""
        self._note(task, kind, message)
        await self._flush(task)

    async def _heartbeat(self, task: Task, lock: asyncio.Lock, lost: asyncio.Future[None]) -> None:
        """Renew the lease now and every third of the visibility timeout (``_Heartbeat``
        starts it a third of the timeout after the claim)."""
        while True:
            async with lock:
                try:
                    await self.backend.task_queue.renew_lease(task, self.visibility_timeout)
                except LeaseLostError:
                    if not lost.done():
                        lost.set_result(None)
                    return
                except Exception:
                    logger.exception("lease renewal of task %s failed; will retry", task.id)
                # A long task's "started" shows up by its first heartbeat. Under the lock: the
                # outcome waits for it rather than cancelling the heartbeat in the middle.
                await self._flush(task)
            await asyncio.sleep(self.visibility_timeout / 3)

    async def _execute(self, task: Task) -> None:
        # ``lost`` is a future, not an event: ``_invoke`` waits on it directly, with no task.
        lock, lost = asyncio.Lock(), asyncio.get_running_loop().create_future()
        heartbeat = _Heartbeat(
            functools.partial(self._heartbeat, task, lock, lost), self.visibility_timeout / 3
        )
        started = time.monotonic()
        # Buffered: a short task's started and finished events are written as one object.
        self._note(task, EventType.STARTED)
        try:
            await self._run(task, lock, lost, heartbeat, started)
        finally:
            await self._flush(task)

    async def _run(
        self, task: Task, lock: asyncio.Lock, lost: asyncio.Future[None],
        heartbeat: _Heartbeat, started: float,
    ) -> None:  # fmt: skip
        value: Any = None
        error: BaseException | None = None
        permanent = False
        try:
            tf = self.app.resolve(task.func)
            value = await self._invoke(tf, task, lost)
        except TaskNotRegisteredError as exc:
            error, permanent = exc, True
        except asyncio.CancelledError:
            await self._release(task, lock, heartbeat)
            raise
        except _Timeout:
            error = TimeoutError(f"timed out after {task.timeout} s")
        except LeaseLostError as exc:
            error = exc
        except Exception as exc:
            error = exc
        finally:
            self._slot_freed()
        try:
            await lock.acquire()  # a renewal may hold it
        except asyncio.CancelledError:  # stopped meanwhile: the task goes back
            await self._release(task, lock, heartbeat)
            raise
        try:
            heartbeat.cancel()
            if lost.done():
                self.stats.lost += 1
                logger.warning("task %s: lease lost while running; its outcome is dropped", task.id)
                return
            try:
                if error is None:
                    await self._succeed_in_time(task, value, time.monotonic() - started)
                else:
                    await self._fail(task, error, permanent)
            except LeaseLostError:
                self.stats.lost += 1  # logged by the queue: a late result never overwrites
            except StorageError as exc:
                await self._unrecorded(task, exc, ran_ok=error is None)
        finally:
            lock.release()

    async def _unrecorded(self, task: Task, exc: StorageError, ran_ok: bool) -> None:
        """The outcome could not be written (a full disk, say). A task that succeeded counts a
        failed attempt with the storage error (retried with back-off, or dead-lettered), rather
        than running again at every lease expiry; if even that cannot be written, the lease
        expires and a reaper re-delivers the task once the store is writable again."""
        logger.error("task %s: could not record its outcome: %s", task.id, exc)
        if ran_ok:
            try:
                await self._fail(task, exc, permanent=False)
                return
            except (LeaseLostError, StorageError) as again:
                exc = again if isinstance(again, StorageError) else exc
        self.stats.lost += 1
        logger.error(
            "task %s stays claimed until its lease expires (%s); a reaper will re-deliver it",
            task.id, exc,
        )  # fmt: skip

    async def _invoke(self, tf: TaskFunction[Any], task: Task, lost: asyncio.Future[None]) -> Any:
        if tf.is_async:
            call: Any = tf.fn(*task.args, **task.kwargs)
        elif self.kind == "process":
            assert self._processes is not None
            call = asyncio.get_running_loop().run_in_executor(
                self._processes, run_in_process, tf.__module__, tf.__qualname__,
                task.args, task.kwargs,
            )  # fmt: skip
        else:  # thread; under kind="async" too for a function registered after the start
            assert self._threads is not None
            call = self._threads.submit(functools.partial(tf.fn, *task.args, **task.kwargs))
        work = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({work, lost}, timeout=task.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        except asyncio.CancelledError:
            work.cancel()
            raise
        if work in done:
            return work.result()
        work.cancel()  # async: cancelled; thread/process: abandoned, its result dropped
        if lost.done():
            raise LeaseLostError(f"lease of task {task.id} was lost while it ran")
        raise _Timeout()

    async def _succeed(self, task: Task, value: Any, duration: float) -> None:
        result = TaskResult(
            task_id=task.id, status=ResultStatus.SUCCESS, result=value, attempts=task.attempts,
            worker_id=self.worker_id, started_at=task.started_at, ttl=task.ttl,
            metadata={"duration": duration},
        )  # fmt: skip
        # One step: the finish is fenced by the lease and stores the result and the events
        # with it, so a stale worker overwrites nothing and a crash before it only repeats
        # the task. A value that cannot be stored fails the task, before anything is written.
        completed = self._event_of(task, EventType.COMPLETED, f"in {duration:.3f} s")
        try:
            await self._finish(task, TaskStatus.COMPLETED, result, completed)
        except SerializationError as exc:
            await self._fail(task, exc, permanent=True)
            return
        self.stats.completed += 1
        self._outcome(task, "completed", duration)

    async def _succeed_in_time(self, task: Task, value: Any, duration: float) -> None:
        """``_succeed``; while the store throttles (``StorageError.transient``), retried with
        back-off as long as the lease leaves time. Giving up turns a run that succeeded into
        a failed attempt, so the task runs again: under a 503 storm most reruns came from this.
        A worker that is stopping gives up at once (the old way), so its shutdown is not held."""
        wait = 0.5
        while True:
            try:
                await self._succeed(task, value, duration)
                return
            except StorageError as exc:
                left = (task.lease.expires_at - utcnow()).total_seconds() if task.lease else 0.0
                stopping = self._stop.is_set()
                if not exc.transient or stopping or left < wait + OUTCOME_MARGIN_SECONDS:
                    raise
                logger.warning("task %s: the store is throttling (%s); its outcome is written "
                               "again in %.1f s", task.id, exc, wait)  # fmt: skip
                with contextlib.suppress(TimeoutError):  # a stop ends the wait
                    await asyncio.wait_for(self._stop.wait(), wait)
                wait = min(wait * 2, 5.0)

    def _outcome(
        self, task: Task, outcome: str, duration: float | None, detail: str = "",
        level: int = logging.INFO, attempt: int | None = None,
    ) -> None:  # fmt: skip
        """One log line per task outcome: task name, id, outcome, duration, attempt."""
        took = f" in {duration:.3f} s" if duration is not None else ""
        attempt = task.attempts if attempt is None else attempt
        logger.log(
            level, "%s %s %s%s (attempt %d of %d)%s", task.func, task.id, outcome, took,
            attempt, task.max_retries + 1, f" {detail}" if detail else "",
            extra={"worker_id": self.worker_id, "task": task.func, "task_id": task.id,
                   "queue": task.queue_name, "outcome": outcome, "duration": duration,
                   "attempt": attempt},
        )  # fmt: skip

    async def _fail(self, task: Task, error: BaseException, permanent: bool) -> None:
        queue = self.backend.task_queue
        message = f"{type(error).__name__}: {error}"
        tb = remote_traceback(error)
        if not permanent and task.attempts <= task.max_retries:
            wait = backoff(task.retry_delay, task.attempts)
            with _recorded(task):
                await queue.requeue_task(
                    task, eta=utcnow() + timedelta(seconds=wait), error=message
                )
            self.stats.retried += 1
            self._outcome(task, "retrying", None, f"in {wait:.1f} s: {message}", logging.WARNING)
            await self._event(task, EventType.RETRIED, f"{message}; retry in {wait:.2f} s")
            return
        result = TaskResult(
            task_id=task.id, status=ResultStatus.FAILED, error=message, traceback=tb,
            attempts=task.attempts, worker_id=self.worker_id, started_at=task.started_at,
            ttl=task.ttl,
        )  # fmt: skip
        failed = self._event_of(task, EventType.FAILED, message)
        await self._finish(task, TaskStatus.FAILED, result, failed, error=message)
        self.stats.failed += 1
        self._outcome(task, "failed", None, message, logging.ERROR)

    async def _release(self, task: Task, lock: asyncio.Lock, heartbeat: _Heartbeat) -> None:
        """Give an unfinished task back (shutdown): not lost, and this attempt does not count.
        The heartbeat ends under the lock, never in the middle of a renewal: a renewal that
        reached the store but not its answer would leave the task's lease version stale, and
        the requeue would be refused as if the lease were lost (the task stayed running)."""
        async with lock:
            heartbeat.cancel()
            attempt = task.attempts
            task.attempts = max(0, task.attempts - 1)
            try:
                with _recorded(task):
                    await self.backend.task_queue.requeue_task(
                        task, error="released at worker shutdown"
                    )
                self.stats.released += 1
                self._outcome(task, "released", None, "back to its queue, not counted",
                              attempt=attempt)  # fmt: skip
            except LeaseLostError:
                pass
