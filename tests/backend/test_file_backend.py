"""FileBackend construction, errors and capabilities."""

from __future__ import annotations

import os

import pytest

from omniq.backend.file import FileBackend
from omniq.exceptions import ConfigError, MissingDependencyError, StorageError
from omniq.models.task import Task


def test_missing_driver_names_the_extra(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in {"s3fs", "gcsfs", "adlfs"} else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError, match=r"omniq\[s3\]"):
        FileBackend.from_url("s3://bucket/prefix")
    with pytest.raises(MissingDependencyError, match=r"omniq\[gcs\]"):
        FileBackend.from_url("gs://bucket/prefix")
    with pytest.raises(MissingDependencyError, match=r"omniq\[azure\]"):
        FileBackend.from_url("az://container/prefix")


def test_unknown_protocol():
    with pytest.raises(ConfigError, match="unknown filesystem protocol"):
        FileBackend.from_url("nosuchproto://x/y")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_permission_error_is_storage_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(StorageError) as info:
        async with FileBackend(base_dir=str(ro / "data")):
            pass
    assert str(ro) in str(info.value)


async def test_write_failure_is_storage_error_with_path(tmp_path):
    base = tmp_path / "data"
    async with FileBackend(base_dir=str(base)) as backend:
        # A file where the queue directory should be: every write under it fails.
        (base / "tasks").write_text("not a directory")
        with pytest.raises(StorageError) as info:
            await backend.get_task_queue().enqueue(Task(func="f"))
        assert str(base / "tasks") in str(info.value)
        assert isinstance(info.value.__cause__, OSError)


async def test_base_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StorageError, match=str(f)):
        async with FileBackend(base_dir=str(f)):
            pass


async def test_capabilities(tmp_path):
    local = FileBackend(base_dir=str(tmp_path))
    mem = FileBackend.from_url("memory://caps")
    assert local.objects.capabilities.safe_claims and mem.objects.capabilities.safe_claims


def test_fs_is_a_dirfilesystem_rooted_at_base(tmp_path):
    from fsspec.implementations.dirfs import DirFileSystem

    b = FileBackend(base_dir=str(tmp_path), fs_kwargs={"auto_mkdir": True})
    assert isinstance(b.fs, DirFileSystem)
    b.fs.pipe_file("hello.txt", b"hi")
    assert (tmp_path / "hello.txt").read_bytes() == b"hi"


def test_debug_flag_turns_on_debug_logging(tmp_path):
    import logging

    logger = logging.getLogger("omniq.storage.file")
    old = logger.level
    try:
        FileBackend(base_dir=str(tmp_path), fs_kwargs={"debug": True})
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(old)


async def test_fsync_option_still_works(tmp_path):
    async with FileBackend(base_dir=str(tmp_path), fsync=True) as b:
        q = b.get_task_queue()
        await q.enqueue(Task(func="f"))
        t = await q.dequeue("default")
        assert (await q.finish_task(t)).func == "f"


@pytest.mark.parametrize(
    "exc", [PermissionError(13, "Permission denied"), OSError(28, "No space left on device")]
)
async def test_os_errors_on_write_become_storage_errors(tmp_path, monkeypatch, exc):
    """Root ignores permissions, so the failing syscall is injected: the wrapping is tested."""
    async with FileBackend(base_dir=str(tmp_path)) as b:
        q = b.get_task_queue()
        real_open = os.open

        def failing_open(path, *args, **kwargs):
            if ".tmp-" in str(path):
                raise exc
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", failing_open)
        with pytest.raises(StorageError) as info:
            await q.enqueue(Task(func="f"))
        monkeypatch.setattr(os, "open", real_open)
        assert str(tmp_path) in str(info.value) and info.value.__cause__ is exc
        assert await q.list_tasks() == []
