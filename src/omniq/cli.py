"""The ``omniq`` command: worker, enqueue, status, tasks, inspect, cancel, retry, purge, cleanup,
shards, schedule, scheduler, migrate, dashboard.

Expected errors are one line without a traceback: exit code 2 for a usage mistake, 1 for a
runtime error (``OmniQError``). ``--url``/``--app`` and the log options go before or after the
subcommand."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from omniq import __version__, logs
from omniq.app import AsyncOmniQ, OmniQ
from omniq.exceptions import OmniQError, TaskBusyError
from omniq.migrate import STORES, MigrationReport, migrate_async, parse_stores
from omniq.models._time import utcnow
from omniq.models.schedule import Misfire, Schedule, ScheduleType
from omniq.models.task import Task, TaskStatus
from omniq.storage.base import QueueStats
from omniq.storage.file.shards import ShardCounts
from omniq.storage.file.task_queue import FileTaskQueue
from omniq.worker import KINDS

console = Console(width=None if sys.stdout.isatty() else 120)


def load_app(spec: str) -> AsyncOmniQ:
    """Import ``module:attribute`` (from the current directory) and return the async app."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"expected module:attribute, got {spec!r}", param_hint="--app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and module_name.startswith(exc.name or "\0"):
            raise click.BadParameter(
                f"cannot import {module_name!r}: {exc}", param_hint="--app"
            ) from None
        raise click.ClickException(f"--app {spec}: importing {module_name} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while it was imported
        raise click.ClickException(
            f"--app {spec}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise click.BadParameter(f"{module_name!r} has no {attr!r}", param_hint="--app")
    if isinstance(target, OmniQ):
        return target.wrapped
    if isinstance(target, AsyncOmniQ):
        return target
    raise click.BadParameter(
        f"{spec} is a {type(target).__name__}, not an OmniQ app", param_hint="--app"
    )


def resolve_app(ctx: click.Context, read_only: bool = False) -> AsyncOmniQ:
    """The ``--app`` app, else one on ``--url``. ``read_only``: a local location that does not
    exist is an error (naming it) rather than a new empty directory."""
    spec = ctx.obj.get("app")
    if spec:
        application = load_app(spec)
    else:
        url = ctx.obj.get("url")
        application = AsyncOmniQ(url) if url else AsyncOmniQ()
    if read_only:
        where = local_location(application)
        if where is not None and not os.path.exists(where):
            raise click.ClickException(f"no OmniQ data at {where} (check --url or OMNIQ_URL)")
    return application


def local_location(application: AsyncOmniQ) -> str | None:
    """The local path a backend keeps its data at, if it is local."""
    backend: Any = application.backend
    if getattr(backend, "protocol", None) == "file":
        return str(backend.root)
    path = getattr(backend, "path", None)  # a database file (the SQLite backend)
    if isinstance(path, str) and path != ":memory:":
        return path
    return None


def run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except OmniQError as exc:
        raise click.ClickException(str(exc)) from exc


def age(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (utcnow() - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option given after the subcommand: it overrides the one given before."""
    if value is not None and value != 0:
        ctx.find_root().ensure_object(dict)[param.name or ""] = value
    return value


URL_HELP = (
    "Where the data lives: a path or URL, sqlite:///file.db for SQLite (default: OMNIQ_URL, "
    "else OMNIQ_BASE_DIR / OMNIQ_FSSPEC_URI, else ./omniq_data)."
)
APP_HELP = "module:attribute of an OmniQ app to use (its location, its tasks' options)."


def global_options(func: Any) -> Any:
    """``--url`` and ``--app``, accepted on every subcommand as well as before it."""
    func = click.option("--url", callback=_remember, expose_value=False, help=URL_HELP)(func)
    return click.option("--app", callback=_remember, expose_value=False, help=APP_HELP)(func)


def log_options(func: Any) -> Any:
    """``-v``/``-q``/``--log-level``/``--log-format`` on a long-running subcommand."""
    for short, long, text in (("-v", "--verbose", "More log output (repeat for more)."),
                              ("-q", "--quiet", "Less log output (repeat for less).")):  # fmt: skip
        func = click.option(short, long, count=True, callback=_remember, expose_value=False,
                            help=text)(func)  # fmt: skip
    func = click.option(
        "--log-level", type=click.Choice(logs.LEVELS, case_sensitive=False), callback=_remember,
        expose_value=False, help="Log level (default INFO; env OMNIQ_LOG_LEVEL).",
    )(func)  # fmt: skip
    return click.option(
        "--log-format", type=click.Choice(logs.FORMATS), callback=_remember, expose_value=False,
        help="auto: rich on a terminal, plain lines elsewhere; json: one object a line.",
    )(func)  # fmt: skip


def setup_logging(ctx: click.Context) -> None:
    obj = ctx.find_root().obj
    level = logs.level_for(obj.get("verbose", 0), obj.get("quiet", 0), obj.get("log_level"))
    logs.configure(level, obj.get("log_format") or "auto")


class OmniQGroup(click.Group):
    """Turns the library's expected errors into one-line messages (exit code 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OmniQError as exc:
            raise click.ClickException(
                str(exc).splitlines()[0] if str(exc) else repr(exc)
            ) from None


@click.group(cls=OmniQGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="omniq")
@click.option("--url", envvar="OMNIQ_URL", default=None, help=URL_HELP)
@click.option("--app", "app", default=None, help=APP_HELP)
@click.option("--log-level", envvar="OMNIQ_LOG_LEVEL", callback=_remember, expose_value=False,
              type=click.Choice(logs.LEVELS, case_sensitive=False),
              help="Log level (default INFO; env OMNIQ_LOG_LEVEL).")  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, url: str | None, app: str | None) -> None:
    """OmniQ: a task queue whose broker is a directory or a bucket."""
    ctx.ensure_object(dict)
    ctx.obj["url"] = url
    ctx.obj["app"] = app


@cli.command()
@global_options
@click.option(
    "--queues", "-Q", default="default", show_default=True,
    help="Comma-separated, in priority order.",
)  # fmt: skip
@click.option("--concurrency", "-c", default=4, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--kind", type=click.Choice(KINDS), default="thread", show_default=True,
    help="How plain functions run; async runs only async def tasks (refused otherwise).",
)  # fmt: skip
@click.option(
    "--visibility-timeout", type=click.FloatRange(min=0, min_open=True),
    envvar="OMNIQ_VISIBILITY_TIMEOUT",
    default=None, help="Lease seconds (default: the backend's, 60).",
)  # fmt: skip
@click.option("--burst", is_flag=True, help="Stop when no task is runnable now.")
@click.option("--grace-period", default=30.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--worker-id", default=None, help="Name of this worker (default: host_pid).")
@click.option(
    "--scheduler/--no-scheduler", default=True, show_default=True,
    help="Also fire due schedule runs (each run once, however many workers do).",
)  # fmt: skip
@click.option(
    "--cleanup-interval", type=click.FloatRange(min=0), default=3600.0, show_default=True,
    help="Seconds between deletions of what is past its ttl (one worker of all does each; "
    "0: never).",
)  # fmt: skip
@log_options
@click.pass_context
def worker(
    ctx: click.Context, queues: str, concurrency: int, kind: str,
    visibility_timeout: float | None, burst: bool, grace_period: float, worker_id: str | None,
    scheduler: bool, cleanup_interval: float,
) -> None:  # fmt: skip
    """Run a worker: claim tasks from QUEUES and run them until SIGTERM/SIGINT (or --burst).

    It logs a start-up banner, a line per task outcome and its shutdown to stderr."""
    if not ctx.obj.get("app"):
        raise click.UsageError(
            "the worker needs --app module:attribute (the app whose tasks it runs)"
        )
    setup_logging(ctx)
    application = resolve_app(ctx)

    async def go() -> Any:
        w = application.worker(
            queues.split(","), concurrency, kind, visibility_timeout, burst, grace_period,
            worker_id, scheduler=scheduler, cleanup_interval=cleanup_interval or None,
        )  # fmt: skip
        async with application:  # closes the store's connections when the worker stops
            with w.handle_signals():
                return await w.run()

    stats = run(go())
    console.print(
        f"worker {stats.worker_id}: claimed {stats.claimed}, completed {stats.completed}, "
        f"failed {stats.failed}, retried {stats.retried}, released {stats.released}, "
        f"lost {stats.lost}"
    )


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_kwargs(text: str) -> dict[str, Any]:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"invalid JSON ({exc}): {text!r}", param_hint="--kwargs") from None
    if not isinstance(kwargs, dict):
        raise click.BadParameter(
            f"must be a JSON object, got {type(kwargs).__name__}", param_hint="--kwargs"
        )
    return kwargs


def check_registered(ctx: click.Context, application: AsyncOmniQ, func: str) -> None:
    """With --app, FUNC must be registered there; without, warn that its options are unknown."""
    app_spec = ctx.obj.get("app")
    if app_spec and func not in application.registry:
        raise click.BadParameter(f"{func!r} is not registered with {app_spec}", param_hint="FUNC")
    if not app_spec:
        click.echo(
            f"warning: no --app, so {func}'s @app.task options (queue, max_retries, timeout, "
            "ttl) are not applied; pass --app module:attribute to apply them", err=True,
        )  # fmt: skip


@cli.command()
@global_options
@click.argument("func")
@click.argument("args", nargs=-1)
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object.")
@click.option("--queue", default=None, help="Queue (default: the task's, else 'default').")
@click.option("--delay", type=click.FloatRange(min=0), default=None, help="Seconds to wait.")
@click.option("--priority", type=int, default=None)
@click.option("--max-retries", type=click.IntRange(min=0), default=None)
@click.pass_context
def enqueue(
    ctx: click.Context, func: str, args: tuple[str, ...], kwargs_json: str, queue: str | None,
    delay: float | None, priority: int | None, max_retries: int | None,
) -> None:  # fmt: skip
    """Enqueue FUNC(ARGS...) by its registered name. ARGS are JSON values (else strings).

    With --app the task's @app.task options (queue, max_retries, timeout, ttl...) apply;
    without it only the options given here do."""
    kwargs = parse_kwargs(kwargs_json)
    application = resolve_app(ctx)
    check_registered(ctx, application, func)

    async def go() -> str:
        async with application:
            if func in application.registry:
                handle = await application.enqueue(
                    func, *[parse_value(a) for a in args], queue=queue, delay=delay,
                    priority=priority, max_retries=max_retries, **kwargs,
                )  # fmt: skip
                return handle.id
            task = Task(
                func=func, args=tuple(parse_value(a) for a in args), kwargs=kwargs,
                queue_name=queue or "default", delay=delay, priority=priority or 0,
                max_retries=max_retries or 0,
            )  # fmt: skip
            return (await application.enqueue_task(task)).id

    try:
        console.print(run(go()))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@global_options
@click.option("--watch", is_flag=True, help="Refresh the table until Ctrl-C.")
@click.option(
    "--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.05),
    help="Seconds between refreshes with --watch.",
)  # fmt: skip
@click.option("--iterations", type=click.IntRange(min=1), default=None, hidden=True)
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print the counts as JSON, as the dashboard's GET /api/queues has them (one line per "
    "refresh with --watch).",
)  # fmt: skip
@click.pass_context
def status(
    ctx: click.Context, watch: bool, interval: float, iterations: int | None, as_json: bool
) -> None:
    """Per-queue counts by state, oldest runnable task, and workers holding leases."""
    application = resolve_app(ctx, read_only=True)
    where = str(getattr(application.backend, "url", ""))

    async def go() -> None:
        async with application:
            stats = application.backend.task_queue.queue_stats
            if as_json:
                await print_json_status(stats, interval if watch else None, iterations)
                return
            if not watch:
                console.print(status_table(await stats(), where))
                return
            with Live(status_table(await stats(), where), console=console) as live:
                done = 1
                while iterations is None or done < iterations:
                    await asyncio.sleep(interval)
                    live.update(status_table(await stats(), where))
                    done += 1

    with contextlib.suppress(KeyboardInterrupt):
        run(go())


async def print_json_status(stats: Any, interval: float | None, iterations: int | None) -> None:
    """``status --json``: one JSON object, or one a line every ``interval`` seconds."""
    from omniq.dashboard.data import queue_row

    done = 0
    while True:
        now = utcnow()
        rows = [queue_row(s, now) for s in await stats(now)]
        click.echo(json.dumps({"queues": rows, "generated_at": now.isoformat()}))
        done += 1
        if interval is None or (iterations is not None and done >= iterations):
            return
        await asyncio.sleep(interval)


def status_table(rows: list[QueueStats], where: str) -> Table | str:
    """The ``omniq status`` table (also used by the demo)."""
    if not rows:
        return "no queues yet"
    table = Table(title=f"OmniQ at {where}")
    for col in ("queue", "pending", "delayed", "running", "completed", "failed", "cancelled",
                "oldest pending", "workers"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("queue", "workers") else "right")
    for s in rows:
        workers = ", ".join(f"{w} ({n})" for w, n in sorted(s.workers.items()))
        if s.expired_leases:
            workers += f" [{s.expired_leases} expired lease(s)]"
        name = s.queue if s.shards == 1 else f"{s.queue} ({s.shards} shards)"
        table.add_row(
            name, str(s.pending), str(s.delayed), str(s.running), str(s.completed),
            str(s.failed), str(s.cancelled), age(s.oldest_due_at), workers or "-",
        )  # fmt: skip
    return table


STATES = [s.value for s in TaskStatus]


@cli.command()
@global_options
@click.option("--queue", default=None, help="Only this queue (default: all).")
@click.option("--state", type=click.Choice(STATES), default=None, help="Only tasks in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.pass_context
def tasks(ctx: click.Context, queue: str | None, state: str | None, limit: int) -> None:
    """List tasks: id, task, queue, state, attempts, age, last error."""
    application = resolve_app(ctx, read_only=True)

    async def go() -> list[Task]:
        async with application:
            return await application.backend.task_queue.list_tasks(queue, state, limit)

    found = sorted(run(go()), key=lambda t: t.created_at)
    if not found:
        console.print("no tasks" + (f" in state {state}" if state else "")
                      + (f" in queue {queue}" if queue else ""))  # fmt: skip
        return
    full = " (--limit reached)" if len(found) >= limit else ""
    table = Table(title=f"{len(found)} task(s){full}")
    for col in ("id", "task", "queue", "state", "attempts", "age", "error"):
        table.add_column(col, no_wrap=col == "id")
    for t in found:
        table.add_row(
            t.id, t.func, t.queue_name, t.status.value, f"{t.attempts}/{t.max_retries + 1}",
            age(t.created_at), (t.error or "")[:60],
        )  # fmt: skip
    console.print(table)


@cli.command()
@global_options
@click.argument("task_id")
@click.pass_context
def inspect(ctx: click.Context, task_id: str) -> None:
    """Show a task, its result and its event timeline."""
    application = resolve_app(ctx, read_only=True)

    async def go() -> Any:
        async with application:
            backend = application.backend
            return (
                await backend.task_queue.get_task(task_id),
                await backend.result_storage.get(task_id),
                await backend.event_storage.get_events(task_id=task_id),
            )

    try:
        task, result, events = run(go())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if task is None and result is None and not events:
        raise click.ClickException(f"no task, result or event for {task_id}")
    if task is not None:
        t = Table(title=f"task {task.id}", show_header=False)
        fields = ["func", "args", "kwargs", "queue_name", "status", "priority", "attempts"]
        fields += ["max_retries", "eta", "created_at", "started_at", "completed_at", "error"]
        for field in fields:
            value = getattr(task, field)
            t.add_row(field, str(value.value if hasattr(value, "value") else value))
        for key in ("schedule_id", "scheduled_for"):  # a task a schedule's run enqueued
            if key in task.metadata:
                t.add_row(key, str(task.metadata[key]))
        console.print(t)
    if result is not None:
        if result.status.value == "success":
            console.print(f"[bold]result[/bold]: success  {result.result!r}", highlight=False)
        else:
            console.print(f"[bold]result[/bold]: {result.status.value}", highlight=False)
        if result.error:
            console.print(result.error, style="red", markup=False, highlight=False)
        if result.traceback:
            console.print(result.traceback, markup=False, highlight=False)
    if events:
        t = Table(title="events")
        for col in ("time (UTC)", "event", "attempt", "worker", "message"):
            t.add_column(col)
        for e in events:
            t.add_row(
                e.timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                e.event_type.value, str(e.attempt or ""), e.worker_id or "", e.message or "",
            )  # fmt: skip
        console.print(t)


@cli.command()
@global_options
@click.argument("task_id")
@click.pass_context
def cancel(ctx: click.Context, task_id: str) -> None:
    """Cancel a pending task (a running one finishes; a finished one stays as it is)."""
    application = resolve_app(ctx, read_only=True)

    async def go() -> tuple[bool, Task | None]:
        async with application:
            if await application.cancel(task_id):
                return True, None
            return False, await application.backend.task_queue.get_task(task_id)

    cancelled, task = run(go())
    if not cancelled:
        raise click.ClickException(
            f"no task {task_id}" if task is None
            else f"task {task_id} is {task.status.value}, not pending: not cancelled"
        )  # fmt: skip
    console.print(f"{task_id} cancelled")


@cli.command()
@global_options
@click.argument("task_id", required=False)
@click.option("--all", "every", is_flag=True, help="Every failed task of --queue.")
@click.option("--queue", default=None, help="With --all: the queue.")
@click.pass_context
def retry(ctx: click.Context, task_id: str | None, every: bool, queue: str | None) -> None:
    """Send failed (dead-lettered) tasks back to pending: TASK_ID, or --all --queue Q.

    Attempts are reset (the task gets its max_retries again); its last error is kept on the
    task and in its events."""
    if every == (task_id is not None) or (every and not queue):
        raise click.UsageError("give a TASK_ID, or --all with --queue Q")
    application = resolve_app(ctx, read_only=True)

    busy: list[str] = []

    async def go() -> list[str]:
        async with application:
            if task_id is not None:
                try:
                    if await application.retry(task_id):
                        return [task_id]
                except TaskBusyError as exc:
                    raise click.ClickException(str(exc)) from None
                task = await application.backend.task_queue.get_task(task_id)
                raise click.ClickException(
                    f"no task {task_id}" if task is None
                    else f"task {task_id} is {task.status.value}, not failed: not retried"
                )  # fmt: skip
            failed = await application.backend.task_queue.list_tasks(queue, TaskStatus.FAILED)
            done = []
            for t in failed:
                try:
                    if await application.retry(t.id):
                        done.append(t.id)
                except TaskBusyError:  # its failure is still being recorded: not yet
                    busy.append(t.id)
            return done

    done = run(go())
    for tid in done:
        console.print(f"{tid} back to pending")
    for tid in busy:
        console.print(f"{tid} is still being settled: not retried, try again shortly")
    if every:
        console.print(f"{len(done)} failed task(s) of queue {queue} back to pending")


@cli.command()
@global_options
@click.option("--queue", required=True, help="The queue to empty.")
@click.option(
    "--state",
    type=click.Choice(["pending", "completed", "failed", "cancelled"]),
    default="pending",
    show_default=True,
    help="Which tasks: pending ones are cancelled, finished ones deleted with their results.",
)
@click.option("--yes", is_flag=True, help="Do it (without --yes: say how many it would touch).")
@click.pass_context
def purge(ctx: click.Context, queue: str, state: str, yes: bool) -> None:
    """Empty one state of a queue. Pending tasks are cancelled (running ones finish) and stay as
    cancelled tasks, with a CANCELLED result and event, until their ttl or `cleanup`; completed,
    failed (the dead letter) or cancelled tasks are deleted with their results."""
    application = resolve_app(ctx, read_only=True)
    pending = state == "pending"

    async def go() -> tuple[int, int]:
        async with application:
            found = await application.backend.task_queue.list_tasks(queue, TaskStatus(state))
            if not yes:
                return len(found), 0
            act = application.cancel if pending else application.delete_task
            return len(found), sum([await act(t.id) for t in found])

    found, done = run(go())
    verb, done_verb = ("cancel", "cancelled") if pending else ("delete", "deleted")
    if not yes:
        console.print(f"{found} {state} task(s) in queue {queue}; add --yes to {verb} them")
    else:
        console.print(f"{done} {state} task(s) of queue {queue} {done_verb}")


@cli.command()
@global_options
@click.pass_context
def cleanup(ctx: click.Context) -> None:
    """Delete finished tasks, results and events past their ttl."""
    application = resolve_app(ctx, read_only=True)

    async def go() -> dict[str, int]:
        async with application:
            return await application.backend.cleanup_expired()

    counts = run(go())
    if not any(counts.values()):
        console.print(
            "nothing to remove: nothing is past its ttl (finished tasks, results and events "
            "are kept 7 days by default; set ttl= on @app.task or task_ttl/result_ttl/"
            "event_ttl in the config)"
        )
        return
    removed = [f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n]
    console.print("removed " + ", ".join(removed))


@cli.command()
@global_options
@click.argument("queue")
@click.argument("count", type=int, required=False)
@click.pass_context
def shards(ctx: click.Context, queue: str, count: int | None) -> None:
    """Show QUEUE's shard count, or raise it to COUNT (1-64): a queue on a bucket spread over
    several prefixes, for fleets past one prefix's request rate (README, "Scaling out").
    Workers may run meanwhile; the count cannot be lowered."""
    application = resolve_app(ctx, read_only=count is None)
    task_queue = application.backend.task_queue
    if not isinstance(task_queue, FileTaskQueue):
        raise click.UsageError(
            "shards apply to directory and bucket locations; this backend keeps one queue "
            f"in one place ({type(application.backend).__name__})"
        )

    async def go() -> tuple[int, int]:
        async with application:
            if count is None:
                return (await task_queue.get_shards(queue),) * 2
            return await task_queue.set_shards(queue, count), count

    before, after = run(go())
    if count is None:
        console.print(f"queue {queue}: {after} shard(s)")
    elif before == after:
        console.print(f"queue {queue} already has {after} shard(s)")
    else:
        console.print(f"queue {queue}: {before} -> {after} shard(s); running workers follow "
                      f"within {ShardCounts.TTL:.0f} s")  # fmt: skip


@cli.command()
@global_options
@log_options
@click.option("--poll-interval", default=1.0, show_default=True, type=click.FloatRange(min=0.01))
@click.option(
    "--refresh", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
    help="Seconds between re-reads of the schedules (changes made elsewhere show within this).",
)  # fmt: skip
@click.pass_context
def scheduler(ctx: click.Context, poll_interval: float, refresh: float) -> None:
    """Run a scheduler alone (workers run one each by default) until SIGTERM/SIGINT."""
    setup_logging(ctx)
    application = resolve_app(ctx)

    async def go() -> None:
        async with application:
            sched = application.scheduler(poll_interval=poll_interval, refresh=refresh)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, sched.stop)
            await sched.run()

    run(go())


@cli.group()
def schedule() -> None:
    """Add, list, pause, resume and remove schedules."""


@schedule.command("add")
@global_options
@click.argument("func")
@click.argument("args", nargs=-1)
@click.option("--cron", default=None, help="A cron expression, e.g. '0 9 * * 1-5'.")
@click.option("--tz", default=None, help="Time zone of --cron (default UTC), e.g. Europe/Berlin.")
@click.option("--interval", type=float, default=None, help="Every SECONDS.")
@click.option("--at", "at_text", default=None, help="Once, at an ISO time (naive: local time).")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object.")
@click.option("--queue", default=None, help="Queue (default: the task's, else 'default').")
@click.option("--priority", type=int, default=None)
@click.option("--max-retries", type=click.IntRange(min=0), default=None)
@click.option("--id", "schedule_id", default=None, help="Schedule id (default: a new one).")
@click.option(
    "--misfire", type=click.Choice([m.value for m in Misfire]), default="once",
    show_default=True, help="What to do with runs missed while no scheduler ran.",
)  # fmt: skip
@click.option(
    "--max-instances", type=click.IntRange(min=0), default=1, show_default=True,
    help="Skip a run while this many earlier runs are unfinished (0: no limit).",
)  # fmt: skip
@click.pass_context
def schedule_add(
    ctx: click.Context, func: str, args: tuple[str, ...],
    cron: str | None, tz: str | None, interval: float | None, at_text: str | None,
    kwargs_json: str, queue: str | None, priority: int | None, max_retries: int | None,
    schedule_id: str | None, misfire: str, max_instances: int,
) -> None:  # fmt: skip
    """Schedule FUNC(ARGS...) by its registered name: --cron, --interval or --at."""
    kwargs = parse_kwargs(kwargs_json)
    at = None
    if at_text is not None:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise click.BadParameter(f"not an ISO time: {at_text!r}", param_hint="--at") from None
    application = resolve_app(ctx)
    check_registered(ctx, application, func)

    async def go() -> Schedule:
        async with application:
            return await application.schedule(
                func, cron=cron, tz=tz, interval=interval, at=at,
                args=[parse_value(a) for a in args], kwargs=kwargs, queue=queue,
                priority=priority, max_retries=max_retries, id=schedule_id, misfire=misfire,
                max_instances=max_instances or None,
            )  # fmt: skip

    stored = run(go())
    console.print(f"{stored.id}  next run {when_text(stored.next_run_at)}")


def when_text(moment: datetime | None) -> str:
    """A time in local time and UTC."""
    if moment is None:
        return "-"
    local = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{local} ({moment.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')} UTC)"


def recipe_text(s: Schedule) -> str:
    if s.schedule_type is ScheduleType.CRON:
        return f"cron {s.cron_expression}" + (f" {s.timezone}" if s.timezone != "UTC" else "")
    if s.schedule_type is ScheduleType.INTERVAL:
        return f"every {s.interval:g}s"
    return f"once at {s.run_at.isoformat() if s.run_at else '-'}"


@schedule.command("list")
@global_options
@click.pass_context
def schedule_list(ctx: click.Context) -> None:
    """The schedules: what runs when, next and last run, status."""
    application = resolve_app(ctx, read_only=True)

    async def go() -> list[Schedule]:
        async with application:
            return await application.list_schedules()

    schedules = run(go())
    if not schedules:
        console.print("no schedules")
        return
    table = Table(title="schedules")
    for col in ("id", "task", "when", "next run (local)", "next run (UTC)", "last run", "status"):
        table.add_column(col, no_wrap=col in ("id", "when"))
    for s in schedules:
        nxt = s.next_run_at
        # Local: the cron's own time zone, else this machine's.
        zone = ZoneInfo(s.timezone) if s.schedule_type is ScheduleType.CRON else None
        table.add_row(
            s.id, s.func, recipe_text(s),
            nxt.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z") if nxt else "-",
            nxt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if nxt else "-",
            f"{age(s.last_run_at)} ago" if s.last_run_at else "-", s.status.value,
        )  # fmt: skip
    console.print(table)


def _schedule_change(action: str, past: str) -> Any:
    @global_options
    @click.argument("schedule_id")
    @click.pass_context
    def command(ctx: click.Context, schedule_id: str) -> None:
        application = resolve_app(ctx)

        async def go() -> bool:
            async with application:
                return bool(await getattr(application, f"{action}_schedule")(schedule_id))

        if not run(go()):
            raise click.ClickException(f"schedule {schedule_id} was not {past} (see `list`)")
        console.print(f"{schedule_id} {past}")

    command.__doc__ = f"{action.capitalize()} the schedule SCHEDULE_ID."
    return command


schedule.command("pause")(_schedule_change("pause", "paused"))
schedule.command("resume")(_schedule_change("resume", "resumed"))
schedule.command("rm")(_schedule_change("delete", "removed"))


@cli.command()
@click.argument("source")
@click.argument("dest")
@click.option(
    "--what", default=",".join(STORES), show_default=True,
    help="Stores to copy, comma-separated.",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Count what would be copied; write nothing.")
def migrate(source: str, dest: str, what: str, dry_run: bool) -> None:
    """Copy tasks, results, events and schedules from SOURCE to DEST (paths or URLs, e.g.
    ./omniq_data, s3://bucket/prefix, sqlite:///omniq.db). Items DEST already holds are
    skipped, so it can run again after a crash; exits 1 if the counts do not match."""
    try:
        stores = parse_stores(what)
    except OmniQError as exc:
        raise click.BadParameter(str(exc), param_hint="--what") from exc
    with Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
        console=console, transient=not sys.stdout.isatty(),
    ) as bar:  # fmt: skip
        bars = {name: bar.add_task(name, total=None) for name in stores}

        def advance(store: str, done: int, total: int) -> None:
            bar.update(bars[store], completed=done, total=total)

        report = run(migrate_async(source, dest, what=stores, dry_run=dry_run, progress=advance))
    console.print(migration_table(report))
    if not report.ok:
        raise click.ClickException("some items are missing from the destination (see above)")


def migration_table(report: MigrationReport) -> Table:
    title = f"{report.source} -> {report.dest}" + (" (dry run)" if report.dry_run else "")
    t = Table(title=title)
    for column in ("store", "in source", "already there", "copied", "verified"):
        t.add_column(column, justify="left" if column == "store" else "right")
    for s in report.stores:
        copied = f"{s.source - s.present} to copy" if report.dry_run else str(s.copied)
        verified = "-" if s.verified is None else f"{s.verified}/{s.source}"
        t.add_row(s.store, str(s.source), str(s.present), copied, verified)
    return t


@cli.command()
@global_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--token", envvar="OMNIQ_DASHBOARD_TOKEN", default=None,
    help="Required from every request: bearer token, or basic-auth password (env "
    "OMNIQ_DASHBOARD_TOKEN). Needed to listen on a non-loopback address.",
)  # fmt: skip
@click.option("--read-only", is_flag=True, help="Show no actions and refuse them.")
@click.option(
    "--refresh", default=5.0, show_default=True, type=click.FloatRange(min=0),
    help="Seconds between the pages' live refreshes (0: none).",
)  # fmt: skip
@click.option(
    "--chart-every", default=60.0, show_default=True, type=click.FloatRange(min=0),
    help="Seconds between reads of the hour's events for the throughput chart (0: no chart; "
    "on a bucket each read lists every task folder of the day).",
)  # fmt: skip
@click.pass_context
def dashboard(
    ctx: click.Context, host: str, port: int, token: str | None, read_only: bool, refresh: float,
    chart_every: float,
) -> None:  # fmt: skip
    """Serve the web dashboard over the store: queues, tasks, schedules, dead letter, and a
    JSON API under /api/ (needs the dashboard extra: pip install 'omniq[dashboard]')."""
    try:
        import uvicorn

        from omniq.dashboard import create_app
        from omniq.dashboard.security import is_loopback
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra: pip install 'omniq[dashboard]' ({exc})"
        ) from None
    if not token and not is_loopback(host):
        raise click.UsageError(
            f"refusing to listen on {host} without --token: anyone who reaches it could act on "
            "the queue"
        )
    application = resolve_app(ctx, read_only=True)
    web = create_app(
        application, token=token, read_only=read_only, refresh=refresh, chart_every=chart_every
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"OmniQ dashboard for {getattr(application.backend, 'url', '')} on http://{shown}:{port}/"
        + (" (read-only)" if read_only else "")
    )
    uvicorn.run(web, host=host, port=port, log_level="warning")


def main() -> None:
    cli(obj={})
