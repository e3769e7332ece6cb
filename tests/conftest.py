"""Shared fixtures: the backends the storage contract runs on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq.backend.file import FileBackend

# Every contract test runs once per entry. Cloud emulators join here as they are added.
BACKENDS = ["local", "memory"]


def make_backend(kind: str, tmp_path: Path, **settings: Any) -> FileBackend:
    if kind == "local":
        return FileBackend(base_dir=str(tmp_path / "omniq_data"), fs_protocol="file", **settings)
    if kind == "memory":
        return FileBackend.from_url(f"memory://omniq-{uuid.uuid4().hex}", **settings)
    raise ValueError(kind)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's OMNIQ_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_factory(backend_kind: str, tmp_path: Path) -> Any:
    def factory(**settings: Any) -> FileBackend:
        return make_backend(backend_kind, tmp_path, **settings)

    return factory


@pytest.fixture
async def backend(backend_factory: Any) -> AsyncIterator[FileBackend]:
    b = backend_factory()
    async with b:
        yield b
