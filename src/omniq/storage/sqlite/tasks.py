"""The SQLite task queue: one row per task, claims by one atomic UPDATE, leases in columns.

A claim is ``UPDATE ... WHERE id = (first pending row in claim order) RETURNING ...`` inside
``BEGIN IMMEDIATE``: whoever holds the write lock takes the row, so a task has one claimant
however many processes share the file. Fencing compares the lease token in the ``WHERE`` of
every later update (renew, finish, requeue): a worker whose lease was taken over matches no
row and gets ``LeaseLostError``. ``attempts`` counts deliveries including the current one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from omniq.exceptions import LeaseLostError, TaskNotFoundError, ValidationError
from omniq.models._time import utcnow, utcnow_ms
from omniq.models.event import TaskEvent
from omniq.models.ids import validate_id, validate_name
from omniq.models.result import TaskResult
from omniq.models.task import PRIORITY_MAX, Lease, Task, TaskStatus
from omniq.serialization import check_arguments
from omniq.storage.base import QueueStats, TaskQueue
from omniq.storage.checks import dequeue_call, lease_duration, poll
from omniq.storage.lifecycle import (
    at_rest,
    check_final,
    delivered,
    expire_delivery,
    expiry_report,
    final_copy,
    from_ms,
    lease_holder,
    lease_token,
    log_recovered,
    queued_copy,
    to_ms,
)
from omniq.storage.sqlite.common import Row, SetAside, SQLiteStoreContext, logger
from omniq.storage.sqlite.connection import HAS_RETURNING
from omniq.storage.sqlite.events import INSERT_EVENT, event_rows
from omniq.storage.sqlite.results import INSERT_RESULT, result_row

_STATES = [s.value for s in TaskStatus]
_FINISHED = ("completed", "failed", "cancelled")
_ORDER = "rank, due_ms, id"
_COLUMNS = "id, status, attempts, lease_token, lease_expires_ms, lease_worker, ext, payload"

_CLAIM_SET = (
    "SET status = 'running', attempts = attempts + 1, lease_token = ?, lease_expires_ms = ?, "
    "lease_worker = ?"
)
_CLAIM_RETURNING = f"""
UPDATE tasks {_CLAIM_SET}
WHERE id = (SELECT id FROM tasks WHERE status = 'pending' AND queue = ? AND due_ms <= ?
            ORDER BY {_ORDER} LIMIT 1)
