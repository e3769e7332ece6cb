"""The SQLite connections of a backend: the event loop never waits for a lock.

Writes run inside ``BEGIN IMMEDIATE`` (``await db.write(fn)``) so that a claim or a fenced
update is one atomic step against every other process; reads run outside (``db.read(fn)``).
Another process's write lock is waited out on the connection thread, by SQLite's busy handler
and past it by a retry loop until ``busy_timeout``: "database is locked" never reaches the
caller before then, and after it comes as a ``StorageError`` naming the file.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
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


class _Busy(Exception):
    """The fast path met a lock it must not wait for on the event loop."""


class Database:
    """The connections of one database file; ``open`` / ``close`` may repeat.

    Two connections: one owned by a dedicated thread, which may wait for locks (SQLite's busy
    handler, then retries), and a fast one used directly from the calling thread that never
    waits (``busy_timeout=0``): an uncontended statement costs tens of microseconds, less than
    the hop to a thread, as the file backend's local calls run in place. Whatever meets a lock,
    or finds the fast connection in use by another thread, goes to the thread. With ``fsync``
    (every commit synced) writes always go to the thread. The fast connection never
    checkpoints on commit (that syncs the file): the thread does, every ``CHECKPOINT_EVERY``
    fast commits, and until it has run writes queue behind it on the thread — a fast writer
    that took the write lock again after every commit would starve the checkpoint, and the
    WAL would grow without bound.
    """

    CHECKPOINT_EVERY = 300  # ~1,000 pages of WAL, SQLite's own autocheckpoint

    def __init__(self, path: str, *, fsync: bool, busy_timeout: float) -> None:
        self.path = path
        self.fsync = fsync
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._fast: sqlite3.Connection | None = None
        self._fast_lock = threading.Lock()
        self._fast_commits = 0
        self._checkpoint_due = False

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

    def _open_connection(self, timeout: float) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database ({exc})", self.path) from exc

    def _connect(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if self.path != ":memory:" and not os.path.isdir(directory):
            raise StorageError("the directory of the SQLite database does not exist", self.path)
        conn = self._conn = self._open_connection(self.busy_timeout)
        try:
            # WAL: readers never wait for the writer; NORMAL syncs at checkpoints only (a
            # commit survives a process crash, not a power loss), FULL syncs every commit.
            self._with_retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            self._write_sync(_create_schema, script=True)
            # Fails at open, not at the first enqueue, on a database this process cannot write.
            self._write_sync(_probe_write)
            if self.path != ":memory:":  # a second :memory: connection is another database
                fast = self._fast = self._open_connection(0)
                fast.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
                fast.execute("PRAGMA wal_autocheckpoint=0")
        except StorageError:
            self._disconnect()
            raise
        except sqlite3.Error as exc:
            self._disconnect()
            raise StorageError(f"cannot use the SQLite database ({exc})", self.path) from exc

    def _disconnect(self) -> None:
        with self._fast_lock:
            for conn in (self._fast, self._conn):
                if conn is not None:
                    conn.close()
            self._fast = self._conn = None

    # ------------------------------------------------------------------ calls

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StorageError("the SQLite backend is not open (use `async with backend:`)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` outside any explicit transaction (it may run again if its
        first try met a lock)."""
        try:
            return self._try_fast(fn, write=False)
        except _Busy:
            return await self._run(lambda: self._with_retry(lambda: fn(self._connection())))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside ``BEGIN IMMEDIATE ... COMMIT`` (rolled back if it
        raises), retried while another connection holds the write lock; ``fn`` must be safe to
        run again after a rolled-back try."""
        if not self.fsync:
            try:
                return self._try_fast(fn, write=True)
            except _Busy:
                pass
        return await self._run(lambda: self._write_sync(fn))

    def _try_fast(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        """``fn`` on the fast connection, or ``_Busy`` at once where it would have to wait."""
        if write and self._checkpoint_due:
            raise _Busy
        if self._fast is None or not self._fast_lock.acquire(blocking=False):
            raise _Busy
        try:
            conn = self._fast
            if conn is None:
                raise _Busy
            try:
                out = self._transaction(conn, fn) if write else fn(conn)
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if _is_busy(exc):
                    raise _Busy from exc
                raise StorageError(f"SQLite error ({exc})", self.path) from exc
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"SQLite error ({exc})", self.path) from exc
        finally:
            self._fast_lock.release()
        if write:
            self._fast_commits += 1
            if self._fast_commits % self.CHECKPOINT_EVERY == 0 and self._executor is not None:
                self._checkpoint_due = True
                self._executor.submit(self._checkpoint)
        return out

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and start it over (RESTART waits briefly for the
        writers of the moment; fast-path writes meanwhile find the lock and queue here)."""
        try:
            conn = self._connection()
            conn.execute("PRAGMA busy_timeout = 200")
            try:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except (sqlite3.Error, StorageError):
            pass  # the next one (or another process's) catches up
        finally:
            self._checkpoint_due = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("the SQLite backend is closed", self.path)
        return self._conn

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def _write_sync(self, fn: Callable[[sqlite3.Connection], T], script: bool = False) -> T:
        def attempt() -> T:
            conn = self._connection()
            return fn(conn) if script else self._transaction(conn, fn)  # scripts commit alone

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
