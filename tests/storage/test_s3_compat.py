"""S3 servers that are not AWS: what the start-up probe finds, the single-consumer mode where
compare-and-swap is unusable, and the provider errors that ask for a retry (409 on conditional
writes, 503 SlowDown / 429). The servers are moto behind tests/s3proxy.py, which answers as
other S3 implementations (or a busy AWS) do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta

import pytest

from omniq import AsyncOmniQ
from omniq.backend.file import FileBackend
from omniq.exceptions import ConfigError, TaskFailedError
from omniq.models._time import utcnow
from omniq.models.task import TaskStatus
from omniq.storage.file.cloud import Backoff
from omniq.storage.file.objects import VersionMismatch
from s3proxy import S3Proxy

SHORT = Backoff(attempts=10, base=0.001, cap=0.01)  # no real-time dependence in retries


async def _results(handles, runner: asyncio.Task) -> list:
    """The handles' results; the worker's own error if it stopped first."""
    results = asyncio.ensure_future(asyncio.gather(*(h.result(timeout=60) for h in handles)))
    await asyncio.wait({results, runner}, return_when=asyncio.FIRST_COMPLETED)
    if not results.done():
        results.cancel()
        runner.result()  # raises what stopped the worker
        raise AssertionError("the worker stopped before the tasks were done")
    return results.result()


def _backend(server, proxy: S3Proxy, **settings) -> FileBackend:
    backend = FileBackend.from_url(
        server.url(), fs_kwargs=proxy.options(server.options), **settings
    )
    backend.objects.backoff = SHORT
    return backend


async def test_probe_reports_each_capability_with_its_status(s3_server):
    with S3Proxy(s3_server.endpoint) as proxy:
        async with _backend(s3_server, proxy) as backend:
            caps, report = backend.objects.capabilities, backend.objects.probe_report
    assert caps.conditional_create and caps.compare_and_swap and caps.conditional_delete
    assert report["conditional create"] == "honoured (a second create was refused (HTTP 412))"
    assert report["compare-and-swap"].startswith("honoured with If-Match as returned;")
    assert report["conditional delete"] == "honoured (a stale version was refused (HTTP 412))"


async def test_probe_adapts_to_a_store_answering_as_ceph_rgw(s3_server, caplog):
    """RGW refuses its own quoted ETag in If-Match (412) and ignores If-Match on DELETE."""
    rgw = S3Proxy(s3_server.endpoint, quoted_if_match=False, delete_if_match=False)
    with rgw as proxy, caplog.at_level(logging.INFO, logger="omniq.storage.file"):
        async with _backend(s3_server, proxy) as backend:
            objects = backend.objects
            caps, report = objects.capabilities, objects.probe_report
            assert objects.match_form == "unquoted"
            # Compare-and-swap works in the unquoted form, and stale versions still lose.
            v1 = await objects.create("x/a", b"1")
            v2 = await objects.replace("x/a", b"2", v1)
            with pytest.raises(VersionMismatch):
                await objects.replace("x/a", b"3", v1)
            # A versioned delete checks the version itself, since the server would not.
            with pytest.raises(VersionMismatch):
                await objects.delete_version("x/a", v1)
            assert await objects.get("x/a") == b"2"
            assert await objects.delete_version("x/a", v2) is True
    assert caps.safe_claims and caps.conditional_create and caps.compare_and_swap
    assert not caps.conditional_delete
    assert (
        "If-Match unquoted (If-Match as returned: refused (HTTP 412))"
        in (report["compare-and-swap"])
    )
    assert report["conditional delete"].startswith("unusable: a stale version was accepted")
    assert any("conditional writes found at start" in r.message for r in caplog.records)


async def test_without_compare_and_swap_one_worker_completes_retries_and_recovers(s3_server):
    """A store that refuses every If-Match on PUT: no fencing, so one worker only (a second
    slot is refused, saying why); that one worker completes, retries, dead-letters and
    recovers every task, and leaves nothing running."""
    with S3Proxy(s3_server.endpoint, put_if_match=False) as proxy:
        backend = _backend(s3_server, proxy, visibility_timeout=30)
        async with AsyncOmniQ(backend) as app:
            caps = backend.objects.capabilities
            assert caps.conditional_create and not caps.compare_and_swap and not caps.safe_claims
            assert backend.objects.probe_report["compare-and-swap"].startswith("unusable")
            calls: list[str] = []

            @app.task(max_retries=2, retry_delay=0.01)
            def flaky(name: str) -> str:
                calls.append(name)
                if calls.count(name) < 2:
                    raise RuntimeError("first try fails")
                return name

            @app.task(max_retries=1, retry_delay=0.01)
            def broken() -> None:
                raise ValueError("always")

            @app.task
            def ok(i: int) -> int:
                return i

            oks = [await ok.delay(i) for i in range(3)]
            retried = await flaky.delay("f")
            dead = await broken.delay()
            with pytest.raises(ConfigError, match="concurrency=1"):
                await app.run_worker(concurrency=2, burst=True)

            # A delivery whose worker died: claimed, never finished; the reaper re-queues it.
            orphan = await app.enqueue(ok, 99, queue="orphans")
            q = backend.task_queue
            claimed = await q.dequeue(["orphans"])
            assert claimed is not None and claimed.id == orphan.id
            recovered = await q.requeue_expired(utcnow() + timedelta(seconds=60))
            assert [t.id for t in recovered] == [orphan.id]

            worker = app.worker(["default", "orphans"], concurrency=1)
            runner = asyncio.create_task(worker.run())
            assert [await h.result(timeout=20) for h in oks] == [0, 1, 2]
            assert await retried.result(timeout=20) == "f"
            assert await orphan.result(timeout=20) == 99
            with pytest.raises(TaskFailedError, match="always"):
                await dead.result(timeout=20)
            worker.stop()
            await runner
            assert worker.stats.lost == 0 and worker.stats.retried == 2
            assert (await q.get_task(orphan.id)).attempts == 2
            assert (await q.get_task(dead.id)).status is TaskStatus.FAILED
            assert await backend.objects.list("tasks/default/running") == []
            assert await backend.objects.list("tasks/orphans/running") == []
        # After the probe, If-Match was never sent again: the store checks versions itself.
        assert proxy.counts["refused If-Match 412"] == 2, proxy.counts  # as returned, unquoted


@pytest.mark.slow
async def test_conflicts_and_throttling_lose_nothing_and_run_nothing_twice(s3_server):
    """A fifth of conditional writes answered 409 ConditionalRequestConflict and one request in
    twelve 503 or 429: every task completes once, no lease is given up."""
    options_retries = {"config_kwargs": {"retries": {"max_attempts": 1}}}  # surface them to us
    with S3Proxy(s3_server.endpoint, conflict_rate=0.2, throttle_rate=0.08, seed=7) as proxy:
        server = dataclasses.replace(s3_server, options={**s3_server.options, **options_retries})
        backend = _backend(server, proxy, visibility_timeout=30, listing_ttl=0.2)
        async with AsyncOmniQ(backend) as app:
            assert backend.objects.capabilities.safe_claims, backend.objects.probe_report
            runs: list[int] = []

            @app.task
            def work(i: int) -> int:
                runs.append(i)
                return i

            handles = [await work.delay(i) for i in range(12)]
            worker = app.worker(concurrency=4)
            runner = asyncio.create_task(worker.run())
            assert await _results(handles, runner) == list(range(12))
            worker.stop()
            await runner
            assert sorted(runs) == list(range(12)), "a task ran twice"
            assert worker.stats.lost == 0 and worker.stats.completed == 12
            for h in handles:
                assert (await backend.task_queue.get_task(h.id)).attempts == 1
            assert await backend.objects.list("tasks/default/running") == []
            requests = backend.objects.requests
    assert proxy.counts["conflict 409"] > 0 and requests["conflict"] > 0, proxy.counts
    assert proxy.counts["throttled 429"] > 0 and requests["throttled"] > 0, proxy.counts


def test_cli_on_s3_closes_its_connections(s3_server):
    """Every process that used an S3 app used to print ``Unclosed client session`` at exit."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker_dir = Path(__file__).resolve().parent.parent / "worker"
    url = s3_server.url()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env.update(OMNIQ_STORAGE_OPTIONS=json.dumps(s3_server.options), OMNIQ_TEST_URL=url,
               PYTHONPATH=str(worker_dir))  # fmt: skip
    commands = (["enqueue", "add", "1", "2"], ["status"],
                ["worker", "--app", "task_defs:app", "--burst"])  # fmt: skip
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-m", "omniq", "--url", url, *args],
            cwd=worker_dir, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Unclosed" not in done.stderr, (args, done.stderr)
    assert "completed 1" in done.stdout


