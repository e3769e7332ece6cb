"""Results under ``<base>/<results_dir>/success/`` and ``failed/``, one object per task id, and
(wired by ``FileBackend``) the results that workers keep in finished tasks' records."""

from __future__ import annotations

from datetime import datetime, timedelta

from omniq.exceptions import ValidationError
from omniq.models._time import utcnow
from omniq.models.ids import validate_id
from omniq.models.result import ResultStatus, TaskResult
from omniq.storage.base import ResultStorage
from omniq.storage.file.common import FileStoreContext
from omniq.storage.file.records import FinishedRecords
from omniq.storage.lifecycle import with_default_expiry

SUCCESS, FAILED = "success", "failed"


class FileResultStorage(ResultStorage):
    """``SUCCESS`` results go to ``success/``, ``FAILED`` and ``CANCELLED`` ones to ``failed/``.

    With ``records`` (a backend's finished-task records) reads also find the results that
    workers store in the record of the task they finished: ``get`` looks in this store's
    folders first (results set here, the dead letter's, older data), then in the records.
    """

    def __init__(
        self, ctx: FileStoreContext, results_dir: str, records: FinishedRecords | None = None
    ) -> None:
        self._ctx = ctx
        self._root = results_dir
        self.records = records

    def _key(self, folder: str, task_id: str) -> str:
        return f"{self._root}/{folder}/{task_id}{self._ctx.ext}"

    async def set(self, result: TaskResult) -> None:
        if not isinstance(result, TaskResult):
            raise ValidationError(f"set takes a TaskResult, got {type(result).__name__}")
        result = with_default_expiry(result, self._ctx.config)
        data = self._ctx.serializer.encode(result)  # fails before anything is written
        folder, other = (SUCCESS, FAILED) if result.is_success else (FAILED, SUCCESS)
        await self._ctx.objects.put(self._key(folder, result.task_id), data)
        if result.attempts != 1:
            # A result of the other kind can only come from an earlier delivery (or a caller
            # setting results by hand): a first delivery saves the request.
            await self._ctx.objects.discard(self._key(other, result.task_id))

    async def get(self, task_id: str) -> TaskResult | None:
        validate_id(task_id, "task id")
        for folder in (SUCCESS, FAILED):
            try:
                return await self._ctx.read(self._key(folder, task_id), TaskResult)
            except FileNotFoundError:
                continue
        if self.records is not None:
            record = await self.records.read(task_id)
            if record is not None:
                return record.result
        return None

    async def list_results(
        self, status: ResultStatus | str | None = None, limit: int | None = None
    ) -> list[TaskResult]:
        return await self._list(status, limit, with_records=self.records is not None)

    async def _list(
        self, status: ResultStatus | str | None, limit: int | None, *, with_records: bool
    ) -> list[TaskResult]:
        if status is None:
            folders = [SUCCESS, FAILED]
        else:
            try:
                wanted = ResultStatus(status)
            except ValueError:
                raise ValidationError(f"unknown result status {status!r}") from None
            folders = [SUCCESS if wanted is ResultStatus.SUCCESS else FAILED]
        in_records: dict[str, list[TaskResult]] = {SUCCESS: [], FAILED: []}
        if with_records and self.records is not None:
            for record in await self.records.scan():
                if record.result is not None:
                    in_records[SUCCESS if record.result.is_success else FAILED].append(
                        record.result
                    )
        out: list[TaskResult] = []
        for folder in folders:
            prefix = f"{self._root}/{folder}"
            names = sorted(
                n for n in await self._ctx.objects.list(prefix) if self._ctx.is_data_name(n)
            )
            found = await self._ctx.read_many([f"{prefix}/{n}" for n in names], TaskResult)
            seen = {r.task_id for r in found}  # a result set here stands before a record's
            found += [r for r in in_records[folder] if r.task_id not in seen]
            for result in sorted(found, key=lambda r: r.task_id):
                if status is None or result.status.value == ResultStatus(status).value:
                    out.append(result)
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    async def delete(self, task_id: str) -> bool:
        validate_id(task_id, "task id")
        removed = False
        for folder in (SUCCESS, FAILED):
            removed = await self._ctx.objects.delete(self._key(folder, task_id)) or removed
        if self.records is not None:
            removed = await self.records.drop_result(task_id) or removed
        return removed

    async def cleanup_expired_results(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        default_ttl = self._ctx.config.result_ttl
        removed = 0
        # Results in records go with their record (``cleanup_expired_tasks``), which is kept
        # until the later of the task's and the result's expiry.
        for result in await self._list(None, None, with_records=False):
            expires = result.expires_at
            if expires is None and default_ttl is not None:
                expires = result.completed_at + timedelta(seconds=default_ttl)
            if expires is not None and expires <= now:
                removed += await self.delete(result.task_id)
        return removed
