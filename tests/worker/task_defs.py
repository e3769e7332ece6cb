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
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(max_retries=0)
def fail(message: str) -> None:
    raise RuntimeError(message)
