"""Results in the ``results`` table, one row per task id (a later ``set`` replaces it)."""

from __future__ import annotations

from datetime import datetime

from omniq.exceptions import CorruptFileError, ValidationError
from omniq.models._time import utcnow
from omniq.models.ids import validate_id
from omniq.models.result import ResultStatus, TaskResult
from omniq.storage.base import ResultStorage
from omniq.storage.lifecycle import to_ms, with_default_expiry
from omniq.storage.sqlite.common import SQLiteStoreContext

INSERT_RESULT = (
    "INSERT OR REPLACE INTO results (task_id, status, success, completed_ms, expires_ms, ext, "
    "payload) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def result_row(result: TaskResult, ctx: SQLiteStoreContext) -> tuple[object, ...]:
    """The ``INSERT_RESULT`` parameters of a result (encoding fails before anything is written);
    the task queue's finish writes them in its own transaction."""
    if not isinstance(result, TaskResult):
        raise ValidationError(f"set takes a TaskResult, got {type(result).__name__}")
    result = with_default_expiry(result, ctx.config)
    data = ctx.serializer.encode(result)
    return (
        result.task_id, result.status.value, int(result.is_success), to_ms(result.completed_at),
        to_ms(result.expires_at) if result.expires_at else None, ctx.ext, data,
    )  # fmt: skip


class SQLiteResultStorage(ResultStorage):
    """``list_results`` gives successes first, then failures, each by task id (as on files)."""

    def __init__(self, ctx: SQLiteStoreContext) -> None:
        self._ctx = ctx

    async def set(self, result: TaskResult) -> None:
        row = result_row(result, self._ctx)
        await self._ctx.db.write(lambda conn: conn.execute(INSERT_RESULT, row))

    async def _select(self, where: str, params: tuple[object, ...]) -> list[TaskResult]:
        results, aside = await self._ctx.fetch(
            f"SELECT task_id, ext, payload FROM results WHERE {where}",
            params,
            self._ctx.loader("results", TaskResult),
        )
        if aside and where.startswith("task_id = ?"):
            item = aside[0]
            raise CorruptFileError(str(item.error), f"results/{item.key}", item.moved_to)
        return results

    async def get(self, task_id: str) -> TaskResult | None:
        validate_id(task_id, "task id")
        found = await self._select("task_id = ?", (task_id,))
        return found[0] if found else None

    async def list_results(
        self, status: ResultStatus | str | None = None, limit: int | None = None
    ) -> list[TaskResult]:
        where: str = "1"
        params: tuple[object, ...] = ()
        if status is not None:
            try:
                where, params = "status = ?", (ResultStatus(status).value,)
            except ValueError:
                raise ValidationError(f"unknown result status {status!r}") from None
        tail = " ORDER BY success DESC, task_id"
        if limit is not None:
            tail += f" LIMIT {int(limit)}"
        return await self._select(where + tail, params)

    async def delete(self, task_id: str) -> bool:
        validate_id(task_id, "task id")
        removed = await self._ctx.db.write(
            lambda conn: conn.execute("DELETE FROM results WHERE task_id = ?", (task_id,)).rowcount
        )
        return bool(removed)

    async def cleanup_expired_results(self, now: datetime | None = None) -> int:
        now_ms = to_ms(now or utcnow())
        ttl = self._ctx.config.result_ttl
        sql = (
            "DELETE FROM results WHERE "
            "coalesce(expires_ms, completed_ms + CAST(? * 1000 AS INTEGER)) <= ?"
        )
        return int(await self._ctx.db.write(lambda conn: conn.execute(sql, (ttl, now_ms)).rowcount))
