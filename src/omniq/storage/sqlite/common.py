"""What the four SQLite stores share: the database, the serializer, and corrupt-row handling.

Each row keeps the extension of the format it was written in (``ext``), so a database whose
``serialization_format`` changed still reads its older rows, as the file backend does by name.
A row that does not decode is moved to the ``corrupt`` table inside the same transaction that
found it; the report (log line, ``CORRUPTED`` event) follows once that transaction committed.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omniq.exceptions import SerializationError
from omniq.models.config import SQLiteConfig
from omniq.serialization import Serializer
from omniq.storage.sqlite.connection import Database

logger = logging.getLogger("omniq.storage.sqlite")

T = TypeVar("T")

# Called with (the row's source and key, where it was moved, the decoding error).
CorruptionReporter = Callable[[str, str, str, Exception], Awaitable[None]]
Row = tuple[Any, ...]
# Makes one item of a row on the connection thread (None: the row was set aside).
RowLoader = Callable[[sqlite3.Connection, Row, "list[SetAside]"], "T | None"]


@dataclass
class SetAside:
    """A row moved to the ``corrupt`` table, to report after its transaction."""

    source: str
    key: str
    error: Exception

    @property
    def moved_to(self) -> str:
        return f"corrupt/{self.source}/{self.key}"


@dataclass
class SQLiteStoreContext:
    """The parts every SQLite store of one backend shares."""

    db: Database
    serializer: Serializer
    config: SQLiteConfig
    reporters: list[CorruptionReporter] = field(default_factory=list)

    @property
    def ext(self) -> str:
        return self.serializer.extension

    def decode(
        self,
        conn: sqlite3.Connection,
        source: str,
        key: str,
        ext: str,
        payload: bytes,
        type: type[T],
        aside: list[SetAside],
    ) -> T | None:
        """Decode a row's payload on the connection thread (rows fetched in full first); a row
        that does not decode is moved to ``corrupt``, added to ``aside`` and ``None`` returned.
        The move joins the caller's write transaction, or makes its own."""
        name = f"{source}/{key}{ext}"
        try:
            if isinstance(payload, str):  # a value written as TEXT by another tool
                payload = payload.encode()
            if not isinstance(payload, bytes):
                raise SerializationError(f"{name} holds a {payload.__class__.__name__}, not bytes")
            return self.serializer.decode(payload, type, name)
        except SerializationError as exc:
            table, column = SOURCES[source]
            own = not conn.in_transaction
            if own:
                conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO corrupt (source, key, error, at_ms, payload) VALUES (?, ?, ?, ?, ?)",
                (source, key, str(exc), time.time_ns() // 1_000_000, payload),
            )
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,))
            if own:
                conn.execute("COMMIT")
            aside.append(SetAside(source, key, exc))
            return None

    def loader(self, source: str, type: type[T]) -> RowLoader[T]:
        """A ``RowLoader`` of ``(key, ext, payload)`` rows of one source."""

        def load(conn: sqlite3.Connection, row: Row, aside: list[SetAside]) -> T | None:
            key, ext, payload = row
            return self.decode(conn, source, key, ext, payload, type, aside)

        return load

    async def fetch(
        self, sql: str, params: Sequence[object], load: RowLoader[T]
    ) -> tuple[list[T], list[SetAside]]:
        """Rows of a query, each made into an item by ``load`` (rows that do not decode are set
        aside and reported); returns the items and what was set aside."""
        aside: list[SetAside] = []

        def select(conn: sqlite3.Connection) -> list[T]:
            aside.clear()  # a try that met a lock may run again
            rows = conn.execute(sql, params).fetchall()
            return [item for row in rows if (item := load(conn, row, aside)) is not None]

        items = await self.db.read(select)
        await self.report(aside)
        return items, aside

    async def report(self, aside: list[SetAside]) -> None:
        """Log and report rows set aside by ``decode`` (after their transaction committed)."""
        for item in aside:
            logger.warning(
                "corrupt row %s/%s set aside to %s: %s",
                item.source, item.key, item.moved_to, item.error,
            )  # fmt: skip
            for report in self.reporters:
                try:
                    await report(item.source, item.key, item.moved_to, item.error)
                except Exception as exc:
                    logger.error("corruption reporter failed for %s: %s", item.key, exc)


# source name -> (table, key column)
SOURCES = {
    "tasks": ("tasks", "id"),
    "results": ("results", "task_id"),
    "events": ("events", "id"),
    "schedules": ("schedules", "id"),
}
