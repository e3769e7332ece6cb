"""The OpenAPI description of ``/api/``, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

_TASK_FILTERS = [
    ("queue", "A queue name (default: all queues)."),
    ("state", "pending, running, completed, failed or cancelled (default: all)."),
    ("func", "Only tasks whose function name contains this."),
    ("since", "Only tasks created at or after this ISO time."),
    ("until", "Only tasks created before this ISO time."),
    ("offset", "Skip this many (paging; default 0)."),
    ("limit", "At most this many (1-500; default 50)."),
]

# (method, path, summary, query parameters)
ENDPOINTS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("get", "/api/queues", "Per queue: counts by state, the age of the oldest runnable task, "
     "workers holding live leases; the last hour's throughput from the event store.", []),
    ("get", "/api/tasks", "One page of tasks, filtered. `scanned` tasks were read; `truncated` "
     "says more exist than the dashboard reads per listing.", _TASK_FILTERS),
    ("get", "/api/tasks/{task_id}", "A task (args, kwargs, attempts, lease), its result or "
     "remote traceback, and its event timeline; 404 if unknown.", []),
    ("get", "/api/schedules", "Schedules: recipe, next run (local and UTC), last run, status, "
     "the tasks of their latest runs.", []),
    ("get", "/api/dead-letter", "The failed tasks (the dead letter), as /api/tasks.",
     [f for f in _TASK_FILTERS if f[0] != "state"]),
    ("get", "/api/csrf", "The CSRF token every POST must carry (header X-CSRF-Token).", []),
    ("post", "/api/tasks/{task_id}/retry", "A failed task back to pending (attempts reset).", []),
    ("post", "/api/tasks/{task_id}/cancel", "Cancel a pending task.", []),
    ("post", "/api/tasks/{task_id}/delete", "Delete a finished task and its result (its "
     "events stay until their ttl).", []),
    ("post", "/api/dead-letter/retry-all", "Every failed task of a queue back to pending.",
     [("queue", "The queue (required).")]),
    ("post", "/api/schedules/{schedule_id}/pause", "Pause a schedule.", []),
    ("post", "/api/schedules/{schedule_id}/resume", "Resume a paused schedule.", []),
    ("post", "/api/schedules/{schedule_id}/delete", "Delete a schedule.", []),
    ("post", "/api/purge-expired", "Delete finished tasks, results and events past their ttl.",
     []),
]  # fmt: skip

_ACTION_RESPONSES = {
    "200": {"description": "Done: {ok: true, message}."},
    "409": {"description": "Not done (e.g. the task is not failed): {ok: false, message}."},
    "403": {"description": "Read-only dashboard, another site's Origin, or no/wrong CSRF token."},
}


def openapi_document(version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, query in ENDPOINTS:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("task_id", "schedule_id")
            if "{" + name + "}" in path
        ]
        parameters += [
            {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
            for name, text in query
        ]
        operation: dict[str, Any] = {"summary": summary, "parameters": parameters}
        if method == "post":
            parameters.append(
                {"name": "X-CSRF-Token", "in": "header", "required": True,
                 "schema": {"type": "string"}}
            )  # fmt: skip
            operation["responses"] = _ACTION_RESPONSES
        else:
            operation["responses"] = {"200": {"description": "JSON"}}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "OmniQ dashboard API", "version": version},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            }
        },
        "security": [{"bearer": []}, {"basic": []}, {}],
        "paths": paths,
    }
