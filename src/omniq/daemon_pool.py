"""A bounded pool of daemon threads that runs blocking task calls for a worker.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at interpreter exit,
so a task stuck in a blocking call would keep a stopped worker's process alive, and a call that
timed out cannot be given up. Here a call is abandoned by cancelling its future: its thread
leaves the pool at once (a fresh one takes its place when needed, so stuck calls never use up
the pool) and exits when the call finally returns. Starting a thread per call instead costs
~100 µs per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any


class _Job:
    __slots__ = ("abandoned", "fn", "future", "loop", "running")

    def __init__(
        self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.fn, self.loop, self.future = fn, loop, future
        self.abandoned = self.running = False


class DaemonThreadPool:
    """``submit(fn)`` runs ``fn()`` in one of at most ``size`` daemon threads (not counting
    threads still busy with abandoned calls) and returns an asyncio future of its outcome;
    cancelling that future abandons the call. ``shutdown()`` lets idle threads exit."""

    def __init__(self, size: int, name: str = "omniq-task") -> None:
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one token per thread waiting for a job
        self._lock = threading.Lock()
        self._threads = 0  # threads serving the pool; abandoned ones are replaced
        self.started = 0  # threads ever started (tests)
        self._closed = False

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        if self._closed:
            raise RuntimeError("this thread pool is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = _Job(fn, loop, future)
        future.add_done_callback(lambda f: self._abandon(job) if f.cancelled() else None)
        self._jobs.put(job)
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._threads < self.size:
                    self._threads += 1
                    self.started += 1
                    threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        return future

    def shutdown(self) -> None:
        """Idle threads exit; busy ones exit after their call. Submitting again is an error."""
        with self._lock:
            count, self._threads, self._closed = self._threads, 0, True
        for _ in range(count):
            self._jobs.put(None)

    def _abandon(self, job: _Job) -> None:
        with self._lock:
            job.abandoned = True
            if not job.running or self._closed:
                return  # not started: it never will
            self.started += 1
        # Its thread leaves the pool (it exits when the call returns): a fresh one takes its
        # place, for the calls queued behind it and those to come.
        threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                skip = job.abandoned
                job.running = not skip
            if not skip:
                try:
                    outcome = (True, job.fn())
                except BaseException as exc:  # delivered to the awaiting coroutine
                    outcome = (False, exc)
                with self._lock:
                    job.running = False
                    abandoned = job.abandoned  # then it was replaced in the pool already
                if not abandoned:
                    self._idle.release()  # idle before the caller hears back: it may submit
                with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                    job.loop.call_soon_threadsafe(_deliver, job.future, *outcome)
                if abandoned:
                    return
                del job, outcome
            else:
                self._idle.release()


def _deliver(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():
        (future.set_result if ok else future.set_exception)(value)
