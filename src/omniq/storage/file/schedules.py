"""Schedules under ``<base>/<schedules_dir>/active|paused|completed/<id><ext>``."""

from __future__ import annotations

from datetime import datetime

from omniq.exceptions import CorruptFileError, ValidationError
from omniq.models._time import as_utc, utcnow
from omniq.models.ids import validate_id
from omniq.models.schedule import Schedule, ScheduleStatus
from omniq.storage.base import ScheduleStorage
from omniq.storage.file.common import FileStoreContext
from omniq.storage.lifecycle import schedule_moved

_FOLDERS = tuple(s.value for s in ScheduleStatus)


class FileScheduleStorage(ScheduleStorage):
    """The folder is the schedule's status; moving between folders is an atomic move."""

    def __init__(self, ctx: FileStoreContext, schedules_dir: str) -> None:
        self._ctx = ctx
        self._root = schedules_dir

    def _key(self, folder: str, schedule_id: str) -> str:
        return f"{self._root}/{folder}/{schedule_id}{self._ctx.ext}"

    async def save_schedule(self, schedule: Schedule) -> None:
        if not isinstance(schedule, Schedule):
            raise ValidationError(f"save_schedule takes a Schedule, got {type(schedule).__name__}")
        data = self._ctx.serializer.encode(schedule)
        target = schedule.status.value
        await self._ctx.objects.put(self._key(target, schedule.id), data)
        for folder in _FOLDERS:
            if folder != target:
                await self._ctx.objects.delete(self._key(folder, schedule.id))

    async def _find(self, schedule_id: str) -> Schedule | None:
        validate_id(schedule_id, "schedule id")
        for folder in _FOLDERS:
            try:
                schedule = await self._ctx.read(self._key(folder, schedule_id), Schedule)
            except FileNotFoundError:
                continue
            except CorruptFileError:
                return None
            schedule.status = ScheduleStatus(folder)
            return schedule
        return None

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self._find(schedule_id)

    async def list_schedules(self, status: ScheduleStatus | str | None = None) -> list[Schedule]:
        if status is None:
            folders = list(_FOLDERS)
        else:
            try:
                folders = [ScheduleStatus(status).value]
            except ValueError:
                raise ValidationError(f"unknown schedule status {status!r}") from None
        out: list[Schedule] = []
        for folder in folders:
            prefix = f"{self._root}/{folder}"
            names = sorted(
                n for n in await self._ctx.objects.list(prefix) if self._ctx.is_data_name(n)
            )
            for schedule in await self._ctx.read_many([f"{prefix}/{n}" for n in names], Schedule):
                schedule.status = ScheduleStatus(folder)
                out.append(schedule)
        return out

    async def get_ready_schedules(self, now: datetime | None = None) -> list[Schedule]:
        now = as_utc(now, "now") if now is not None else utcnow()
        ready = [s for s in await self.list_schedules(ScheduleStatus.ACTIVE) if s.is_ready(now)]
        ready.sort(key=lambda s: (s.next_run_at or now, s.id))
        return ready

    async def _transition(self, schedule_id: str, src: str, dst: ScheduleStatus) -> bool:
        schedule = await self._find(schedule_id)
        if schedule is None or schedule.status.value != src:
            return False
        if not await self._ctx.objects.move(
            self._key(src, schedule_id), self._key(dst.value, schedule_id)
        ):
            return False
        updated = schedule_moved(schedule, dst)
        await self._ctx.objects.put(
            self._key(dst.value, schedule_id), self._ctx.serializer.encode(updated)
        )
        return True

    async def pause_schedule(self, schedule_id: str) -> bool:
        return await self._transition(schedule_id, "active", ScheduleStatus.PAUSED)

    async def resume_schedule(self, schedule_id: str) -> bool:
        return await self._transition(schedule_id, "paused", ScheduleStatus.ACTIVE)

    async def delete_schedule(self, schedule_id: str) -> bool:
        validate_id(schedule_id, "schedule id")
        removed = False
        for folder in _FOLDERS:
            removed = await self._ctx.objects.delete(self._key(folder, schedule_id)) or removed
        return removed
