"""Symbolic links inside a local base: never followed out of it, never read through, reported."""

from __future__ import annotations

import os

import pytest

from conftest import make_backend
from omniq.exceptions import StorageError
from omniq.models.task import Task


@pytest.fixture
async def local(tmp_path):
    backend = make_backend("local", tmp_path)
    async with backend:
        yield backend


def outside_dir(tmp_path):
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    (out / "victim.txt").write_text("keep me")
    return out


async def test_symlinked_queue_directory_is_refused(local, tmp_path):
    out = outside_dir(tmp_path)
    (out / "pending").mkdir()
    # A valid task file outside the base, named as a pending task.
    other = make_backend("local", tmp_path / "elsewhere")
    async with other:
        await other.task_queue.enqueue(Task(func="evil", queue_name="evil"))
    src = tmp_path / "elsewhere/omniq_data/tasks/evil/pending"
    for name in os.listdir(src):
        (out / "pending" / name).write_bytes((src / name).read_bytes())
    os.makedirs(tmp_path / "omniq_data/tasks", exist_ok=True)
    os.symlink(out, tmp_path / "omniq_data/tasks/evil")
    before = sorted(p.name for p in out.rglob("*"))

    q = local.task_queue
    assert await q.list_queues() == []  # a link is not a queue
    assert await q.list_tasks() == []
    with pytest.raises(StorageError, match="symbolic link"):
        await q.dequeue("evil")
    with pytest.raises(StorageError, match="symbolic link"):
        await q.enqueue(Task(func="f", queue_name="evil"))
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing moved, read or written


async def test_symlinked_corrupt_directory_receives_nothing(local, tmp_path):
    out = outside_dir(tmp_path)
    os.symlink(out, tmp_path / "omniq_data/corrupt")
    q = local.task_queue
    await q.enqueue(Task(func="good"))
    await local.objects.put("tasks/default/pending/stray.json", b"junk")
    got = await q.dequeue("default")
    assert got is not None and got.func == "good"
    assert sorted(p.name for p in out.iterdir()) == ["victim.txt"]


async def test_symlinked_task_file_is_never_read(local, tmp_path, caplog):
    out = outside_dir(tmp_path)
    other = make_backend("local", tmp_path / "elsewhere")
    async with other:
        await other.task_queue.enqueue(Task(func="evil"))
    src = tmp_path / "elsewhere/omniq_data/tasks/default/pending"
    [name] = os.listdir(src)
    (out / name).write_bytes((src / name).read_bytes())
    pending = tmp_path / "omniq_data/tasks/default/pending"
    pending.mkdir(parents=True)
    os.symlink(out / name, pending / name)
    os.symlink(tmp_path / "nowhere", pending / "00000-0000000000000-DANGLING.json")

    q = local.task_queue
    assert await q.dequeue("default") is None
    assert await q.list_tasks() == [] and await q.get_queue_size() == 0
    assert (out / name).exists() and os.path.islink(pending / name)
    assert any("symbolic links are never followed" in r.getMessage() for r in caplog.records)
    # A direct read of a link (a lookup by key) is refused too.
    finished = tmp_path / "omniq_data/tasks/default/completed"
    finished.mkdir()
    os.symlink(out / name, finished / "LINKED.json")
    assert await q.get_task("LINKED") is None
    assert (out / name).exists()
