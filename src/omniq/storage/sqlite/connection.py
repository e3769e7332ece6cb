"""One SQLite connection per backend, owned by one thread, so the event loop never blocks.

Every call hops to that thread (``await db.read(fn)`` / ``await db.write(fn)``); writes run
inside ``BEGIN IMMEDIATE`` so that a claim or a fenced update is one atomic step against every
other process. Another process's write lock is waited out by SQLite's busy handler and, past
it, by a retry loop until ``busy_timeout``: "database is locked" never reaches the caller
before then, and after it comes as a ``StorageError`` naming the file.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from omniq.exceptions import StorageError
from omniq.storage.sqlite.schema import SCHEMA

T = TypeVar("T")

# UPDATE ... RETURNING arrived in SQLite 3.35; older libraries claim with SELECT + UPDATE in the
# same write transaction (equally atomic: the write lock is held from BEGIN IMMEDIATE).
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

_BUSY = ("database is locked", "database is busy", "database table is locked")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return any(text in str(exc) for text in _BUSY)


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def _probe_write(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value WHERE key = 'schema'")


class Database:
    """The connection thread of one database file; ``open`` / ``close`` may repeat."""

    def __init__(self, path: str, *, fsync: bool, busy_timeout: float) -> None:
        self.path = path
        self.fsync = fsync
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omniq-sqlite")
        try:
            await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._disconnect)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _connect(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if self.path != ":memory:" and not os.path.isdir(directory):
            raise StorageError("the directory of the SQLite database does not exist", self.path)
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database ({exc})", self.path) from exc
        try:
            self._conn = conn
            # WAL: readers never wait for the writer; NORMAL syncs at checkpoints only (a
            # commit survives a process crash, not a power loss), FULL syncs every commit.
            self._with_retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            self._write_sync(_create_schema, script=True)
            # Fails at open, not at the first enqueue, on a database this process cannot write.
            self._write_sync(_probe_write)
        except StorageError:
            self._disconnect()
            raise
        except sqlite3.Error as exc:
            self._disconnect()
            raise StorageError(f"cannot use the SQLite database ({exc})", self.path) from exc

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ calls

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StorageError("the SQLite backend is not open (use `async with backend:`)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection thread, outside any explicit transaction."""
        return await self._run(lambda: self._with_retry(lambda: fn(self._connection())))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside ``BEGIN IMMEDIATE ... COMMIT`` (rolled back if it
        raises), retried while another process holds the write lock."""
        return await self._run(lambda: self._write_sync(fn))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("the SQLite backend is closed", self.path)
        return self._conn

    def _write_sync(self, fn: Callable[[sqlite3.Connection], T], script: bool = False) -> T:
        def attempt() -> T:
            conn = self._connection()
            if script:  # executescript commits on its own
                return fn(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return out

        return self._with_retry(attempt)

    def _with_retry(self, attempt: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StorageError(f"SQLite error ({exc})", self.path) from exc
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"the SQLite database stayed locked for {self.busy_timeout:g} s", self.path
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)
            except sqlite3.DatabaseError as exc:  # "file is not a database", disk I/O errors
                raise StorageError(f"SQLite error ({exc})", self.path) from exc
