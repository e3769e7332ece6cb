"""The dashboard's ASGI app: pages, the JSON API under ``/api/``, and the actions.

``create_app(app)`` builds it over an ``AsyncOmniQ`` (any backend); ``omniq dashboard`` serves it
with uvicorn. Pages and API read the same ``DashboardData`` (through one shared cache); actions
are POSTs under ``/api/`` that pages send from forms (answered with a redirect back) and scripts
send with the CSRF token in a header (answered with JSON).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from omniq import __version__
from omniq.app import AsyncOmniQ
from omniq.dashboard import actions
from omniq.dashboard.cache import SharedCache
from omniq.dashboard.data import DashboardData, TaskFilter
from omniq.dashboard.openapi import openapi_document
from omniq.dashboard.security import Guard
from omniq.exceptions import OmniQError, ValidationError
from omniq.models.task import TaskStatus

HERE = Path(__file__).parent
ActionFn = Callable[..., Awaitable[actions.Outcome]]


class GuardMiddleware:
    """Host and token checks before anything else (static files included)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            refusal: Response | None = None
            if not self.guard.host_allowed(request):
                refusal = Response("this dashboard answers on loopback names only", 400)
            elif not self.guard.authorized(request):
                refusal = Response(
                    "a token is needed", 401, headers={"WWW-Authenticate": 'Basic realm="OmniQ"'}
                )
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Dashboard:
    """The endpoints, over one app, one cache and one guard."""

    def __init__(
        self, app: AsyncOmniQ, guard: Guard, data: DashboardData, *, read_only: bool, refresh: float
    ) -> None:
        self.app = app
        self.guard = guard
        self.data = data
        self.read_only = read_only
        self.refresh = refresh
        self.where = str(getattr(app.backend, "url", "") or app.backend)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # args, results and errors are user data
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["pretty"] = to_json

    # ------------------------------------------------------------------ rendering

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        html = self.templates.get_template(template).render(
            request=request, csrf=self.guard.csrf_token, read_only=self.read_only,
            refresh=self.refresh, where=self.where, version=__version__,
            flash=request.query_params.get("flash"), here=_here(request), **context,
        )  # fmt: skip
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    # ------------------------------------------------------------------ pages

    async def queues_page(self, request: Request) -> Response:
        return self.page(
            request, "queues.html", chart_ttl=self.data.chart_ttl, **await self.data.queues()
        )

    async def tasks_page(self, request: Request) -> Response:
        where = TaskFilter.parse(dict(request.query_params))
        listing = await self.data.tasks(where)
        return self.page(request, "tasks.html", filter=where, states=list(TaskStatus), **listing,
                         page_link=_page_link(request))  # fmt: skip

    async def task_page(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        found = await self.data.task(task_id)
        if found is None:
            return self.page(request, "missing.html", 404, what=f"task {task_id}")
        return self.page(request, "task.html", task_id=task_id, **found)

    async def schedules_page(self, request: Request) -> Response:
        return self.page(request, "schedules.html", **await self.data.schedules())

    async def dead_letter_page(self, request: Request) -> Response:
        where = TaskFilter.parse({**request.query_params, "state": "failed"})
        listing = await self.data.tasks(where)
        return self.page(request, "dead_letter.html", filter=where, **listing,
                         page_link=_page_link(request))  # fmt: skip

    # ------------------------------------------------------------------ API (reads)

    async def api_queues(self, request: Request) -> Response:
        return json_response(await self.data.queues())

    async def api_tasks(self, request: Request) -> Response:
        return json_response(await self.data.tasks(TaskFilter.parse(dict(request.query_params))))

    async def api_task(self, request: Request) -> Response:
        found = await self.data.task(request.path_params["task_id"])
        if found is None:
            return json_response({"error": "no such task"}, 404)
        return json_response(found)

    async def api_schedules(self, request: Request) -> Response:
        return json_response(await self.data.schedules())

    async def api_dead_letter(self, request: Request) -> Response:
        where = TaskFilter.parse({**request.query_params, "state": "failed"})
        return json_response(await self.data.tasks(where))

    async def api_csrf(self, request: Request) -> Response:
        return json_response({"csrf": self.guard.csrf_token, "read_only": self.read_only})

    async def api_openapi(self, request: Request) -> Response:
        return json_response(openapi_document(__version__))

    # ------------------------------------------------------------------ actions

    def action(self, run: ActionFn, *path_keys: str, fields: tuple[str, ...] = ()) -> Any:
        """A POST endpoint that checks read-only, origin and CSRF, then runs ``run`` with the
        path parameters and form fields named, and answers JSON or (from a page) a redirect."""

        async def endpoint(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
            if self.read_only:
                return _refuse(request, form, 403, "the dashboard is read-only")
            if not self.guard.same_origin(request):
                return _refuse(request, form, 403, "cross-site request refused")
            if not self.guard.csrf_ok(request.headers.get("x-csrf-token") or form.get("csrf")):
                return _refuse(request, form, 403, "missing or wrong CSRF token")
            args = [request.path_params[k] for k in path_keys]
            args += [form.get(f) or request.query_params.get(f) or "" for f in fields]
            outcome = await run(self.app, *args)
            self.data.cache.clear()
            return _answer(request, form, 200 if outcome.done else 409, outcome.message)

        return endpoint


# The POST endpoints: path, action, path parameters and form fields it takes.
ACTIONS: list[tuple[str, ActionFn, tuple[str, ...], tuple[str, ...]]] = [
    ("/api/tasks/{task_id}/retry", actions.retry, ("task_id",), ()),
    ("/api/tasks/{task_id}/cancel", actions.cancel, ("task_id",), ()),
    ("/api/tasks/{task_id}/delete", actions.delete, ("task_id",), ()),
    ("/api/dead-letter/retry-all", actions.retry_all, (), ("queue",)),
    ("/api/schedules/{schedule_id}/pause", actions.pause_schedule, ("schedule_id",), ()),
    ("/api/schedules/{schedule_id}/resume", actions.resume_schedule, ("schedule_id",), ()),
    ("/api/schedules/{schedule_id}/delete", actions.delete_schedule, ("schedule_id",), ()),
    ("/api/purge-expired", actions.purge_expired, (), ()),
]

SECURITY_HEADERS = {
    # Only our own script and style run: a value that escaped escaping still could not execute.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _page_link(request: Request) -> Callable[[int], str]:
    def link(offset: int) -> str:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "flash")}
        return f"{request.url.path}?{urlencode({**params, 'offset': offset})}"

    return link


def _safe_next(form: dict[str, str]) -> str | None:
    """The page to go back to after a form's action: a path on this site only."""
    target = form.get("next")
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _answer(request: Request, form: dict[str, str], status: int, message: str) -> Response:
    back = _safe_next(form)
    if back is not None:
        path, _, query = back.partition("?")
        params = [(k, v) for k, v in parse_qsl(query) if k != "flash"] + [("flash", message)]
        return RedirectResponse(f"{path}?{urlencode(params)}", 303)
    return json_response({"ok": status == 200, "message": message}, status)


def _refuse(request: Request, form: dict[str, str], status: int, message: str) -> Response:
    if _safe_next(form) is not None:  # a page's form: say it as text, never act
        return Response(message, status, media_type="text/plain")
    return json_response({"ok": False, "error": message}, status)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc))


