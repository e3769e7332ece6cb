"""The worker's pool of daemon threads: reused, bounded, and not used up by abandoned calls."""

from __future__ import annotations

import asyncio
import threading

import pytest

from omniq.daemon_pool import DaemonThreadPool


async def test_threads_are_reused_and_bounded() -> None:
    pool = DaemonThreadPool(2)
    try:
        for i in range(20):  # one after the other: one thread serves them all
            assert await pool.submit(lambda i=i: i * 2) == i * 2
        assert pool.started == 1
        gate = threading.Event()
        calls = [pool.submit(gate.wait) for _ in range(6)]
        gate.set()
        assert await asyncio.gather(*calls) == [True] * 6
        assert pool.started == 2  # never more than its size at once
    finally:
        pool.shutdown()


async def test_an_exception_comes_back_to_the_caller() -> None:
    pool = DaemonThreadPool(1)
    try:
        with pytest.raises(ZeroDivisionError):
            await pool.submit(lambda: 1 / 0)
        assert await pool.submit(lambda: "still serving") == "still serving"
    finally:
        pool.shutdown()


async def test_abandoned_calls_do_not_use_up_the_pool() -> None:
    pool = DaemonThreadPool(1)
    stuck = threading.Event()
    try:
        for _ in range(3):  # three calls that never return while the test runs
            running = threading.Event()
            call = pool.submit(lambda running=running: running.set() or stuck.wait())
            await asyncio.to_thread(running.wait)
            call.cancel()  # abandoned (a timed-out task): its thread leaves the pool
        assert await pool.submit(lambda: "served") == "served"
        assert pool.started == 4  # a fresh thread after each abandoned one
        queued = [pool.submit(stuck.wait) for _ in range(2)]
        queued[1].cancel()  # abandoned before it started: never runs
        stuck.set()
        assert await queued[0] is True
    finally:
        stuck.set()
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
