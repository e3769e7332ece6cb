"""One adapter per queue under test, all with the same two timed operations.

``enqueue(payloads)`` puts the messages; ``drain()`` takes and acknowledges messages until the
queue is empty and returns what it took. Each adapter uses its system's own storage-level API
(no worker loop), the way a consumer would: OmniQ's task queue (dequeue + finish_task; local
directory, memory and SQLite backends), Huey's storage (enqueue/dequeue), kombu's SimpleQueue
(put/get/ack), persist-queue (put/get/ack).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

import msgspec


class System:
    name = "?"
    multi_process = False  # whether several processes may consume one queue
    requires: str | None = None  # the package it needs (the `bench` extra installs them all)

    def __init__(self, path: str) -> None:
        self.path = path

    def enqueue(self, payloads: list[bytes]) -> None:
        raise NotImplementedError

    def drain(self) -> list[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        return None


class Bare(System):
    """The floor: one file per message, temp file + os.replace, claimed by os.rename."""

    name = "bare rename"
    multi_process = True

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.pending, self.done = os.path.join(path, "pending"), os.path.join(path, "done")
        os.makedirs(self.pending, exist_ok=True)
        os.makedirs(self.done, exist_ok=True)
        self.counter = 0

    def enqueue(self, payloads: list[bytes]) -> None:
        prefix = f"{os.getpid()}-"
        for payload in payloads:
            self.counter += 1
            name = f"{prefix}{self.counter:012d}"
            tmp = os.path.join(self.pending, "." + name)
            with open(tmp, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, os.path.join(self.pending, name))

    def drain(self) -> list[bytes]:
        out = []
        while names := sorted(n for n in os.listdir(self.pending) if not n.startswith(".")):
            for name in names:
                dst = os.path.join(self.done, name)
                try:
                    os.rename(os.path.join(self.pending, name), dst)
                except FileNotFoundError:
                    continue
                with open(dst, "rb") as fh:
                    out.append(fh.read())
                os.unlink(dst)
        return out


class OmniQFile(System):
    """OmniQ's file task queue through the public async API (one event loop per call)."""

    name = "omniq local"
    multi_process = True
    url_prefix = ""

    def _backend(self) -> Any:
        from omniq.backend.file import FileBackend

        return FileBackend.from_url(self.url_prefix + self.path, visibility_timeout=3600)

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.backend = self._backend()

    def enqueue(self, payloads: list[bytes]) -> None:
        from omniq.models.task import Task

        async def go() -> None:
            q = self.backend.task_queue
            for payload in payloads:
                await q.enqueue(Task(func="f", args=(payload.decode("latin-1"),)))

        asyncio.run(go())

    def drain(self) -> list[bytes]:
        async def go() -> list[bytes]:
            q = self.backend.task_queue
            out = []
            while (task := await q.dequeue("default")) is not None:
                await q.finish_task(task)
                out.append(task.args[0].encode("latin-1"))
            return out

        return asyncio.run(go())


class OmniQMemory(OmniQFile):
    name = "omniq memory"
    multi_process = False
    url_prefix = "memory://"


class OmniQSQLite(OmniQFile):
    """OmniQ's SQLite backend, opened once (its connection thread outlives each event loop)."""

    name = "omniq sqlite"
    multi_process = True
    fsync = False

    def _backend(self) -> Any:
        from omniq.backend.sqlite import SQLiteBackend

        os.makedirs(self.path, exist_ok=True)
        backend = SQLiteBackend(
            os.path.join(self.path, "omniq.db"), visibility_timeout=3600, fsync=self.fsync
        )
        asyncio.run(backend.open())
        return backend

    def close(self) -> None:
        asyncio.run(self.backend.close())


class OmniQSQLiteFsync(OmniQSQLite):
    """``fsync=True``: synchronous=FULL, every commit synced, as SqliteHuey does by default."""

    name = "omniq sqlite fsync"
    fsync = True


class HueyFile(System):
    name = "huey FileHuey"
    multi_process = True
    requires = "huey"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from huey.storage import FileStorage

        self.storage = FileStorage("bench", path)

    def enqueue(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.storage.enqueue(payload)

    def drain(self) -> list[bytes]:
        out = []
        while (data := self.storage.dequeue()) is not None:
            out.append(data)
        return out


class HueySqlite(HueyFile):
    name = "huey SqliteHuey"

    def __init__(self, path: str) -> None:
        System.__init__(self, path)
        from huey.storage import SqliteStorage

        os.makedirs(path, exist_ok=True)
        self.storage = SqliteStorage("bench", os.path.join(path, "huey.db"))


class KombuFS(System):
    name = "kombu filesystem"
    multi_process = False
    requires = "kombu"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from kombu import Connection
        from kombu.transport import filesystem

        # Its transport keeps declared exchanges and bindings in a process-wide state: a second
        # connection to a new folder thinks the queue bound, writes no exchange table there,
        # and every message it publishes is dropped (kombu 5.7: the runs after the first
        # drained nothing).
        filesystem.Transport.global_state.clear()
        os.makedirs(path, exist_ok=True)
        # Its exchange table goes to ./control unless told otherwise: keep it in the run's folder.
        options = {
            "data_folder_in": path, "data_folder_out": path, "store_processed": False,
            "control_folder": os.path.join(path, "control"),
        }  # fmt: skip
        self.conn = Connection("filesystem://", transport_options=options)
        self.queue = self.conn.SimpleQueue("bench", serializer="json")

    def enqueue(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.queue.put(payload.decode("latin-1"))

    def drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                msg = self.queue.get(block=False)
            except self.queue.Empty:
                return out
            msg.ack()
            out.append(msg.payload.encode("latin-1"))

    def close(self) -> None:
        self.queue.close()
        self.conn.release()


class PersistQueueFile(System):
    name = "persist-queue Queue"
    requires = "persistqueue"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import persistqueue

        self.q = persistqueue.Queue(path, autosave=True)

    def enqueue(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.q.put(payload)

    def take(self) -> bytes:
        """One message, acknowledged; ``persistqueue.Empty`` when there is none."""
        data: bytes = self.q.get(block=False)
        self.q.task_done()
        return data

    def drain(self) -> list[bytes]:
        import persistqueue

        out = []
        while True:
            try:
                out.append(self.take())
            except persistqueue.Empty:
                return out


class PersistQueueSqliteAck(PersistQueueFile):
    name = "persist-queue SQLiteAckQueue"
    requires = "persistqueue"

    def __init__(self, path: str) -> None:
        System.__init__(self, path)
        import persistqueue

        self.q = persistqueue.SQLiteAckQueue(path, auto_commit=True, multithreading=True)

    def take(self) -> bytes:
        item = self.q.get(block=False, raw=True)
        self.q.ack(id=item["pqid"])
        data: bytes = item["data"]
        return data


ALL_SYSTEMS: list[type[System]] = [
    Bare, OmniQFile, OmniQMemory, OmniQSQLite, OmniQSQLiteFsync, HueySqlite, HueyFile, KombuFS,
    PersistQueueFile, PersistQueueSqliteAck,
]  # fmt: skip
MISSING = [s.name for s in ALL_SYSTEMS if s.requires and not importlib.util.find_spec(s.requires)]
SYSTEMS = [s for s in ALL_SYSTEMS if s.name not in MISSING]


def payload_of(size: int, i: int = 0) -> bytes:
    """A message of ``size`` bytes, unique per i (to detect duplicates and losses)."""
    head = msgspec.json.encode(i)
    return head + b" " + b"x" * max(0, size - len(head) - 1)
