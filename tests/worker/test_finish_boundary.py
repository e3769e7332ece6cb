"""A worker SIGKILLed inside the one-write finish (local disk): between the fence (the lease
renewal) and the record write, in the middle of the record's append (part of it written), and
between the record write and its move to ``completed/``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
import task_defs

from omniq import AsyncOmniQ
from omniq.backend.file import FileBackend
from omniq.models._time import utcnow
from omniq.models.event import EventType
from omniq.models.task import TaskStatus

HERE = Path(__file__).parent

# The worker process: the object store kills its own process at the chosen step of the finish.
CHILD = """
import asyncio, os, signal, sys
import task_defs
from omniq import AsyncOmniQ
from omniq.storage.file.objects import LocalObjectStore

base, stage = sys.argv[1], sys.argv[2]
put, append, move = LocalObjectStore.put, LocalObjectStore.append, LocalObjectStore.move

async def killing_put(self, key, data, **kw):
    if stage == "fenced" and "/running/" in key:  # the record about to replace the payload
        os.kill(os.getpid(), signal.SIGKILL)
    return await put(self, key, data, **kw)

async def killing_append(self, key, data):
    if stage == "fenced" and "/running/" in key:  # the record about to join the payload
        os.kill(os.getpid(), signal.SIGKILL)
    if stage == "torn" and "/running/" in key:  # killed with part of the record written
        await append(self, key, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return await append(self, key, data)

async def killing_move(self, src, dst):
    if stage == "written" and "/running/" in src and "/completed/" in dst:
        os.kill(os.getpid(), signal.SIGKILL)
    return await move(self, src, dst)

LocalObjectStore.put, LocalObjectStore.move = killing_put, killing_move
LocalObjectStore.append = killing_append
app = AsyncOmniQ(base)
app.task(name="add")(task_defs.add.fn)
asyncio.run(app.run_worker(burst=True))
"""


@pytest.mark.parametrize("stage", ["fenced", "torn", "written"])
def test_sigkill_inside_the_finish_leaves_one_record(tmp_path, stage):
    base = str(tmp_path / "data")

    async def enqueue() -> str:
        app = AsyncOmniQ(base)
        app.task(name="add")(task_defs.add.fn)
        async with app:
            return (await app.enqueue("add", 2, 3)).id

    task_id = asyncio.run(enqueue())
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, base, stage], cwd=HERE, timeout=120,
        env={**env, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])},
        capture_output=True,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()

    async def recover_and_check() -> None:
        app = AsyncOmniQ(FileBackend(base))
        app.task(name="add")(task_defs.add.fn)
        async with app:
            b = app.backend
            running = await b.objects.list("tasks/default/running")
            assert len(running) == 1
            assert await b.objects.list("tasks/default/completed") == []
            if stage == "torn":  # the payload, a newline and half a record line
                data = await b.objects.get(f"tasks/default/running/{running[0]}")
                payload, tail = data.split(b"\n")
                assert tail and b'"completed"' not in payload
                with pytest.raises(msgspec.DecodeError):
                    msgspec.json.decode(tail)
            # The killed worker's lease is over (no waiting: the reaper is given a later now).
            await b.task_queue.requeue_expired(now=utcnow() + timedelta(minutes=5))
            stats = await app.run_worker(burst=True)
            assert await b.objects.list("tasks/default/running") == []
            assert await b.objects.list("tasks/default/completed") == [f"{task_id}.json"]
            task = await b.task_queue.get_task(task_id)
            assert task is not None and task.status is TaskStatus.COMPLETED
            result = await b.result_storage.get(task_id)
            assert result is not None and result.result == 5
            kinds = [e.event_type for e in await b.event_storage.get_events(task_id=task_id)]
            if stage in ("fenced", "torn"):  # still the payload: re-delivered and run again
                assert stats.completed == 1 and task.attempts == 2, (stats, task)
                assert EventType.LEASE_EXPIRED in kinds and kinds[-1] is EventType.COMPLETED
            else:  # already the record: the reaper moved it on, nothing ran again
                assert stats.completed == 0 and task.attempts == 1, (stats, task)
                assert kinds == [EventType.ENQUEUED, EventType.STARTED, EventType.COMPLETED]

    asyncio.run(recover_and_check())
