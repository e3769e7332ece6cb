"""Task functions for the worker tests; importable by worker processes (kind="process", CLI).

The app's location comes from OMNIQ_TEST_URL so a subprocess worker finds the test's directory.
"""

from __future__ import annotations

import asyncio
import os
import time

from omniq import OmniQ

app = OmniQ(os.environ.get("OMNIQ_TEST_URL", "./omniq_data"))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def noop(i: int) -> int:
    time.sleep(0.001)
    return i


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def hold_until(path: str, limit: float) -> str:
    """Run until the file ``path`` exists (at most ``limit`` seconds): a task that is surely
    still running when a test kills its worker, however slowly the test looks."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


@app.task
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(max_retries=0)
def fail(message: str) -> None:
    raise RuntimeError(message)
