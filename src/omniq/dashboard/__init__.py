"""OmniQ's web dashboard: ``omniq dashboard`` (the ``dashboard`` extra: Starlette + uvicorn).

``create_app(app)`` is an ASGI app over any backend, reading through the stores the workers use.
Pages: queues, tasks, a task, schedules, dead letter; a JSON API under ``/api/``; actions (retry,
cancel, pause/resume/delete a schedule, purge expired) as CSRF-protected POSTs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq.dashboard.server import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on use: omniq.dashboard.data (which `omniq status --json` uses) needs no extra.
    if name == "create_app":
        from omniq.dashboard.server import create_app

        return create_app
    raise AttributeError(name)
