"""The omniq command, through click's runner (the worker subcommand also runs as a real
process in tests/worker/test_processes.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from omniq.cli import cli

HERE = Path(__file__).parent / "worker"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(HERE)  # so that --app task_defs:app imports
    monkeypatch.setenv("OMNIQ_TEST_URL", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    import sys

    sys.modules.pop("task_defs", None)  # re-read OMNIQ_TEST_URL
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(cli, ["--url", str(tmp_path / "data"), *args], obj={})
        if ok:
            assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    yield invoke
    sys.modules.pop("task_defs", None)


@pytest.mark.parametrize(
    "command",
    [[], ["worker"], ["enqueue"], ["status"], ["inspect"], ["cleanup"], ["scheduler"],
     ["schedule"], ["schedule", "add"], ["schedule", "list"], ["schedule", "rm"], ["tasks"],
     ["cancel"], ["retry"], ["purge"], ["migrate"]],
)  # fmt: skip
def test_help_everywhere(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_enqueue_worker_status_inspect_cleanup(run):
    task_id = run("enqueue", "--app", "task_defs:app", "add", "2", "3").output.strip()
    delayed = run("enqueue", "add", "1", "1", "--delay", "3600").stdout.strip()
    status = run("status").output
    assert "default" in status and "2" in status  # two pending, one of them delayed
    out = run("worker", "--app", "task_defs:app", "--burst", "--queues", "high,default").output
    assert "completed 1" in out
    inspect = run("inspect", task_id).output
    assert "success" in inspect and "5" in inspect
    assert "enqueued" in inspect and "started" in inspect and "completed" in inspect
    assert "pending" in run("inspect", delayed).output
    assert "nothing to remove" in run("cleanup").output  # nothing has a ttl here


def test_enqueue_kwargs_and_json_args(run):
    task_id = run("enqueue", "add", "--kwargs", json.dumps({"x": 1, "y": 2})).stdout.strip()
    run("worker", "--app", "task_defs:app", "--burst")
    assert "3" in run("inspect", task_id).output


def test_status_shows_live_lease_holders(run, tmp_path):
    import asyncio

    from omniq.backend.file import FileBackend
    from omniq.models.task import Task

    async def claim():
        async with FileBackend(str(tmp_path / "data")) as b:
            await b.task_queue.enqueue(Task(func="add", args=(1, 2)))
            await b.task_queue.dequeue("default", worker_id="busy-worker")

    asyncio.run(claim())
    assert "busy-worker (1)" in run("status").output


def test_errors_are_clear(run):
    run("enqueue", "add", "1", "1")  # read-only commands refuse a location that does not exist
    bad_app = run("worker", "--app", "nonexistent_module:app", ok=False)
    assert bad_app.exit_code != 0 and "cannot import" in bad_app.output
    no_colon = run("worker", "--app", "task_defs", ok=False)
    assert "module:attribute" in no_colon.output
    not_app = run("worker", "--app", "task_defs:add", ok=False)
    assert "not an OmniQ app" in not_app.output
    unknown = run("enqueue", "--app", "task_defs:app", "nope", ok=False)
    assert "not registered" in unknown.output
    missing = run("inspect", "NOSUCHTASK", ok=False)
    assert "no task" in missing.output
    traversal = run("inspect", "../../etc", ok=False)
    assert traversal.exit_code != 0 and "invalid task id" in traversal.output
    bad_kind = run("worker", "--app", "task_defs:app", "--kind", "fork", ok=False)
    assert bad_kind.exit_code != 0
    bad_queue = run("enqueue", "add", "--queue", "../x", ok=False)
    assert "invalid queue name" in bad_queue.output


def test_schedule_add_list_pause_resume_rm(run):
    sid = run("schedule", "add", "--app", "task_defs:app", "add", "2", "3", "--cron", "0 9 * * *",
              "--tz", "Europe/Berlin", "--id", "daily-add").output.split()[0]  # fmt: skip
    assert sid == "daily-add"
    no_app = run("schedule", "add", "add", "1", "1", "--interval", "90")
    assert "warning: no --app, so add's @app.task options" in no_app.stderr
    every = no_app.stdout.split()[0]
    listing = run("schedule", "list").output
    assert "daily-add" in listing and "cron 0 9 * * * Europe/Berlin" in listing
    assert "09:00:00 CE" in listing  # the next run in the cron's zone (CET or CEST), and UTC:
    assert "08:00:00" in listing or "07:00:00" in listing
    assert every in listing and "every 90s" in listing and "UTC" in listing
    run("schedule", "pause", sid)
    assert "paused" in run("schedule", "list").output
    assert "not paused" in run("schedule", "pause", sid, ok=False).output
    run("schedule", "resume", sid)
    run("schedule", "rm", sid)
    run("schedule", "rm", every)
    assert "no schedules" in run("schedule", "list").output


@pytest.mark.parametrize(
    "bad",
    [
        ["nope", "--interval", "5"],  # not registered with the app
        ["add", "--cron", "61 * * * *"],
        ["add", "--cron", "* * * * *", "--tz", "Nowhere/Else"],
        ["add", "--interval", "0"],
        ["add", "--interval", "nan"],
        ["add", "--interval", "5", "--cron", "* * * * *"],
        ["add", "--at", "2001-01-01T00:00:00"],
        ["add", "--at", "tomorrow"],
    ],
)
def test_schedule_add_refuses_bad_input_and_stores_nothing(run, bad):
    run("enqueue", "add", "1", "1")  # the location exists (`schedule list` refuses a missing one)
    result = run("schedule", "add", "--app", "task_defs:app", *bad, ok=False)
    assert result.exit_code != 0 and "Error" in result.output
    assert "no schedules" in run("schedule", "list").output


def test_inspect_shows_the_schedule_of_a_task(run, tmp_path):
    import asyncio
    from datetime import timedelta

    from omniq import AsyncOmniQ
    from omniq.models._time import utcnow

    async def fire() -> str:
        async with AsyncOmniQ(str(tmp_path / "data")) as app:
            s = await app.schedule("add", interval=60, args=(1, 2), id="every-minute")
            assert s.next_run_at is not None
            due = s.next_run_at
            await app.scheduler(clock=lambda: due + timedelta(seconds=1)).tick()
            return s.task_id_for(due)

    task_id = asyncio.run(fire())
    out = run("inspect", task_id).output
    assert "every-minute" in out and "scheduled_for" in out and "schedule_fired" in out
    assert utcnow().year > 2000


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "omniq", "--help"], capture_output=True, text=True, check=True,
        env={**os.environ},
    )  # fmt: skip
    assert "worker" in out.stdout and "status" in out.stdout


def test_cli_on_an_s3_bucket(s3_server, monkeypatch):
    """--url s3://..., with the driver options from OMNIQ_STORAGE_OPTIONS."""
    monkeypatch.setenv("OMNIQ_STORAGE_OPTIONS", json.dumps(s3_server.options))
    monkeypatch.setenv("COLUMNS", "200")
    url = s3_server.url()
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, ["--url", url, *args], obj={})
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.stdout

    task_id = invoke("enqueue", "add", "2", "3", "--priority", "5").strip()
    assert url.removeprefix("s3://") in invoke("status")
    assert task_id in invoke("inspect", task_id)
