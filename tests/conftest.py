"""Shared fixtures: the backends the storage contract runs on.

Cloud kinds run against local protocol servers (tests/emulators.py), started once per session
the first time a test needs them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emulators import STARTERS, Emulator  # tests/ is on sys.path (rootdir conftest)
from omniq.backend.base import Backend
from omniq.backend.file import FileBackend
from omniq.backend.sqlite import SQLiteBackend
from omniq.models._time import set_clock, system_now
from s3proxy import S3Proxy

# Every contract test runs once per entry.
BACKENDS = ["local", "memory", "s3", "gcs", "azure", "sqlite"]
# The claim, lease, fencing and reaping contract (tests/storage/test_task_queue.py,
# test_objects.py) runs on these too: a second real S3 server.
CLAIM_BACKENDS = [*BACKENDS, "seaweedfs"]
CLOUD = frozenset(STARTERS)


def make_backend(
    kind: str,
    tmp_path: Path,
    emulator: Emulator | None = None,
    url: str | None = None,
    **settings: Any,
) -> Backend:
    """A backend of one kind; cloud kinds get a fresh bucket unless ``url`` names one."""
    if kind == "sqlite":
        return SQLiteBackend(tmp_path / "omniq.db", **settings)
    if kind == "local":
        return FileBackend(base_dir=str(tmp_path / "omniq_data"), fs_protocol="file", **settings)
    if kind == "memory":
        return FileBackend.from_url(f"memory://omniq-{uuid.uuid4().hex}", **settings)
    if kind in CLOUD:
        assert emulator is not None, f"{kind} needs its emulator"
        return FileBackend.from_url(
            url or emulator.url(), fs_kwargs=dict(emulator.options), **settings
        )
    raise ValueError(kind)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs two workers with ``--dist loadgroup``) the slow
    multi-process tests share one group, so they run one after another on one worker and
    never two at once: each starts several Python processes, and two at a time on a 2-core
    machine would only slow both."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("slow"))


_running: dict[str, Emulator] = {}


def emulator_for(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Emulator:
    """The session's server for a cloud kind, started on first use."""
    if kind not in _running:
        _running[kind] = STARTERS[kind](tmp_path_factory.mktemp(f"{kind}-server"))
    return _running[kind]


@pytest.fixture(scope="session", autouse=True)
def _stop_emulators() -> Iterator[None]:
    yield
    for emulator in _running.values():
        emulator.stop()
    _running.clear()


@pytest.fixture
def emulator(backend_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Emulator | None:
    return emulator_for(backend_kind, tmp_path_factory) if backend_kind in CLOUD else None


@pytest.fixture
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Emulator:
    return emulator_for("s3", tmp_path_factory)


@pytest.fixture
def s3_target(s3_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """An S3 server by ``s3_kind`` (parametrize it): "moto", "seaweedfs", or "rgw" — moto
    behind a proxy that answers conditional requests as Ceph RGW 16.2 does (a quoted
    ``If-Match`` gets 412, ``If-Match`` on DELETE is ignored)."""
    if s3_kind == "rgw":
        server = emulator_for("s3", tmp_path_factory)
        with S3Proxy(server.endpoint, quoted_if_match=False, delete_if_match=False) as proxy:
            yield dataclasses.replace(
                server, endpoint=proxy.endpoint, options=proxy.options(server.options)
            )
    else:
        yield emulator_for("s3" if s3_kind == "moto" else s3_kind, tmp_path_factory)


class FakeClock:
    """A clock the test moves on by hand (``omniq.models._time.set_clock``)."""

    def __init__(self) -> None:
        self.now = system_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """OmniQ's notion of now, frozen until the test advances it: due times and lease expiries
    without sleeping and without depending on this machine's speed."""
    fake = FakeClock()
    set_clock(fake)
    yield fake
    set_clock(None)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's OMNIQ_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    yield
    from omniq.logs import unconfigure

    unconfigure()  # a test that ran the CLI's worker configured the omniq logger


def backend_param(request: pytest.FixtureRequest) -> str:
    """The backend kind a parametrized test runs on; a test marked ``file_layout`` (it reads
    the file backend's objects) is skipped on SQLite with its reason."""
    marker = request.node.get_closest_marker("file_layout")
    if request.param == "sqlite" and marker is not None:
        pytest.skip(f"file backend layout: {marker.args[0]}")
    return str(request.param)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return backend_param(request)


@pytest.fixture
def backend_factory(backend_kind: str, tmp_path: Path, emulator: Emulator | None) -> Any:
    url = emulator.url() if emulator is not None else None  # one bucket per test

    def factory(**settings: Any) -> Backend:
        return make_backend(backend_kind, tmp_path, emulator, url, **settings)

    return factory


@pytest.fixture
async def backend(backend_factory: Any) -> AsyncIterator[Backend]:
    b = backend_factory()
    async with b:
        yield b