async def test_reaper_logs_a_requeue_only_once_it_is_done(s3_server, caplog, monkeypatch):
    """A take-over whose compare-and-swap fails says nothing of a re-queue (it used to log
    "re-queued" first); the next, successful, one does."""
    from omniq.exceptions import StorageError
    from omniq.models.task import Task

    backend = FileBackend.from_url(s3_server.url(), fs_kwargs=dict(s3_server.options))
    async with backend:
        q, objects = backend.task_queue, backend.objects
        task_id = await q.enqueue(Task(func="f"))
        assert (await q.dequeue(["default"])) is not None  # its worker dies

        async def failing_replace(key: str, data: bytes, version: str) -> str:
            raise StorageError("cannot write (injected)", key)

        later = utcnow() + timedelta(seconds=120)
        with caplog.at_level(logging.WARNING, logger="omniq.storage.file"):
            monkeypatch.setattr(objects, "replace", failing_replace)
            assert await q.requeue_expired(later) == []  # logged as not recovered, retried later
            assert not any("re-queued" in r.message for r in caplog.records)
            monkeypatch.undo()
            assert [t.id for t in await q.requeue_expired(later)] == [task_id]
        assert any("re-queued" in r.message for r in caplog.records)
        assert (await q.get_task(task_id)).status is TaskStatus.PENDING


