"""What every backend offers: lifecycle, the four stores (async or blocking), cleanup."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, overload

from omniq.models.task import Task
from omniq.storage.base import EventStorage, ResultStorage, ScheduleStorage, TaskQueue
from omniq.storage.lifecycle import expiry_report
from omniq.sync import SyncWrapper, run_sync

S = TypeVar("S")
B = TypeVar("B", bound="Backend")


def _view(store: S, async_mode: bool) -> S | SyncWrapper[S]:
    return store if async_mode else SyncWrapper(store)


class Backend(ABC):
    """Use as ``async with backend:`` (or ``with backend:`` from blocking code).

    ``get_task_queue()`` and its siblings return async stores; with ``async_mode=False`` they
    return blocking views whose methods return values directly.
    """

    task_queue: TaskQueue
    result_storage: ResultStorage
    event_storage: EventStorage
    schedule_storage: ScheduleStorage

    @abstractmethod
    async def open(self) -> None:
        """Prepare the storage (create the base directory, probe capabilities)."""

    @abstractmethod
    async def close(self) -> None:
        """Release resources; the backend can be opened again."""

    async def __aenter__(self: B) -> B:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __enter__(self: B) -> B:
        run_sync(self.open())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        run_sync(self.close())

    @overload
    def get_task_queue(self, async_mode: Literal[True] = ...) -> TaskQueue: ...
    @overload
    def get_task_queue(self, async_mode: Literal[False]) -> SyncWrapper[TaskQueue]: ...
    def get_task_queue(self, async_mode: bool = True) -> TaskQueue | SyncWrapper[TaskQueue]:
        return _view(self.task_queue, async_mode)

    @overload
    def get_result_storage(self, async_mode: Literal[True] = ...) -> ResultStorage: ...
    @overload
    def get_result_storage(self, async_mode: Literal[False]) -> SyncWrapper[ResultStorage]: ...
    def get_result_storage(
        self, async_mode: bool = True
    ) -> ResultStorage | SyncWrapper[ResultStorage]:
        return _view(self.result_storage, async_mode)

    @overload
    def get_event_storage(self, async_mode: Literal[True] = ...) -> EventStorage: ...
    @overload
    def get_event_storage(self, async_mode: Literal[False]) -> SyncWrapper[EventStorage]: ...
    def get_event_storage(
        self, async_mode: bool = True
    ) -> EventStorage | SyncWrapper[EventStorage]:
        return _view(self.event_storage, async_mode)

    @overload
    def get_schedule_storage(self, async_mode: Literal[True] = ...) -> ScheduleStorage: ...
    @overload
    def get_schedule_storage(self, async_mode: Literal[False]) -> SyncWrapper[ScheduleStorage]: ...
    def get_schedule_storage(
        self, async_mode: bool = True
    ) -> ScheduleStorage | SyncWrapper[ScheduleStorage]:
        return _view(self.schedule_storage, async_mode)

    def _wire_stores(self) -> None:
        """Connect the stores once they exist: reaped tasks are recorded as events."""
        self.task_queue.on_lease_expired = self._record_lease_expired

    async def _record_lease_expired(self, task: Task) -> None:
        result, event = expiry_report(task)
        if result is not None:
            await self.result_storage.set(result)
        await self.event_storage.log_event(event)

    async def sweep_temp_files(self, queues: Sequence[str] | None = None) -> int:
        """Remove temporary files that interrupted writes left behind (of ``queues`` only, or
        of the whole store) once they are old enough to belong to no write in progress; return
        how many. Backends whose writes leave none return 0."""
        return 0

    async def cleanup_expired(self) -> dict[str, int]:
        """Remove finished tasks, results and events past their ttl; return counts per kind."""
        return {
            "tasks": await self.task_queue.cleanup_expired_tasks(),
            "results": await self.result_storage.cleanup_expired_results(),
            "events": await self.event_storage.cleanup_expired_events(),
        }
