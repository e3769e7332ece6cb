"""The dashboard app in process (no server): read-only mode, loopback Host names without a
token, and the cache that all viewers share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from omniq.app import AsyncOmniQ
from omniq.dashboard import create_app
from omniq.dashboard.cache import SharedCache
from omniq.dashboard.security import is_loopback
from omniq.exceptions import StorageError

from .conftest import TOKEN


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def client_for(web: Any, host: str = "127.0.0.1:8080", **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=web)
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}", headers=headers)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncOmniQ]:
    app = AsyncOmniQ(tmp_path / "data")
    async with app:
        await app.enqueue_task(app.build_task("add", (1, 2), {}, queue="q"))
        await app.schedule("add", interval=60, id="minutely")
        yield app


async def run(web: Any, coro_fn: Any) -> Any:
    async with web.router.lifespan_context(web):
        return await coro_fn()


async def test_read_only_shows_and_accepts_no_action(store: AsyncOmniQ) -> None:
    web = create_app(AsyncOmniQ(store.backend), read_only=True)
    task = (await store.backend.task_queue.list_tasks("q"))[0]

    async def go() -> None:
        c = await client_for(web)
        csrf = (await c.get("/api/csrf")).json()["csrf"]
        for page in ("/", "/tasks", "/schedules", "/dead-letter", f"/tasks/{task.id}"):
            r = await c.get(page)
            assert r.status_code == 200 and 'method="post"' not in r.text
        r = await c.post(f"/api/tasks/{task.id}/cancel", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403 and r.json()["error"] == "the dashboard is read-only"
        r = await c.post("/api/schedules/minutely/pause", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403

    await run(web, go)
    assert (await store.backend.task_queue.get_task(task.id)).status.value == "pending"
    assert (await store.get_schedule("minutely")).status.value == "active"


async def test_without_a_token_only_loopback_host_names(store: AsyncOmniQ) -> None:
    web = create_app(AsyncOmniQ(store.backend))

    async def go() -> None:
        for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
            assert (await (await client_for(web, host)).get("/api/queues")).status_code == 200
        rebound = await (await client_for(web, "evil.example:8080")).get("/")
        assert rebound.status_code == 400  # DNS rebinding: another site's name for this address

    await run(web, go)
    guarded = create_app(AsyncOmniQ(store.backend), token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        await run(guarded, lambda: _get(guarded, "dash.example.com", "/api/queues", bearer))
    ) == 200


async def _get(web: Any, host: str, path: str, headers: dict[str, str]) -> int:
    return (await (await client_for(web, host, **headers)).get(path)).status_code


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.4", "example.com"]))


async def test_one_store_read_per_ttl_for_all_viewers(store: AsyncOmniQ) -> None:
    ticks = Ticks()
    cache = SharedCache(ttl=2.0, clock=ticks)
    dashboard_app = AsyncOmniQ(store.backend)
    web = create_app(dashboard_app, cache=cache)
    reads = {"stats": 0}
    real = dashboard_app.backend.task_queue.queue_stats

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads["stats"] += 1
        await asyncio.sleep(0.01)  # still loading while the other viewers ask
        return await real(*args, **kwargs)

    dashboard_app.backend.task_queue.queue_stats = counted  # type: ignore[method-assign]

    async def go() -> None:
        c = await client_for(web)
        views = await asyncio.gather(*(c.get("/api/queues") for _ in range(8)))
        assert {r.status_code for r in views} == {200} and reads["stats"] == 1
        await c.get("/")  # the queues page reads the same cached listing
        ticks.now += 1.9
        await c.get("/api/queues")
        assert reads["stats"] == 1
        ticks.now += 0.2  # past the ttl
        await c.get("/api/queues")
        assert reads["stats"] == 2
        csrf = (await c.get("/api/csrf")).json()["csrf"]
        purged = await c.post("/api/purge-expired", headers={"X-CSRF-Token": csrf})
        assert purged.json() == {"ok": True, "message": "nothing is past its ttl"}
        await c.get("/api/queues")  # an action empties the cache: its effect shows at once
        assert reads["stats"] == 3

    try:
        await run(web, go)
    finally:
        del dashboard_app.backend.task_queue.queue_stats


async def test_a_failed_load_is_not_cached() -> None:
    cache = SharedCache(ttl=10.0, clock=Ticks())
    calls = []

    async def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("store unreachable")
        return 7

    with pytest.raises(OSError):
        await cache.get("k", flaky)
    assert await cache.get("k", flaky) == 7 and await cache.get("k", flaky) == 7
    assert len(calls) == 2


async def test_unknown_ids_in_actions(store: AsyncOmniQ) -> None:
    web = create_app(AsyncOmniQ(store.backend))

    async def go() -> None:
        c = await client_for(web)
        csrf = {"X-CSRF-Token": (await c.get("/api/csrf")).json()["csrf"]}
        r = await c.post("/api/tasks/01NOSUCHTASK/retry", headers=csrf)
        assert (r.status_code, r.json()["message"]) == (409, "no task 01NOSUCHTASK")
        task = (await store.backend.task_queue.list_tasks("q"))[0]
        r = await c.post(f"/api/tasks/{task.id}/retry", headers=csrf)
        assert (r.status_code, r.json()["message"]) == (
            409, f"task {task.id} is pending, not failed: not changed"
        )  # fmt: skip
        r = await c.post("/api/schedules/nope/pause", headers=csrf)
        assert r.status_code == 409 and "not paused" in r.json()["message"]
        r = await c.post("/api/dead-letter/retry-all", headers=csrf)
        assert (r.status_code, r.json()["message"]) == (409, "no queue ''")
        page = await c.get("/tasks/01NOSUCHTASK")
        assert page.status_code == 404 and "No task 01NOSUCHTASK" in page.text

    await run(web, go)


async def test_the_chart_is_served_stale_while_it_is_read_again(
    store: AsyncOmniQ, clock: Any
) -> None:
    ticks = Ticks()
    dashboard_app = AsyncOmniQ(store.backend)
    web = create_app(dashboard_app, cache=SharedCache(ttl=2.0, clock=ticks), chart_every=60)
    events = dashboard_app.backend.event_storage
    real = events.get_events
    reads: list[object] = []
    done: list[object] = []
    gate = asyncio.Event()
    gate.set()

    async def held(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("event_type"))
        await gate.wait()
        events_read = await real(*args, **kwargs)
        done.append(events_read)
        return events_read

    events.get_events = held  # type: ignore[method-assign]

    async def go() -> None:
        c = await client_for(web)
        first = (await c.get("/api/queues")).json()["throughput"]
        # One query for both kinds: a query by type would read every finished record again.
        assert reads == [None]
        ticks.now += 61
        gate.clear()  # the next read of the events hangs until the test lets it go
        again = await c.get("/api/queues")  # answered with the chart it has meanwhile
        assert again.json()["throughput"]["buckets"] == first["buckets"]
        await settle()
        assert len(reads) == 2  # ... while one read runs behind
        await asyncio.gather(c.get("/api/queues"), c.get("/"))
        assert len(reads) == 2  # still that one, however many viewers
        gate.set()
        await until(lambda: len(done) == 2)  # the read behind finishes

    try:
        await run(web, go)
    finally:
        del events.get_events


async def settle() -> None:
    """Let the tasks the app started run until they wait (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def until(done: Any, seconds: float = 30.0) -> None:
    """Wait until ``done()`` (a margin no slow run crosses; it ends as soon as it holds)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not done():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_the_chart_can_be_off(store: AsyncOmniQ) -> None:
    web = create_app(AsyncOmniQ(store.backend), chart_every=0)

    async def go() -> None:
        c = await client_for(web)
        assert (await c.get("/api/queues")).json()["throughput"] is None
        assert "The chart is off" in (await c.get("/")).text

    await run(web, go)


async def test_a_corrupt_task_or_a_failing_store_is_a_clear_answer(
    store: AsyncOmniQ, tmp_path: Path
) -> None:
    task = (await store.backend.task_queue.list_tasks("q"))[0]
    (stored,) = (tmp_path / "data" / "tasks" / "q" / "pending").glob(f"*{task.id}*")
    stored.write_bytes(b"{not json")
    dashboard_app = AsyncOmniQ(store.backend)
    web = create_app(dashboard_app)

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("cannot list s3://bucket/tasks: connection refused\n(details)")

    async def go() -> None:
        c = await client_for(web)
        shown = (await c.get(f"/api/tasks/{task.id}")).json()  # set aside, not shown
        # File stores keep no enqueued event of their own (the task implies it): a task that
        # cannot be read shows only its CORRUPTED event.
        assert shown["task"] is None and [e["type"] for e in shown["events"]] == ["corrupted"]
        for path in (f"/tasks/{task.id}", "/tasks", "/"):
            assert (await c.get(path)).status_code == 200
        dashboard_app.backend.task_queue.queue_stats = unreachable  # type: ignore[method-assign]
        web.state.dashboard.data.cache.clear()
        failed = await c.get("/api/queues")
        assert failed.status_code == 503
        assert failed.json() == {
            "error": "the store failed: cannot list s3://bucket/tasks: connection refused"
        }
        assert (await c.get("/")).text == failed.json()["error"]

    try:
        await run(web, go)
    finally:
        del dashboard_app.backend.task_queue.queue_stats


async def test_args_json_cannot_hold_are_still_shown(tmp_path: Path) -> None:
    app = AsyncOmniQ(tmp_path / "mp", serialization_format="msgpack")
    async with app:
        handle = await app.enqueue(
            "add", float("nan"), b"\x00raw", {"when": datetime(2026, 1, 2, tzinfo=timezone.utc)}
        )
        web = create_app(AsyncOmniQ(app.backend))

        async def go() -> None:
            c = await client_for(web)
            api = await c.get(f"/api/tasks/{handle.id}")
            assert api.status_code == 200
            assert api.json()["task"]["args"][0] is None  # NaN: JSON has no such number
            assert api.json()["task"]["args"][1] == "AHJhdw=="  # bytes: base64
            page = await c.get(f"/tasks/{handle.id}")
            assert page.status_code == 200 and "NaN" in page.text

        await run(web, go)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_other_backends(kind: str, tmp_path: Path) -> None:
    """The same pages and actions over the SQLite backend and memory:// (the HTTP tests run on a
    folder and on S3)."""
    from conftest import make_backend

    backend = make_backend(kind, tmp_path)
    app = AsyncOmniQ(backend)

    @app.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    async with app:
        dead = (await app.enqueue("boom")).id
        await app.worker(burst=True, scheduler=False).run()
        await app.schedule("boom", interval=60, id="often")
        # The dashboard's own backend on the same data (memory:// lives in this process only).
        web = create_app(AsyncOmniQ(make_backend(kind, tmp_path) if kind == "sqlite" else backend))

        async def go() -> None:
            c = await client_for(web)
            for path in ("/", "/tasks", f"/tasks/{dead}", "/schedules", "/dead-letter"):
                assert (await c.get(path)).status_code == 200, path
            assert [t["id"] for t in (await c.get("/api/dead-letter")).json()["tasks"]] == [dead]
            csrf = {"X-CSRF-Token": (await c.get("/api/csrf")).json()["csrf"]}
            assert (await c.post(f"/api/tasks/{dead}/retry", headers=csrf)).status_code == 200
            assert (await c.post("/api/schedules/often/pause", headers=csrf)).status_code == 200
            listed = (await c.get("/api/tasks", params={"state": "pending"})).json()["tasks"]
            assert [t["id"] for t in listed] == [dead]
            (often,) = (await c.get("/api/schedules")).json()["schedules"]
            assert often["status"] == "paused"

        await run(web, go)


def test_the_csrf_token_is_shared_by_processes_with_one_token() -> None:
    from omniq.dashboard.security import Guard

    assert Guard("t").csrf_token == Guard("t").csrf_token != Guard("u").csrf_token
    assert Guard(None).csrf_token != Guard(None).csrf_token  # random per process


async def test_no_action_is_reachable_by_get(store: AsyncOmniQ) -> None:
    from omniq.dashboard.server import ACTIONS

    web = create_app(AsyncOmniQ(store.backend))

    async def go() -> None:
        c = await client_for(web)
        for path, *_ in ACTIONS:
            concrete = path.replace("{task_id}", "01NOSUCHTASK").replace("{schedule_id}", "s")
            assert (await c.get(concrete)).status_code == 405, path

    await run(web, go)
    assert len(ACTIONS) == 8