RETURNING id, attempts, ext, payload
"""
_NEXT_PENDING = f"""
SELECT id FROM tasks WHERE status = 'pending' AND queue = ? AND due_ms <= ?
ORDER BY {_ORDER} LIMIT 1
"""


def _now_ms() -> int:
    return utcnow_ms()


def _row_values(task: Task, ext: str, payload: bytes) -> dict[str, Any]:
    """The column values of a task at rest in its own status (no lease)."""
    finished = task.status.is_final
    return {
        "id": task.id,
        "queue": task.queue_name,
        "status": task.status.value,
        "rank": PRIORITY_MAX - task.priority,
        "due_ms": to_ms(task.due_at),
        "attempts": task.attempts,
        "lease_token": None,
        "lease_expires_ms": None,
        "lease_worker": None,
        "finished_ms": (
            to_ms(task.completed_at or task.updated_at or task.created_at) if finished else None
        ),
        "ttl": task.ttl,
        "expires_ms": to_ms(task.expires_at) if task.expires_at else None,
        "ext": ext,
        "payload": payload,
    }


_UPSERT = (
    "INSERT OR REPLACE INTO tasks (id, queue, status, rank, due_ms, attempts, lease_token, "
    "lease_expires_ms, lease_worker, finished_ms, ttl, expires_ms, ext, payload) VALUES "
    "(:id, :queue, :status, :rank, :due_ms, :attempts, :lease_token, :lease_expires_ms, "
    ":lease_worker, :finished_ms, :ttl, :expires_ms, :ext, :payload)"
)


class SQLiteTaskQueue(TaskQueue):
    """Task queue in the ``tasks`` table; see the module docstring."""

    def __init__(self, ctx: SQLiteStoreContext) -> None:
        self._ctx = ctx
        self._db = ctx.db
        self._config = ctx.config
        self._last_reap = 0.0

    # ----------------------------------------------------------------- rows <-> tasks

    def _load(self, conn: sqlite3.Connection, row: Row, aside: list[SetAside]) -> Task | None:
        """A task from a ``_COLUMNS`` row, with its status, attempts and lease from columns."""
        task_id, status, attempts, token, expires_ms, worker, ext, payload = row
        task = self._ctx.decode(conn, "tasks", task_id, ext, payload, Task, aside)
        if task is None:
            return None
        task.status = TaskStatus(status)
        task.attempts = attempts
        task.lease = None
        if status == "running" and token is not None:
            task.lease = Lease(
                token=token, expires_at=from_ms(expires_ms), worker_id=worker or lease_holder(token)
            )
        return task

    def _encode(self, task: Task) -> bytes:
        return self._ctx.serializer.encode(task if task.lease is None else at_rest(task))

    # ------------------------------------------------------------------------- enqueue

    async def enqueue(self, task: Task) -> str:
        if not isinstance(task, Task):
            raise ValidationError(f"enqueue takes a Task, got {type(task).__name__}")
        if task.status is TaskStatus.RUNNING:
            # A running task carried over (migration) has no lease here: deliver it again.
            task = at_rest(task)
            task.status = TaskStatus.PENDING
        check_arguments(task.args, task.kwargs, self._ctx.serializer.format)
        values = _row_values(task, self._ctx.ext, self._encode(task))  # fails before writing
        await self._db.write(lambda conn: conn.execute(_UPSERT, values))
        logger.debug("enqueued %s on %s (%s)", task.id, task.queue_name, task.status.value)
        return task.id

    # ------------------------------------------------------------------------- dequeue

    async def dequeue(
        self,
        queues: Sequence[str] | str = ("default",),
        timeout: float | None = None,
        *,
        visibility_timeout: float | None = None,
        worker_id: str | None = None,
    ) -> Task | None:
        call = dequeue_call(queues, timeout, visibility_timeout, worker_id, self._config)

        async def look() -> Task | None:
            await self._maybe_reap()
            return await self._claim(call.queues, int(call.lease_seconds * 1000), worker_id)

        return await poll(look, call.deadline, self._config.poll_interval)

    async def _claim(self, names: list[str], lease_ms: int, worker_id: str | None) -> Task | None:
        def any_due(conn: sqlite3.Connection) -> bool:
            now_ms = _now_ms()
            return any(conn.execute(_NEXT_PENDING, (q, now_ms)).fetchone() for q in names)

        # An idle consumer polls: look without the write lock first, so that idle pollers do
        # not queue for the lock behind the consumers that have work.
        if not await self._db.read(any_due):
            return None
        aside: list[SetAside] = []

        def claim(conn: sqlite3.Connection) -> Task | None:
            aside.clear()  # a try that met a lock may run again
            for queue in names:
                while True:  # past corrupt rows, set aside one by one
                    now_ms = _now_ms()
                    token = lease_token(worker_id)
                    row = self._claim_row(conn, queue, now_ms, now_ms + lease_ms, token, worker_id)
                    if row is None:
                        break
                    task_id, attempts, ext, payload = row
                    task = self._ctx.decode(conn, "tasks", task_id, ext, payload, Task, aside)
                    if task is None:
                        continue
                    task.attempts = attempts - 1  # delivered() counts this delivery
                    lease = Lease(
                        token=token, expires_at=from_ms(now_ms + lease_ms), worker_id=worker_id
                    )
                    return delivered(task, now_ms, lease)
            return None

        task = await self._db.write(claim)
        await self._ctx.report(aside)
        return task

    @staticmethod
    def _claim_row(
        conn: sqlite3.Connection,
        queue: str,
        now_ms: int,
        expires_ms: int,
        token: str,
        worker_id: str | None,
    ) -> tuple[Any, ...] | None:
        """Mark the first due pending row of ``queue`` running under ``token``; return
        (id, attempts, ext, payload) or ``None``. The caller holds the write lock."""
        if HAS_RETURNING:
            row = conn.execute(
                _CLAIM_RETURNING, (token, expires_ms, worker_id, queue, now_ms)
            ).fetchone()
            return None if row is None else tuple(row)
        found = conn.execute(_NEXT_PENDING, (queue, now_ms)).fetchone()
        if found is None:
            return None
        conn.execute(
            f"UPDATE tasks {_CLAIM_SET} WHERE id = ?", (token, expires_ms, worker_id, found[0])
        )
        row = conn.execute(
            "SELECT id, attempts, ext, payload FROM tasks WHERE id = ?", (found[0],)
        ).fetchone()
        return tuple(row)

    # ----------------------------------------------------------------- leases and fencing

    def _token_of(self, task: Task) -> str:
        if task.lease is None:
            raise LeaseLostError(
                f"task {task.id} holds no lease from this queue (was it dequeued?)"
            )
        return task.lease.token

    def _lost(self, task: Task, action: str) -> LeaseLostError:
        logger.warning(
            "refused to %s task %s: its lease was lost (expired and taken over)", action, task.id
        )
        return LeaseLostError(f"cannot {action} task {task.id}: its lease was lost")

    async def _fenced(
        self, task: Task, action: str, sql: str, params: dict[str, Any],
        then: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:  # fmt: skip
        """Run an UPDATE that matches the task's row only while it holds its lease, and
        ``then`` (more writes) in the same transaction if it did."""
        params = {**params, "id": task.id, "token": self._token_of(task)}
        where = " WHERE id = :id AND status = 'running' AND lease_token = :token"

        def update(conn: sqlite3.Connection) -> int:
            changed: int = conn.execute(sql + where, params).rowcount
            if changed and then is not None:
                then(conn)
            return changed

        if not await self._db.write(update):
            raise self._lost(task, action)

    async def renew_lease(self, task: Task, visibility_timeout: float | None = None) -> Task:
        seconds = lease_duration(visibility_timeout, self._config)
        expires_ms = to_ms(utcnow() + timedelta(seconds=seconds))
        await self._fenced(
            task, "renew", "UPDATE tasks SET lease_expires_ms = :expires", {"expires": expires_ms}
        )
        assert task.lease is not None
        task.lease.expires_at = from_ms(expires_ms)
        return task

    async def finish_task(
        self,
        task: Task,
        status: TaskStatus = TaskStatus.COMPLETED,
        error: str | None = None,
        *,
        result: TaskResult | None = None,
        events: Sequence[TaskEvent] = (),
    ) -> Task:
        status = check_final(status)
        self._token_of(task)
        final = final_copy(task, status, error, self._config)
        values = _row_values(final, self._ctx.ext, self._encode(final))
        # The result and events go in the finishing transaction (all encoded before it).
        result_params = result_row(result, self._ctx) if result is not None else None
        event_params = event_rows(events, self._ctx)

        def record(conn: sqlite3.Connection) -> None:
            if result_params is not None:
                conn.execute(INSERT_RESULT, result_params)
            if event_params:
                conn.executemany(INSERT_EVENT, event_params)

        await self._fenced(task, status.value, _SETTLE, values, record)
        return final

    async def requeue_task(
        self, task: Task, *, eta: datetime | None = None, error: str | None = None
    ) -> Task:
        self._token_of(task)
        queued = queued_copy(task, eta, error)
        values = _row_values(queued, self._ctx.ext, self._encode(queued))
        await self._fenced(task, "requeue", _SETTLE, values)
        return queued

    # ---------------------------------------------------------------------- the reaper

    async def _maybe_reap(self) -> None:
        now = time.monotonic()
        if now - self._last_reap >= self._config.reap_interval:
            self._last_reap = now
            await self.requeue_expired()

    async def requeue_expired(self, now: datetime | None = None) -> list[Task]:
        now = now or utcnow()
        aside: list[SetAside] = []

        def reap(conn: sqlite3.Connection) -> list[Task]:
            aside.clear()  # a try that met a lock may run again
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE status = 'running' AND lease_expires_ms <= ?",
                (to_ms(now),),
            ).fetchall()
            out = []
            for row in rows:
                task = self._load(conn, row, aside)
                if task is None:
                    continue
                task.attempts -= 1  # the stored count includes the lost delivery
                task.lease = None
                expire_delivery(task, now, self._config)
                conn.execute(_UPSERT, _row_values(task, self._ctx.ext, self._encode(task)))
                # The report goes in the same transaction: no re-delivery without its event.
                result, event = expiry_report(task)
                if result is not None:
                    conn.execute(INSERT_RESULT, result_row(result, self._ctx))
                conn.executemany(INSERT_EVENT, event_rows([event], self._ctx))
                out.append(task)
            return out

        tasks = await self._db.write(reap)
        await self._ctx.report(aside)
        for task in tasks:
            log_recovered(task, logger)
        return tasks

    # ------------------------------------------------------------------ lookup and admin

    async def _select(self, where: str, params: Sequence[Any], tail: str = "") -> list[Task]:
        sql = f"SELECT {_COLUMNS} FROM tasks WHERE {where} {tail}"
        return (await self._ctx.fetch(sql, params, self._load))[0]

    async def get_task(self, task_id: str) -> Task | None:
        validate_id(task_id, "task id")
        found = await self._select("id = ?", (task_id,))
        return found[0] if found else None

    async def list_tasks(
        self,
        queue_name: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        where, params = ["1"], []
        if queue_name:
            where.append("queue = ?")
            params.append(validate_name(queue_name))
        if status is not None:
            try:
                params.append(TaskStatus(status).value)
            except ValueError:
                raise ValidationError(f"unknown task status {status!r}") from None
            where.append("status = ?")
        state_order = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(_STATES))
        tail = f"ORDER BY queue, CASE status {state_order} END, {_ORDER}"
        if limit is not None:
            tail += f" LIMIT {int(limit)}"
        return await self._select(" AND ".join(where), params, tail)

    async def update_task(self, task: Task) -> None:
        if not isinstance(task, Task):
            raise ValidationError(f"update_task takes a Task, got {type(task).__name__}")
        stored = at_rest(task)
        stored.updated_at = utcnow()
        values = _row_values(stored, self._ctx.ext, self._encode(stored))
        if stored.status is TaskStatus.RUNNING:  # keep a held lease, or make one
            values["lease_token"] = lease_token()
            values["lease_expires_ms"] = to_ms(
                utcnow() + timedelta(seconds=self._config.visibility_timeout)
            )

        def update(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT status, lease_token, lease_expires_ms, lease_worker FROM tasks "
                "WHERE id = ?",
                (task.id,),
            ).fetchone()
            if row is None:
                return False
            if row[0] == "running" and stored.status is TaskStatus.RUNNING and row[1]:
                values.update(lease_token=row[1], lease_expires_ms=row[2], lease_worker=row[3])
            conn.execute(_UPSERT, values)
            return True

        if not await self._db.write(update):
            raise TaskNotFoundError(f"no task {task.id}")

    async def cancel_task(self, task_id: str) -> bool:
        validate_id(task_id, "task id")
        aside: list[SetAside] = []

        def cancel(conn: sqlite3.Connection) -> bool:
            aside.clear()  # a try that met a lock may run again
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE id = ? AND status = 'pending'", (task_id,)
            ).fetchone()
            task = None if row is None else self._load(conn, row, aside)
            if task is None:
                return False
            final = final_copy(task, TaskStatus.CANCELLED, None, self._config)
            conn.execute(_UPSERT, _row_values(final, self._ctx.ext, self._encode(final)))
            return True

        cancelled = await self._db.write(cancel)
        await self._ctx.report(aside)
        return cancelled

    async def delete_task(self, task_id: str) -> bool:
        validate_id(task_id, "task id")
        sql = "DELETE FROM tasks WHERE id = ? AND status IN ('completed', 'failed', 'cancelled')"
        return bool(await self._db.write(lambda conn: conn.execute(sql, (task_id,)).rowcount))

    async def get_queue_size(self, queue_name: str = "default") -> int:
        queue = validate_name(queue_name)
        row = await self._db.read(
            lambda conn: conn.execute(
                "SELECT count(*) FROM tasks WHERE status = 'pending' AND queue = ?", (queue,)
            ).fetchone()
        )
        return int(row[0])

    async def list_queues(self) -> list[str]:
        rows = await self._db.read(
            lambda conn: conn.execute("SELECT DISTINCT queue FROM tasks ORDER BY queue").fetchall()
        )
        return [r[0] for r in rows]

    async def cleanup_expired_tasks(self, now: datetime | None = None) -> int:
        now_ms = to_ms(now or utcnow())
        default_ttl = self._config.task_ttl
        sql = (
            "DELETE FROM tasks WHERE status IN ('completed', 'failed', 'cancelled') AND "
            "coalesce(expires_ms, finished_ms + CAST(coalesce(ttl, ?) * 1000 AS INTEGER)) <= ?"
        )
        return int(
            await self._db.write(lambda conn: conn.execute(sql, (default_ttl, now_ms)).rowcount)
        )

    async def queue_stats(self, now: datetime | None = None) -> list[QueueStats]:
        now_ms = to_ms(now or utcnow())

        def read(conn: sqlite3.Connection) -> dict[str, QueueStats]:
            stats: dict[str, QueueStats] = {}
            for queue, status, count in conn.execute(
                "SELECT queue, status, count(*) FROM tasks GROUP BY queue, status"
            ):
                entry = stats.setdefault(queue, QueueStats(queue=queue))
                setattr(entry, status, count)
            for queue, delayed, oldest in conn.execute(
                "SELECT queue, sum(due_ms > ?1), min(CASE WHEN due_ms <= ?1 THEN due_ms END) "
                "FROM tasks WHERE status = 'pending' GROUP BY queue",
                (now_ms,),
            ):
                stats[queue].delayed = delayed
                stats[queue].oldest_due_at = from_ms(oldest) if oldest is not None else None
            for queue, expires_ms, token, worker in conn.execute(
                "SELECT queue, lease_expires_ms, lease_token, lease_worker FROM tasks "
                "WHERE status = 'running'"
            ):
                entry = stats[queue]
                if expires_ms is None or expires_ms <= now_ms:
                    entry.expired_leases += 1
                else:
                    holder = worker or lease_holder(token or "") or "unknown"
                    entry.workers[holder] = entry.workers.get(holder, 0) + 1
            return stats

        stats = await self._db.read(read)
        return [stats[q] for q in sorted(stats)]


# finish and requeue rewrite the row in its new state and drop the lease.
_SETTLE = (
    "UPDATE tasks SET status = :status, rank = :rank, due_ms = :due_ms, attempts = :attempts, "
    "lease_token = NULL, lease_expires_ms = NULL, lease_worker = NULL, "
    "finished_ms = :finished_ms, ttl = :ttl, expires_ms = :expires_ms, ext = :ext, "
    "payload = :payload"
)
