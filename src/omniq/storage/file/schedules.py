"""Schedules under ``<base>/<schedules_dir>/active|paused|completed/<id><ext>``.

Run claims (docs/storage-protocol.md, "Schedules") live under
``<schedules_dir>/runs/<schedule id>/<run ms:013d>-<generation><ext>``: each is created with an
exclusive create, so one scheduler of many wins a run; a claim older than ``stale_after`` is taken
over by creating the next generation, exclusively again.
"""

from __future__ import annotations

import itertools
from datetime import datetime

import msgspec

from omniq.exceptions import CorruptFileError, ValidationError
from omniq.models._time import as_utc, utcnow
from omniq.models.ids import validate_id
from omniq.models.schedule import Schedule, ScheduleStatus
from omniq.storage.base import ScheduleStorage
from omniq.storage.file.common import FileStoreContext, to_ms
from omniq.storage.file.keys import split_ext
from omniq.storage.lifecycle import schedule_moved

_FOLDERS = tuple(s.value for s in ScheduleStatus)
RUNS = "runs"


class RunClaim(msgspec.Struct, kw_only=True):
    """Who claimed a run, and when (by its own clock)."""

    owner: str
    claimed_at: datetime


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
        # The claims go first: record_run, finding its claim gone, knows the schedule is going.
        await self._ctx.objects.delete_tree(self._runs(schedule_id))
        removed = False
        for folder in _FOLDERS:
            removed = await self._ctx.objects.delete(self._key(folder, schedule_id)) or removed
        return removed

    def _runs(self, schedule_id: str) -> str:
        return f"{self._root}/{RUNS}/{validate_id(schedule_id, 'schedule id')}"

    def _claim_key(self, schedule_id: str, run_at: datetime, generation: int) -> str:
        ms = to_ms(as_utc(run_at, "run_at"))
        return f"{self._runs(schedule_id)}/{ms:013d}-{generation}{self._ctx.ext}"

    async def claim_run(
        self,
        schedule_id: str,
        run_at: datetime,
        *,
        owner: str,
        now: datetime,
        stale_after: float,
    ) -> int | None:
        now = as_utc(now, "now")
        claim = self._ctx.serializer.encode(RunClaim(owner=owner, claimed_at=now))
        for generation in itertools.count():
            key = self._claim_key(schedule_id, run_at, generation)
            try:
                await self._ctx.objects.put(key, claim, exclusive=True)
                return generation
            except FileExistsError:
                pass
            try:
                held = await self._ctx.read(key, RunClaim)
            except FileNotFoundError:
                return None  # forgotten meanwhile: a later run was decided, so this one was
            except CorruptFileError:
                continue  # set aside; an unreadable claim holds nothing
            if (now - held.claimed_at).total_seconds() < stale_after:
                return None
        raise AssertionError("unreachable")  # pragma: no cover

    async def record_run(self, schedule: Schedule, run_at: datetime) -> bool:
        if schedule.status is not ScheduleStatus.ACTIVE:
            await self.save_schedule(schedule)
            return True
        key = self._key(ScheduleStatus.ACTIVE.value, schedule.id)
        await self._ctx.objects.put(key, self._ctx.serializer.encode(schedule))
        # Written first, checked after: a pause moves active/ to paused/ (so either it moved
        # this write, or paused/ exists now), and delete_schedule removes the run claims before
        # the schedule (so either the claim is still there, or the delete comes after this).
        paused = True
        try:
            await self._ctx.objects.get(self._key(ScheduleStatus.PAUSED.value, schedule.id))
        except FileNotFoundError:
            paused = False
        # Generation 0 of a run's claim stays until a later run is recorded or the schedule is
        # deleted; take-overs add generations beside it.
        claimed = True
        try:
            await self._ctx.objects.get(self._claim_key(schedule.id, run_at, 0))
        except FileNotFoundError:
            claimed = False
        if paused or not claimed:
            await self._ctx.objects.delete(key)
            return False
        return True

    async def forget_runs(self, schedule_id: str, before: datetime) -> int:
        prefix = self._runs(schedule_id)
        limit = to_ms(as_utc(before, "before"))
        removed = 0
        for name in await self._ctx.objects.list(prefix):
            ms = split_ext(name)[0].partition("-")[0]
            if ms.isdigit() and int(ms) < limit:
                await self._ctx.objects.discard(f"{prefix}/{name}")
                removed += 1
        return removed
