"""OmniQ's web dashboard: ``omniq dashboard`` (the ``dashboard`` extra: Starlette + uvicorn).

``create_app(app)`` is an ASGI app over any backend, reading through the stores the workers use.
Pages: queues, tasks, a task, schedules, dead letter; a JSON API under ``/api/``; actions (retry,
cancel, pause/resume/delete a schedule, purge expired) as CSRF-protected POSTs.
"""

from __future__ import annotations

from omniq.dashboard.server import create_app

__all__ = ["create_app"]
