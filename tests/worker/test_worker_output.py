"""What a worker tells its operator: the banner, a line per task outcome, the shutdown lines;
and a worker kind that cannot run a registered task refuses to start instead of failing it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from omniq import AsyncOmniQ
from omniq.exceptions import ConfigError
from omniq.logs import JsonFormatter, configure, level_for, redact
from omniq.models.task import TaskStatus


@pytest.fixture
async def app(tmp_path):
    a = AsyncOmniQ(str(tmp_path / "data"))
    async with a:
        yield a


async def test_info_output_has_banner_task_lines_and_shutdown(app, caplog):
    caplog.set_level(logging.INFO, logger="omniq")
    started, finish = threading.Event(), threading.Event()

    @app.task
    def add(x, y):
        return x + y

    @app.task(max_retries=0)
    def boom():
        raise RuntimeError("kaput")

    @app.task
    def hold():
        started.set()
        finish.wait(30)

    ok = await add.delay(1, 2)
    bad = await boom.delay()
    held = await hold.delay()
    w = app.worker(concurrency=3, grace_period=0, worker_id="w1", scheduler=False)
    run = asyncio.create_task(w.run())
    deadline = asyncio.get_running_loop().time() + 120
    while not (started.is_set() and w.stats.completed + w.stats.failed == 2):
        assert asyncio.get_running_loop().time() < deadline, w.stats
        await asyncio.sleep(0.01)
    w.stop()
    await run
    finish.set()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("omniq")]
    text = "\n".join(lines)
    assert "OmniQ" in lines[0] and "worker w1 starting" in lines[0]
    for part in ("location:", str(app.backend.url), "queues:             default",
                 "concurrency:        3 (thread)", "visibility timeout: 60 s",
                 "scheduler:          off"):  # fmt: skip
        assert part in text, part
    assert f"add {ok.id} completed in " in text and "(attempt 1 of 1)" in text
    assert f"boom {bad.id} failed (attempt 1 of 1) RuntimeError: kaput" in text
    assert "worker w1: stopping, waiting up to 0 s for 1 running task(s)" in text
    assert f"hold {held.id} released (attempt 1 of 1) back to its queue, not counted" in text
    assert "worker w1: 1 unfinished task(s) released back to their queues" in text
    one = [r for r in caplog.records if getattr(r, "task_id", None) == ok.id]
    assert len(one) == 1 and one[0].outcome == "completed" and one[0].attempt == 1
    assert (await app.backend.task_queue.get_task(held.id)).status is TaskStatus.PENDING


async def test_kind_async_refuses_an_app_with_plain_functions(app):
    @app.task
    def nap():
        return "slept"

    h = await nap.delay()
    with pytest.raises(ConfigError, match=r"kind='async' runs only async def tasks.*nap"):
        await app.run_worker(burst=True, kind="async")
    # nothing was claimed, let alone dead-lettered: a thread worker runs it
    assert (await app.backend.task_queue.get_task(h.id)).status is TaskStatus.PENDING
    await app.run_worker(burst=True, kind="thread")
    assert await h.result(timeout=5) == "slept"


def test_levels_and_json_lines(capsys):
    assert level_for() == logging.INFO
    assert level_for(verbose=1) == logging.DEBUG and level_for(quiet=1) == logging.WARNING
    assert level_for(quiet=5) == logging.ERROR and level_for(1, 0, "error") == logging.ERROR
    with pytest.raises(ValueError, match="log level must be one of"):
        level_for(level="loud")
    record = logging.LogRecord("omniq.worker", logging.INFO, __file__, 1, "add %s", ("x",), None)
    record.task_id = "01ABC"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "add x" and line["task_id"] == "01ABC" and line["level"] == "INFO"
    configure(logging.WARNING, "text")
    logging.getLogger("omniq.test").info("hidden")
    logging.getLogger("omniq.test").warning("shown")
    err = capsys.readouterr().err
    assert "shown" in err and "hidden" not in err and "WARNING" in err


def test_redact_hides_credentials():
    assert redact("s3://key:secret@bucket/prefix") == "s3://***@bucket/prefix"
    assert redact("s3://bucket/prefix") == "s3://bucket/prefix"
    assert redact("/tmp/x") == "/tmp/x"


async def test_one_worker_per_interval_cleans_up(backend, clock):
    """Workers clean up now and then: per interval the first to claim it does, the others
    skip; what is past its ttl goes, what is not stays."""
    app = AsyncOmniQ(backend)
    async with app:

        @app.task(ttl=60)
        def short():
            return "short-lived"

        @app.task
        def kept():  # the default ttl: a week
            return "kept"

        gone, stays = await short.delay(), await kept.delay()
        await app.run_worker(burst=True, scheduler=False)
        a = app.worker(worker_id="a", scheduler=False)
        b = app.worker(worker_id="b", scheduler=False)
        clock.advance(120)
        assert await a.cleanup(3600) is True
        assert await b.cleanup(3600) is False  # the same hour: a did it
        assert await app.backend.task_queue.get_task(gone.id) is None
        assert await app.backend.result_storage.get(gone.id) is None
        assert await stays.result(timeout=5) == "kept"
        clock.advance(3600)
        assert await b.cleanup(3600) is True  # the next hour is b's if b asks first
        assert await a.cleanup(3600) is False
        clock.advance(8 * 86400)
        assert await a.cleanup(3600) is True
        assert await app.backend.task_queue.get_task(stays.id) is None


async def test_a_running_worker_cleans_up_by_itself(app, caplog):
    caplog.set_level(logging.INFO, logger="omniq")

    @app.task(ttl=0)
    def fleeting():
        return 1

    h = await fleeting.delay()
    await app.run_worker(burst=True, scheduler=False)
    w = app.worker(worker_id="c", scheduler=False, cleanup_interval=0.05)
    run = asyncio.create_task(w.run())
    for _ in range(1000):  # up to 10 s: never reached unless cleanup is broken
        if await app.backend.task_queue.get_task(h.id) is None:
            break
        await asyncio.sleep(0.01)
    w.stop()
    await run
    assert await app.backend.task_queue.get_task(h.id) is None
    assert any("worker c: cleanup removed 1 tasks, 1 results" in r.getMessage()
               for r in caplog.records)  # fmt: skip