async def test_names_that_stay_busy_do_not_hold_a_dequeue_forever(s3_server, monkeypatch):
    """A store answering 409 to every lease create on some names: a dequeue tries each name
    once, then waits like an empty queue and honours its timeout (it used to relist and retry
    the same names without end), and claims the others."""
    from omniq.models.task import Task
    from omniq.storage.file.cloud import ConflictError

    backend = FileBackend.from_url(s3_server.url(), fs_kwargs=dict(s3_server.options))
    async with backend:
        q, objects = backend.task_queue, backend.objects
        busy = {await q.enqueue(Task(func="f", priority=9)) for _ in range(3)}
        creates: list[str] = []
        create = objects.create

        async def create_busy(key: str, data: bytes) -> str:
            creates.append(key)
            if key.startswith("tasks/default/running/") and any(i in key for i in busy):
                raise ConflictError("cannot create (409 ConditionalRequestConflict)", key)
            return await create(key, data)

        monkeypatch.setattr(objects, "create", create_busy)
        got = await asyncio.wait_for(q.dequeue("default", timeout=0.5), timeout=120)
        assert got is None
        assert len(creates) <= 3 * 10, len(creates)  # each busy name once per look
        free = await q.enqueue(Task(func="f"))
        got = await asyncio.wait_for(q.dequeue("default", timeout=30), timeout=120)
        assert got is not None and got.id == free


async def test_an_unreadable_expired_settle_record_does_not_stop_claims(s3_server):
    """A reaper's settle record whose task bytes cannot be decoded (damaged, or written under
    another key) is settled unread, as before the expiry reports: the reaper goes on and
    ``dequeue`` does not raise; the claim then sets the damaged payload aside."""
    from omniq.models.task import Task
    from omniq.storage.file.lease_queue import LeaseRecord, _encode

    backend = FileBackend.from_url(s3_server.url(), fs_kwargs=dict(s3_server.options))
    async with backend:
        q, objects = backend.task_queue, backend.objects
        task_id = await q.enqueue(Task(func="f"))
        held = await q.dequeue(["default"])
        name = held.lease.key
        payload = f"tasks/default/pending/{name}"
        record = LeaseRecord(token="dead-reaper", expires_ms=0, settle_to=payload,
                             settle_data=b"not a task", expired=True)  # fmt: skip
        await objects.put(f"tasks/default/running/{name}", _encode(record))
        later = utcnow() + timedelta(seconds=120)
        assert await q.requeue_expired(later) == []
        assert await objects.list("tasks/default/running") == []
        assert await q.dequeue("default") is None  # the damaged payload is set aside
        assert (await q.get_task(task_id)) is None


async def test_every_try_of_a_throttled_write_is_omniqs_own(s3_server):
    """Neither botocore nor s3fs retries: OmniQ's loop makes every try, so a settle's deadline
    bounds them all (a try inside the driver could land a write after a reaper completed the
    settle). A store answering every request 503: a write goes out exactly as often as the
    back-off allows, none once the deadline has passed, and the error says it is transient."""
    from omniq.exceptions import StorageError
    from omniq.models._time import utcnow_ms
    from omniq.storage.file.cloud import deadline

    with S3Proxy(s3_server.endpoint, seed=1) as proxy:
        backend = _backend(s3_server, proxy)
        async with backend:
            objects = backend.objects
            objects.backoff = Backoff(base=0.001, attempts=3)
            proxy.throttle_rate = 1.0

            def puts() -> int:
                return sum(n for (kind, _), n in proxy.requests.items() if kind == "put")

            before = puts()
            with pytest.raises(StorageError) as caught:
                await objects.put("x/throttled", b"1")
            assert caught.value.transient
            assert puts() - before == 3
            before = puts()
            with deadline(utcnow_ms()), pytest.raises(StorageError, match="deadline"):
                await objects.put("x/late", b"1")
            assert puts() == before


def test_s3_express_directory_buckets_are_refused_with_the_reason():
    """Directory buckets list neither after a name nor in name order (AWS's ListObjectsV2
    reference): a queue read in name order cannot run there, so the URL is refused at once."""
    with pytest.raises(ConfigError, match="directory buckets are not supported"):
        FileBackend(base_dir="s3://queue--usw2-az1--x-s3/omniq", fs_protocol="s3")
