"""No-op tasks for the worker benchmark (a module of its own so process workers can import it)."""

from __future__ import annotations

import time


def started_at() -> float:
    """Return when the task started running (wall clock), nothing else."""
    return time.time()


async def started_at_async() -> float:
    return time.time()


async def started_at_ctx(ctx: object) -> float:
    """The no-op for SAQ, which passes every function its context."""
    return time.time()