async def _store_error(request: Request, exc: Exception) -> Response:
    """The store failed (unreachable, a corrupt object): say so, as the CLI would."""
    first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
    return _error(request, 503, f"the store failed: {first_line}")


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return json_response({"error": message}, status)
    return Response(message, status, media_type="text/plain")


def create_app(
    app: AsyncOmniQ,
    *,
    token: str | None = None,
    read_only: bool = False,
    cache_ttl: float = 2.0,
    chart_every: float | None = 60.0,
    refresh: float = 5.0,
    cache: SharedCache | None = None,
) -> Starlette:
    """The dashboard over ``app``'s store.

    ``token``: required from every request (bearer, or basic auth password). ``read_only``:
    no action is shown or accepted. ``cache_ttl``: seconds a listing is reused for all viewers.
    ``chart_every``: seconds between reads of the hour's events for the throughput chart, done
    behind the pages (``None`` or 0: no chart; on a bucket it costs a LIST per task of the day).
    ``refresh``: seconds between the pages' live refreshes (0: none).
    """
    guard = Guard(token)
    data = DashboardData(app, cache or SharedCache(cache_ttl), chart_ttl=chart_every)
    d = Dashboard(app, guard, data, read_only=read_only, refresh=refresh)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await app.open()
        try:
            yield
        finally:
            await app.close()

    routes = [
        Route("/", d.queues_page),
        Route("/tasks", d.tasks_page),
        Route("/tasks/{task_id}", d.task_page),
        Route("/schedules", d.schedules_page),
        Route("/dead-letter", d.dead_letter_page),
        Route("/api/queues", d.api_queues),
        Route("/api/tasks", d.api_tasks),
        Route("/api/tasks/{task_id}", d.api_task),
        Route("/api/schedules", d.api_schedules),
        Route("/api/dead-letter", d.api_dead_letter),
        Route("/api/csrf", d.api_csrf),
        Route("/api/openapi.json", d.api_openapi),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    routes += [
        Route(path, d.action(run, *keys, fields=fields), methods=["POST"])
        for path, run, keys, fields in ACTIONS
    ]
    starlette = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={ValidationError: _bad_request, OmniQError: _store_error},
    )  # fmt: skip
    starlette.add_middleware(GuardMiddleware, guard=guard)
    starlette.state.dashboard = d
    return starlette


def json_response(data: Any, status: int = 200) -> Response:
    """JSON through msgspec: what the stdlib refuses (a NaN in a task's args) becomes null."""
    return Response(msgspec.json.encode(data), status, media_type="application/json")


def to_json(value: Any) -> str:
    """Pretty JSON for the pages (args, kwargs, results)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
