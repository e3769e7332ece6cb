"""Workers as real processes: process pools, signals, and SIGKILL fault injection (local disk)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import task_defs  # tests/worker is on sys.path (pytest rootdir-relative import)

from omniq import AsyncOmniQ
from omniq.backend.file import FileBackend
from omniq.backend.sqlite import SQLiteBackend
from omniq.models.event import EventType
from omniq.models.task import Task, TaskStatus

HERE = Path(__file__).parent


def worker_env(base: Path | str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env.update(OMNIQ_TEST_URL=str(base), PYTHONPATH=str(HERE), **extra)
    return env


def _kill_and_restart(
    workers: list, restart, drained, interval: float, timeout: float, max_kills: int = 8
) -> int:
    """Every ``interval`` seconds SIGKILL a random *busy* worker (one that has finished a task,
    so it is past its start-up and holds leases) and start a new one, until ``drained()`` or
    ``max_kills``; then wait for the drain and kill them all. Returns the number of kills.

    Killing only busy workers makes every kill interrupt work however slow the machine is (a
    worker still starting up has nothing to lose); the bound keeps a slow machine from a
    spiral of restarts (each costs a Python start-up) that would never drain."""
    kills = 0
    deadline = time.monotonic() + timeout
    try:
        while not drained():
            if time.monotonic() >= deadline:
                tails = "\n".join(
                    "\n".join(output_of(w).splitlines()[-12:]) for w in workers
                )  # fmt: skip
                pytest.fail(f"workers did not drain the queue ({kills} kills); they said:\n{tails}")
            time.sleep(interval)
            busy = [i for i, w in enumerate(workers) if " completed in " in output_of(w)]
            if kills >= max_kills or not busy:
                continue
            victim = random.choice(busy)
            workers[victim].kill()
            workers[victim].wait()
            kills += 1
            workers[victim] = restart()
    finally:
        for w in workers:
            w.kill()
            w.wait()
    return kills


async def _assert_each_completed_once(b: FileBackend, ids: list[str]) -> list[Task]:
    """Every task completed, with its result, nothing left pending or running; returns the
    tasks that were delivered more than once."""
    q, results = b.task_queue, b.result_storage
    assert await q.get_queue_size("default") == 0
    assert await b.objects.list("tasks/default/running") == []
    completed = await b.objects.list("tasks/default/completed")
    assert sorted(n.removesuffix(".json") for n in completed) == sorted(ids)
    redelivered = []
    for task_id in ids:
        result = await results.get(task_id)
        assert result is not None and result.is_success, task_id
        task = await q.get_task(task_id)
        assert task.status is TaskStatus.COMPLETED
        if task.attempts > 1:
            redelivered.append(task)
    return redelivered


def _count_finished(directory: Path) -> int:
    """Task files in a folder, without the temporary files of writes in progress."""
    if not directory.exists():
        return 0
    return sum(1 for n in os.listdir(directory) if not n.startswith("."))


def start_worker(base: Path | str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """Start ``omniq worker``. Its output goes to a temporary file (``output_of``), never to a
    pipe nobody reads: a worker logs a line per task, and a full pipe would stop it."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open for the life of the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq", "worker", "--app", "task_defs:app", *args],
        cwd=HERE, env=worker_env(base, **env), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output_of(proc: subprocess.Popen[bytes]) -> str:
    """What a worker started by ``start_worker`` has printed so far."""
    fd = proc.log.fileno()  # type: ignore[attr-defined]
    # pread: the worker shares this file's offset, so a seek here would move its writes.
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


async def test_process_kind_runs_in_other_processes(tmp_path):
    app = AsyncOmniQ(str(tmp_path / "data"))
    app.task(name="pid")(task_defs.pid.fn)
    handles = [await app.enqueue("pid") for _ in range(4)]
    stats = await app.run_worker(kind="process", concurrency=2, burst=True)
    assert stats.completed == 4
    pids = {await h.result(timeout=1) for h in handles}
    assert os.getpid() not in pids


