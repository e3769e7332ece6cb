"""Schedules in the ``schedules`` table; the ``status`` column is the schedule's status."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from omniq.exceptions import ValidationError
from omniq.models._time import as_utc, utcnow
from omniq.models.ids import validate_id
from omniq.models.schedule import Schedule, ScheduleStatus
from omniq.storage.base import ScheduleStorage
from omniq.storage.lifecycle import schedule_moved, to_ms
from omniq.storage.sqlite.common import Row, SetAside, SQLiteStoreContext

_STATUS_ORDER = " ".join(f"WHEN '{s.value}' THEN {i}" for i, s in enumerate(ScheduleStatus))
_UPSERT = (
    "INSERT OR REPLACE INTO schedules (id, status, next_run_ms, ext, payload) "
    "VALUES (?, ?, ?, ?, ?)"
)


class SQLiteScheduleStorage(ScheduleStorage):
    """Status changes (pause, resume) are one conditional update each."""

    def __init__(self, ctx: SQLiteStoreContext) -> None:
        self._ctx = ctx

    def _row(self, schedule: Schedule) -> tuple[object, ...]:
        next_ms = to_ms(schedule.next_run_at) if schedule.next_run_at else None
        data = self._ctx.serializer.encode(schedule)
        return (schedule.id, schedule.status.value, next_ms, self._ctx.ext, data)

    async def save_schedule(self, schedule: Schedule) -> None:
        if not isinstance(schedule, Schedule):
            raise ValidationError(f"save_schedule takes a Schedule, got {type(schedule).__name__}")
        row = self._row(schedule)  # fails before anything is written
        await self._ctx.db.write(lambda conn: conn.execute(_UPSERT, row))

    def _load(self, conn: sqlite3.Connection, row: Row, aside: list[SetAside]) -> Schedule | None:
        key, status, ext, payload = row
        schedule = self._ctx.decode(conn, "schedules", key, ext, payload, Schedule, aside)
        if schedule is not None:
            schedule.status = ScheduleStatus(status)
        return schedule

    async def _select(self, where: str, params: tuple[object, ...]) -> list[Schedule]:
        sql = f"SELECT id, status, ext, payload FROM schedules WHERE {where}"
        return (await self._ctx.fetch(sql, params, self._load))[0]

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        validate_id(schedule_id, "schedule id")
        found = await self._select("id = ?", (schedule_id,))
        return found[0] if found else None

    async def list_schedules(self, status: ScheduleStatus | str | None = None) -> list[Schedule]:
        where: str = "1"
        params: tuple[object, ...] = ()
        if status is not None:
            try:
                where, params = "status = ?", (ScheduleStatus(status).value,)
            except ValueError:
                raise ValidationError(f"unknown schedule status {status!r}") from None
        return await self._select(f"{where} ORDER BY CASE status {_STATUS_ORDER} END, id", params)

    async def get_ready_schedules(self, now: datetime | None = None) -> list[Schedule]:
        now = as_utc(now, "now") if now is not None else utcnow()
        candidates = await self._select("status = 'active' AND next_run_ms <= ?", (to_ms(now) + 1,))
        ready = [s for s in candidates if s.is_ready(now)]
        ready.sort(key=lambda s: (s.next_run_at or now, s.id))
        return ready

    async def _transition(self, schedule_id: str, src: str, dst: ScheduleStatus) -> bool:
        validate_id(schedule_id, "schedule id")
        aside: list[SetAside] = []

        def move(conn: sqlite3.Connection) -> bool:
            aside.clear()  # a try that met a lock may run again
            row = conn.execute(
                "SELECT id, status, ext, payload FROM schedules WHERE id = ? AND status = ?",
                (schedule_id, src),
            ).fetchone()
            found = None if row is None else self._load(conn, tuple(row), aside)
            if found is None:
                return False
            conn.execute(_UPSERT, self._row(schedule_moved(found, dst)))
            return True

        moved = await self._ctx.db.write(move)
        await self._ctx.report(aside)
        return moved

    async def pause_schedule(self, schedule_id: str) -> bool:
        return await self._transition(schedule_id, "active", ScheduleStatus.PAUSED)

    async def resume_schedule(self, schedule_id: str) -> bool:
        return await self._transition(schedule_id, "paused", ScheduleStatus.ACTIVE)

    async def delete_schedule(self, schedule_id: str) -> bool:
        validate_id(schedule_id, "schedule id")

        def delete(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM schedule_runs WHERE schedule_id = ?", (schedule_id,))
            return int(conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount)

        return bool(await self._ctx.db.write(delete))

    # Run claims: one transaction each, so a claim, a take-over or a record is atomic against
    # every other connection (the write lock), as the exclusive creates are on files.

    async def claim_run(
        self,
        schedule_id: str,
        run_at: datetime,
        *,
        owner: str,
        now: datetime,
        stale_after: float,
    ) -> int | None:
        validate_id(schedule_id, "schedule id")
        run_ms, now_ms = to_ms(as_utc(run_at, "run_at")), to_ms(as_utc(now, "now"))
        stale_ms = int(stale_after * 1000)

        def claim(conn: sqlite3.Connection) -> int | None:
            created = conn.execute(
                "INSERT OR IGNORE INTO schedule_runs VALUES (?, ?, 0, ?, ?)",
                (schedule_id, run_ms, owner, now_ms),
            ).rowcount
            if created:
                return 0
            generation, claimed_ms = conn.execute(
                "SELECT generation, claimed_ms FROM schedule_runs "
                "WHERE schedule_id = ? AND run_ms = ?",
                (schedule_id, run_ms),
            ).fetchone()
            if now_ms - claimed_ms < stale_ms:
                return None
            conn.execute(
                "UPDATE schedule_runs SET generation = ?, owner = ?, claimed_ms = ? "
                "WHERE schedule_id = ? AND run_ms = ?",
                (generation + 1, owner, now_ms, schedule_id, run_ms),
            )
            return int(generation) + 1

        return await self._ctx.db.write(claim)

    async def record_run(self, schedule: Schedule, run_at: datetime) -> bool:
        if schedule.status is not ScheduleStatus.ACTIVE:
            await self.save_schedule(schedule)
            return True
        row = self._row(schedule)
        run_ms = to_ms(as_utc(run_at, "run_at"))

        def record(conn: sqlite3.Connection) -> bool:
            still_active = conn.execute(
                "SELECT 1 FROM schedules WHERE id = ? AND status = 'active'", (schedule.id,)
            ).fetchone()
            claimed = conn.execute(
                "SELECT 1 FROM schedule_runs WHERE schedule_id = ? AND run_ms = ?",
                (schedule.id, run_ms),
            ).fetchone()
            if still_active is None or claimed is None:
                return False  # paused or deleted since the caller read it: it stays so
            conn.execute(_UPSERT, row)
            return True

        return await self._ctx.db.write(record)

    async def forget_runs(self, schedule_id: str, before: datetime) -> int:
        validate_id(schedule_id, "schedule id")
        limit = to_ms(as_utc(before, "before"))
        return await self._ctx.db.write(
            lambda conn: int(
                conn.execute(
                    "DELETE FROM schedule_runs WHERE schedule_id = ? AND run_ms < ?",
                    (schedule_id, limit),
                ).rowcount
            )
        )
