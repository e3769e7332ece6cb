"""What is particular to the SQLite backend (the shared contract runs in tests/storage/)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from omniq import AsyncOmniQ, OmniQ
from omniq.backend.sqlite import SQLiteBackend
from omniq.cli import cli
from omniq.exceptions import ConfigError, CorruptFileError, StorageError
from omniq.models.config import SQLiteConfig
from omniq.models.event import EventType
from omniq.models.result import TaskResult
from omniq.models.task import Task
from omniq.serialization import Serializer
from omniq.storage.sqlite import connection, tasks

HERE = Path(__file__).parent.parent / "worker"


def test_url_path_config_and_env(tmp_path, monkeypatch):
    rel = SQLiteBackend.from_url("sqlite:///omniq.db")
    assert rel.path == os.path.abspath("omniq.db")
    absolute = SQLiteBackend.from_url(f"sqlite:///{tmp_path}/a.db")
    assert absolute.path == f"{tmp_path}/a.db" and absolute.url == f"sqlite:///{tmp_path}/a.db"
    assert SQLiteBackend(tmp_path / "b.db").path == str(tmp_path / "b.db")
    monkeypatch.setenv("OMNIQ_SQLITE_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("OMNIQ_VISIBILITY_TIMEOUT", "7")
    from_env = SQLiteBackend(max_deliveries=3)
    assert from_env.path == str(tmp_path / "env.db")
    assert from_env.config.visibility_timeout == 7 and from_env.config.max_deliveries == 3
    config = SQLiteConfig(path=str(tmp_path / "c.db"), fsync=True)
    assert SQLiteBackend.from_config(config).config.fsync is True
    with pytest.raises(ConfigError, match="SQLiteConfig"):
        SQLiteBackend.from_config({"path": "x.db"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sqlite:///"):
        SQLiteBackend.from_url("sqlite:/x.db")
    with pytest.raises(ConfigError, match="busy_timeout"):
        SQLiteBackend(tmp_path / "d.db", busy_timeout=0)
    with pytest.raises(ConfigError, match="base_dir"):
        SQLiteBackend(tmp_path / "d.db", base_dir="x")  # a file-backend setting


@pytest.mark.parametrize("fsync, level", [(False, 1), (True, 2)])  # NORMAL, FULL
async def test_wal_and_fsync_setting(tmp_path, fsync, level):
    async with SQLiteBackend(tmp_path / "s.db", fsync=fsync) as b:
        mode, sync = await b.db.read(
            lambda c: (
                c.execute("PRAGMA journal_mode").fetchone()[0],
                c.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
    assert (mode, sync) == ("wal", level)


async def test_bad_locations_are_storage_errors_naming_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(StorageError, match=str(missing)):
        async with SQLiteBackend(missing):
            pass
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("these are my notes, not a database " * 100)
    with pytest.raises(StorageError, match=str(not_sqlite)):
        async with SQLiteBackend(not_sqlite):
            pass
    assert "my notes" in not_sqlite.read_text()  # untouched


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_read_only_database_is_a_storage_error(tmp_path):
    path = tmp_path / "ro.db"
    async with SQLiteBackend(path) as b:
        await b.task_queue.enqueue(Task(func="f"))
    for p in tmp_path.iterdir():
        p.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StorageError, match=str(path)):
            async with SQLiteBackend(path):
                pass
    finally:
        tmp_path.chmod(0o755)


async def test_read_only_open_is_a_storage_error_even_for_root(tmp_path):
    """Root writes through file permissions: open the file read-only through SQLite's URI form
    instead; the write probe at open must refuse it."""
    path = tmp_path / "ro.db"
    async with SQLiteBackend(path) as b:
        await b.task_queue.enqueue(Task(func="f"))
    ro = SQLiteBackend(f"file:{path}?mode=ro")  # the URI form opens read-only whoever we are
    ro.db.path = f"file:{path}?mode=ro"
    real_connect = sqlite3.connect

    def uri_connect(*args, **kwargs):
        return real_connect(*args, uri=True, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(connection.sqlite3, "connect", uri_connect)
        mp.setattr(connection.os.path, "isdir", lambda _: True)
        with pytest.raises(StorageError, match="readonly"):
            async with ro:
                pass


def _corrupt(path: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql, params)
    conn.close()


@pytest.mark.parametrize("damage", [b"", b"\x00\xffnot json", b'{"func": "bad", "args": '])
async def test_corrupt_task_row_is_set_aside_and_dequeue_goes_on(tmp_path, damage, caplog):
    async with SQLiteBackend(tmp_path / "c.db") as b:
        q = b.task_queue
        bad = await q.enqueue(Task(func="bad", priority=5))
        good = await q.enqueue(Task(func="good"))
        _corrupt(tmp_path / "c.db", "UPDATE tasks SET payload = ? WHERE id = ?", damage, bad)
        got = await q.dequeue("default")
        assert got is not None and got.id == good
        assert await q.get_task(bad) is None
        rows = await b.db.read(lambda c: c.execute("SELECT source, key FROM corrupt").fetchall())
        assert rows == [("tasks", bad)]
        events = await b.event_storage.get_events(event_type=EventType.CORRUPTED)
        assert [e.task_id for e in events] == [bad]
        assert "moved to corrupt/tasks/" in events[0].message
        assert any("corrupt row" in r.message for r in caplog.records)


async def test_corrupt_rows_skipped_by_listings_and_results_raise_once(tmp_path):
    async with SQLiteBackend(tmp_path / "c.db") as b:
        await b.task_queue.enqueue(Task(func="f"))
        bad = await b.task_queue.enqueue(Task(func="g"))
        _corrupt(tmp_path / "c.db", "UPDATE tasks SET payload = x'00' WHERE id = ?", bad)
        assert [t.func for t in await b.task_queue.list_tasks()] == ["f"]
        await b.result_storage.set(TaskResult(task_id="r1", result=1))
        _corrupt(tmp_path / "c.db", "UPDATE results SET payload = '[1, 2' WHERE task_id = 'r1'")
        with pytest.raises(CorruptFileError) as info:
            await b.result_storage.get("r1")
        assert info.value.moved_to == "corrupt/results/r1"
        assert await b.result_storage.get("r1") is None
        assert await b.result_storage.list_results() == []


async def test_claim_without_returning_for_sqlite_before_3_35(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "HAS_RETURNING", False)
    async with SQLiteBackend(tmp_path / "old.db") as b:
        low = await b.task_queue.enqueue(Task(func="low"))
        high = await b.task_queue.enqueue(Task(func="high", priority=1))
        first = await b.task_queue.dequeue("default", worker_id="w1")
        second = await b.task_queue.dequeue("default")
        assert (first.id, second.id) == (high, low)
        assert first.attempts == 1 and first.lease.worker_id == "w1"
        assert await b.task_queue.dequeue("default") is None
        await b.task_queue.finish_task(first)


async def test_a_held_write_lock_is_waited_out_not_surfaced(tmp_path):
    """Another process holding the write lock longer than SQLite's own busy wait: the store
    retries until busy_timeout and the caller never sees "database is locked"."""
    path = tmp_path / "busy.db"
    async with SQLiteBackend(path, busy_timeout=5) as b:
        b.db._connection().execute("PRAGMA busy_timeout = 10")  # SQLite's wait: 10 ms only
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        enqueue = asyncio.ensure_future(b.task_queue.enqueue(Task(func="f")))
        await asyncio.sleep(0.3)
        assert not enqueue.done()
        other.execute("COMMIT")
        other.close()
        await enqueue
        assert await b.task_queue.get_queue_size() == 1


async def test_a_lock_held_past_busy_timeout_is_a_storage_error(tmp_path):
    path = tmp_path / "stuck.db"
    async with SQLiteBackend(path, busy_timeout=0.2) as b:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError, match="stayed locked"):
                await b.task_queue.enqueue(Task(func="f"))
        finally:
            other.execute("ROLLBACK")
            other.close()


def test_sqlite_urls_in_the_app_and_the_cli(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert isinstance(AsyncOmniQ(url).backend, SQLiteBackend)
    with OmniQ(url) as app:
        handle = app.enqueue("add", 2, 3)  # by name: task_defs registers it for the worker
    monkeypatch.chdir(HERE)  # so that --app task_defs:app imports
    monkeypatch.setenv("OMNIQ_TEST_URL", url)
    sys.modules.pop("task_defs", None)
    runner = CliRunner()
    try:
        out = runner.invoke(
            cli, ["--url", url, "worker", "--app", "task_defs:app", "--burst"], obj={}
        )
        assert out.exit_code == 0 and "completed 1" in out.output, out.output
        status = runner.invoke(cli, ["--url", url, "status"], obj={})
        assert status.exit_code == 0 and "sqlite:///" in status.output
        inspect = runner.invoke(cli, ["--url", url, "inspect", handle.id], obj={})
        assert "success" in inspect.output and "5" in inspect.output
    finally:
        sys.modules.pop("task_defs", None)


async def test_two_threads_share_one_backend(tmp_path):
    """The blocking view (its own loop thread) and this loop use one backend at once: calls
    that find the fast connection busy go through the connection thread."""
    async with SQLiteBackend(tmp_path / "t.db") as b:
        blocking = b.get_task_queue(async_mode=False)

        def from_thread() -> None:
            for i in range(200):
                blocking.enqueue(Task(func="thread", args=(i,)))

        worker = asyncio.get_running_loop().run_in_executor(None, from_thread)
        for i in range(200):
            await b.task_queue.enqueue(Task(func="loop", args=(i,)))
        await worker
        assert await b.task_queue.get_queue_size() == 400


async def test_wal_is_checkpointed_while_only_the_fast_connection_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(connection.Database, "CHECKPOINT_EVERY", 100)
    path = tmp_path / "w.db"
    async with SQLiteBackend(path) as b:
        for i in range(1500):
            await b.task_queue.enqueue(Task(func="f", args=(i,)))
        wal = os.path.getsize(f"{path}-wal")
    # Unchecked, each commit appends ~3 pages of 4 KiB: 1,500 commits leave 18-22 MB. Writes
    # queue behind a due checkpoint (it cannot starve however the threads are scheduled), so
    # with a restart every 100 commits the file stops growing near 100 commits' worth.
    assert wal < 4_000_000, wal


async def test_signed_rows_and_an_injected_unsigned_task(tmp_path, monkeypatch):
    """With a secret key every payload carries its HMAC; a row someone inserts without one is
    set aside at the claim, never run."""
    monkeypatch.setenv("OMNIQ_SECRET_KEY", "from-env")
    path = tmp_path / "signed.db"
    async with SQLiteBackend(path) as b:
        legit = await b.task_queue.enqueue(Task(func="legit"))
        evil = Task(func="os.system", args=("rm -rf /",), priority=9)
        conn = sqlite3.connect(path)
        with conn:
            stored = conn.execute("SELECT payload FROM tasks WHERE id = ?", (legit,)).fetchone()
            assert bytes(stored[0]).startswith(b"#omniq-hmac")
            row = tasks._row_values(evil, ".json", Serializer("json").encode(evil))
            conn.execute(tasks._UPSERT, row)
        conn.close()
        got = await b.task_queue.dequeue("default")
        assert got is not None and got.id == legit
        assert await b.task_queue.dequeue("default") is None
        rows = await b.db.read(lambda c: c.execute("SELECT key, error FROM corrupt").fetchall())
        assert [r[0] for r in rows] == [evil.id] and "unsigned" in rows[0][1]
