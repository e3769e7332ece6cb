"""Three worker processes, each running its scheduler, share an every-second schedule: each run
becomes one task, and a pause stops it (local disk)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_processes import start_worker, worker_env  # tests/worker is on sys.path

from omniq import AsyncOmniQ
from omniq.models.event import EventType


async def _runs(app: AsyncOmniQ) -> list[str]:
    """The run times of the tasks the schedule enqueued, whatever became of them."""
    tasks = await app.backend.task_queue.list_tasks()
    return sorted(t.metadata["scheduled_for"] for t in tasks if "scheduled_for" in t.metadata)


@pytest.mark.slow
def test_three_workers_enqueue_each_run_once_and_pause_stops_it(tmp_path: Path) -> None:
    base = tmp_path / "data"
    app = AsyncOmniQ(str(base))
    schedule = asyncio.run(app.schedule("pid", interval=1, max_instances=None))
    workers = [start_worker(base, "--worker-id", f"w{i}") for i in range(3)]
    try:
        deadline = time.monotonic() + 90
        while len(asyncio.run(_runs(app))) < 8:
            assert time.monotonic() < deadline, "the schedule did not fire"
            assert all(w.poll() is None for w in workers), "a worker exited"
            time.sleep(0.5)
        assert asyncio.run(app.pause_schedule(schedule.id))
        at_pause = len(asyncio.run(_runs(app)))
        time.sleep(2)
        settled = asyncio.run(_runs(app))
        assert len(settled) <= at_pause + 1  # a run decided as the pause came may still land
        time.sleep(3)
        assert asyncio.run(_runs(app)) == settled  # paused: nothing more
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
    events = asyncio.run(app.backend.event_storage.get_events())
    enqueued = Counter(e.task_id for e in events if e.event_type is EventType.ENQUEUED)
    fired = Counter(e.task_id for e in events if e.event_type is EventType.SCHEDULE_FIRED)
    assert len(fired) == len(settled)
    assert set(fired.values()) == {1} and set(enqueued.values()) == {1}  # each run once
    assert len(set(settled)) == len(settled)
    firers = {e.data.get("run_at"): e for e in events if e.event_type is EventType.SCHEDULE_FIRED}
    assert sorted(firers) == settled


def test_omniq_scheduler_runs_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    base = tmp_path / "data"
    app = AsyncOmniQ(str(base))
    asyncio.run(app.schedule("add", interval=1, args=(1, 2)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq", "--url", str(base), "scheduler", "--poll-interval", "0.2"],
        env=worker_env(base), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not asyncio.run(_runs(app)):
            assert time.monotonic() < deadline, "the scheduler fired nothing"
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    pending = asyncio.run(app.backend.task_queue.list_tasks(status="pending"))
    assert pending and pending[0].func == "add" and pending[0].args == (1, 2)
