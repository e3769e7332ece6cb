"""Dashboard fixtures: a real uvicorn server per module over a real store, with real tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
import uvicorn

from conftest import emulator_for, make_backend
from omniq.app import AsyncOmniQ, OmniQ
from omniq.dashboard import create_app

TOKEN = "s3cret-token"
SCRIPT_ARG = "<script>window.__pwned = 1</script>"
SCREENSHOTS = Path(__file__).parent / "screenshots"  # git-ignored; written by the browser tests
FLAKY = {"fail": True}  # the "flaky" task fails while this is set


def make_app(backend: Any) -> OmniQ:
    """The app the tests and their workers use: its tasks and the store."""
    app = OmniQ(backend)

    @app.task(name="add")
    def add(a: Any, b: Any) -> Any:
        return a + b

    @app.task(name="boom")
    def boom() -> None:
        raise ValueError("boom went the task")

    @app.task(name="flaky")
    def flaky() -> str:
        if FLAKY["fail"]:
            raise RuntimeError("flaky is failing today")
        return "fine now"

    return app


@dataclass
class Served:
    """A dashboard server over a store, and a blocking app on the same store."""

    url: str
    web: Any  # the Starlette app being served
    app: OmniQ
    server: uvicorn.Server
    thread: threading.Thread
    ids: dict[str, str]

    def __post_init__(self) -> None:
        self.http = self.client()  # one client for the module: a new one costs ~0.1 s
        self.csrf = str(self.http.get("/api/csrf").json()["csrf"])

    def client(self, token: str | None = TOKEN, **kwargs: Any) -> httpx.Client:
        """A client sending ``token`` as a bearer token (``None``: no token)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def task(self, task_id: str) -> Any:
        return self.app.backend.get_task_queue(async_mode=False).get_task(task_id)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(30)


def serve(web: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Run ``web`` under uvicorn on a free 127.0.0.1 port in a thread; wait until it listens."""
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def seed(app: OmniQ) -> dict[str, str]:
    """Real tasks in every state a page shows, run by a real (burst) worker."""
    ids = {
        "done": app.enqueue("add", 1, 2).id,
        "script": app.enqueue("add", SCRIPT_ARG, "!").id,
        "dead": app.enqueue("boom").id,
    }
    app.run_worker(burst=True, scheduler=False, concurrency=2)
    ids["pending"] = app.enqueue("add", 5, 5, queue="idle").id  # no worker drains "idle"
    app.schedule("add", interval=3600, args=[2, 2], id="hourly")
    return ids


def start(backend_for_app: Any, backend_for_web: Any, **options: Any) -> Served:
    app = make_app(backend_for_app)
    ids = seed(app)
    web = create_app(AsyncOmniQ(backend_for_web), token=TOKEN, **options)
    server, thread, url = serve(web)
    return Served(url, web, app, server, thread, ids)


def backends(kind: str, tmp: Path, factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """Two backends on one store (the dashboard's and the tests'): a folder, or a moto bucket."""
    if kind == "local":
        return make_backend("local", tmp), make_backend("local", tmp)
    emulator = emulator_for("s3", factory)
    url = emulator.url()
    return make_backend("s3", tmp, emulator, url), make_backend("s3", tmp, emulator, url)


@pytest.fixture(scope="module", params=["local", "s3"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One dashboard server per module and backend kind, with a token."""
    tmp = tmp_path_factory.mktemp(f"dash-{request.param}")
    s = start(*backends(request.param, tmp, tmp_path_factory))
    yield s
    s.stop()
    s.app.close()