@pytest.mark.slow
def test_sigterm_releases_running_task(tmp_path):
    base = tmp_path / "data"

    async def enqueue() -> str:
        app = AsyncOmniQ(str(base))
        app.task(name="sleep_for")(task_defs.sleep_for.fn)
        return (await app.enqueue("sleep_for", 30)).id

    task_id = asyncio.run(enqueue())
    proc = start_worker(base, "--grace-period", "0.5")

    async def state() -> Task | None:
        async with FileBackend(str(base)) as b:
            return await b.task_queue.get_task(task_id)

    deadline = time.monotonic() + 180  # a Python start-up on a loaded machine
    while asyncio.run(state()).status is not TaskStatus.RUNNING:
        assert time.monotonic() < deadline, "worker never started the task"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    out = output_of(proc)
    assert proc.returncode == 0, out
    assert "released 1" in out
    task = asyncio.run(state())
    assert task.status is TaskStatus.PENDING and task.attempts == 0


@pytest.mark.slow
def test_sigkill_fault_injection_loses_nothing(tmp_path):
    """4 workers drain 600 tasks while one is SIGKILLed and restarted every half second
    (eight times at most).

    Each task sleeps 16 ms, so the 16 slots need at least 2 s however fast the machine is:
    at least three kills land while work is in flight."""
    base = tmp_path / "data"
    n_tasks = 600

    async def fill() -> list[str]:
        app = AsyncOmniQ(str(base))
        app.task(name="sleep_for")(task_defs.sleep_for.fn)
        return [(await app.enqueue("sleep_for", 32 / n_tasks)).id for _ in range(n_tasks)]

    ids = asyncio.run(fill())
    opts = ("--concurrency", "4", "--visibility-timeout", "1")
    env = {"OMNIQ_REAP_INTERVAL": "0.5"}
    workers = [start_worker(base, *opts, **env) for _ in range(4)]
    completed_dir = base / "tasks" / "default" / "completed"
    kills = _kill_and_restart(
        workers, lambda: start_worker(base, *opts, **env),
        lambda: _count_finished(completed_dir) >= n_tasks, interval=0.5, timeout=240,
    )  # fmt: skip

    async def check() -> None:
        async with FileBackend(str(base)) as b:
            redelivered = await _assert_each_completed_once(b, ids)
            for task in redelivered:
                kinds = [e.event_type for e in await b.event_storage.get_events(task_id=task.id)]
                assert EventType.LEASE_EXPIRED in kinds, (task.id, kinds)
            assert kills >= 3 and redelivered, (kills, len(redelivered))
            print(f"{kills} kills, {len(redelivered)} tasks re-delivered")

    asyncio.run(check())


def _killed_task_is_redelivered(url: str, backend, env: dict[str, str]) -> None:
    """A worker killed mid-task: its lease outlives it, expires, and another worker re-runs
    the task. The task runs until the test releases it (a file appears), so the test sees it
    running however slowly it polls; it is released before the second delivery."""
    release = Path(tempfile.mkdtemp()) / "release"

    async def enqueue() -> str:
        app = AsyncOmniQ(backend())
        app.task(name="hold_until")(task_defs.hold_until.fn)
        async with app:
            return (await app.enqueue("hold_until", str(release), 600)).id

    async def state() -> Task | None:
        async with backend() as b:
            return await b.task_queue.get_task(task_id)

    task_id = asyncio.run(enqueue())
    first = start_worker(url, "--visibility-timeout", "1", **env)
    try:
        deadline = time.monotonic() + 180  # a Python start-up with s3fs on a loaded machine
        while asyncio.run(state()).status is not TaskStatus.RUNNING:
            assert time.monotonic() < deadline, "worker never started the task"
            time.sleep(0.1)
        first.kill()
        first.wait()
        orphan = asyncio.run(state())
        assert orphan.status is TaskStatus.RUNNING  # the lease outlives its worker
        wait = (orphan.lease.expires_at - datetime.now(timezone.utc)).total_seconds()
        time.sleep(max(0.0, wait) + 0.2)  # a burst worker only re-delivers expired leases
    finally:
        first.kill()
    release.touch()
    # The re-delivery's own lease is long: a 1 s one could expire under a loaded machine's
    # heartbeat lag and count a third delivery.
    second = start_worker(url, "--visibility-timeout", "60", "--burst", **env)
    second.wait(timeout=120)
    assert second.returncode == 0, output_of(second)

    async def check() -> None:
        async with backend() as b:
            task = await b.task_queue.get_task(task_id)
            assert task.status is TaskStatus.COMPLETED and task.attempts == 2, task
            result = await b.result_storage.get(task_id)
            assert result is not None and result.is_success and result.result == "released"
            kinds = [e.event_type for e in await b.event_storage.get_events(task_id=task_id)]
            # The killed delivery may leave no "started" (buffered until its first heartbeat):
            # its lease_expired event records it.
            assert EventType.LEASE_EXPIRED in kinds and EventType.COMPLETED in kinds, kinds
            if hasattr(b, "objects"):  # no lease object left behind either
                assert await b.objects.list("tasks/default/running") == []
            assert await b.task_queue.list_tasks(status=TaskStatus.RUNNING) == []

    asyncio.run(check())


@pytest.mark.slow
def test_sigkill_on_s3_task_is_redelivered_after_its_lease_expires(s3_server):
    import json

    url = s3_server.url()
    env = {"OMNIQ_STORAGE_OPTIONS": json.dumps(s3_server.options), "OMNIQ_REAP_INTERVAL": "0.3"}
    _killed_task_is_redelivered(
        url, lambda: FileBackend.from_url(url, fs_kwargs=dict(s3_server.options)), env
    )


@pytest.mark.slow
def test_sigkill_on_sqlite_task_is_redelivered_after_its_lease_expires(tmp_path):
    url = f"sqlite:///{tmp_path / 'omniq.db'}"
    env = {"OMNIQ_REAP_INTERVAL": "0.3"}
    _killed_task_is_redelivered(url, lambda: SQLiteBackend.from_url(url), env)


@pytest.mark.slow
@pytest.mark.parametrize(("s3_kind", "n_tasks"), [("moto", 40), ("seaweedfs", 30), ("rgw", 30)])
def test_sigkill_fault_injection_on_s3_loses_nothing(s3_target, n_tasks):
    """3 workers drain tasks from one S3 bucket while one is SIGKILLed and restarted every
    1.5 s: lease objects, settle records and take-overs leave every task completed. On moto,
    SeaweedFS, and moto answering as Ceph RGW (unquoted If-Match, DELETE conditions ignored)."""
    import json

    url = s3_target.url()
    env = {"OMNIQ_STORAGE_OPTIONS": json.dumps(s3_target.options), "OMNIQ_REAP_INTERVAL": "0.5"}

    def backend() -> FileBackend:
        return FileBackend.from_url(url, fs_kwargs=dict(s3_target.options))

    async def fill() -> list[str]:
        app = AsyncOmniQ(backend())
        # 36 s of task time: 6 slots need at least 6 s for them, counted from the first claim
        # however fast the machine is, and kills come every 1.5 s from the first finished task
        # (one task, 1.2 s, after the first claim): at least 3 kills, whatever the start-up.
        app.task(name="sleep_for")(task_defs.sleep_for.fn)
        async with app:
            return [(await app.enqueue("sleep_for", 36 / n_tasks)).id for _ in range(n_tasks)]

    async def finished() -> list[str]:
        async with backend() as b:
            return await b.objects.list("tasks/default/completed")

    ids = asyncio.run(fill())
    opts = ("--concurrency", "2", "--visibility-timeout", "1")
    workers = [start_worker(url, *opts, **env) for _ in range(3)]
    kills = _kill_and_restart(
        workers, lambda: start_worker(url, *opts, **env),
        lambda: len(asyncio.run(finished())) >= n_tasks, interval=1.5, timeout=180,
    )  # fmt: skip

    async def check() -> None:
        async with backend() as b:
            # Every worker is dead: once their leases expire, a reaper settles what the last
            # kills left mid-way (a lease whose task was already completed, say).
            await b.task_queue.requeue_expired(datetime.now(timezone.utc) + timedelta(seconds=120))
            redelivered = await _assert_each_completed_once(b, ids)
            assert kills >= 2, kills
            print(f"{kills} kills, {len(redelivered)} tasks re-delivered")

    asyncio.run(check())
