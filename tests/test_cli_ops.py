"""The operator's commands (tasks, cancel, retry, purge, status --watch, cleanup), the global
options, and every expected error: one line, no traceback, exit code 2 (usage) or 1 (runtime)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from omniq import __version__
from omniq.cli import cli

HERE = Path(__file__).parent / "worker"


@pytest.fixture
def data(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def omniq(data, monkeypatch):
    """``omniq(*args, code=0)``: run the command on ``data`` and check its exit code."""
    monkeypatch.chdir(HERE)  # so that --app task_defs:app imports
    monkeypatch.setenv("OMNIQ_TEST_URL", str(data))
    monkeypatch.setenv("COLUMNS", "200")
    sys.modules.pop("task_defs", None)  # re-read OMNIQ_TEST_URL
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, url: bool = True):
        result = runner.invoke(cli, [*args, *(["--url", str(data)] if url else [])], obj={})
        assert result.exit_code == code, result.output + repr(result.exception)
        if code:
            assert "Traceback" not in result.output
        return result

    yield invoke
    sys.modules.pop("task_defs", None)


def one_error(result) -> str:
    """The single line of an expected error."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or lines[-1].startswith("Error:"), result.stderr
    return lines[-1]


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"omniq, version {__version__}"


def test_global_options_go_before_or_after_the_subcommand(omniq, data):
    task_id = omniq("enqueue", "add", "1", "2").stdout.strip()  # --url after the subcommand
    result = CliRunner().invoke(cli, ["--url", str(data), "--app", "task_defs:app", "worker",
                                      "--burst", "-q"], obj={})  # fmt: skip
    assert result.exit_code == 0 and "completed 1" in result.stdout
    assert "success  3" in omniq("inspect", task_id).stdout


@pytest.mark.parametrize(
    "command",
    [["status"], ["tasks"], ["inspect", "01ABC"], ["schedule", "list"], ["cancel", "01ABC"],
     ["retry", "01ABC"], ["purge", "--queue", "q", "--yes"], ["cleanup"]],
)  # fmt: skip
def test_read_only_commands_create_nothing(omniq, data, command):
    result = omniq(*command, code=1)
    assert one_error(result) == f"Error: no OmniQ data at {data} (check --url or OMNIQ_URL)"
    assert not data.exists()


def test_read_only_commands_create_no_sqlite_file(omniq, tmp_path):
    db = tmp_path / "missing.db"
    result = omniq("status", "--url", f"sqlite:///{db}", code=1, url=False)
    assert one_error(result) == f"Error: no OmniQ data at {db} (check --url or OMNIQ_URL)"
    assert not db.exists()


def test_missing_driver_is_one_line(omniq):
    result = omniq("status", "--url", "sftp://nowhere/x", code=1, url=False)
    assert one_error(result).startswith("Error: the 'sftp' filesystem needs a driver")


def test_app_module_that_raises_on_import(omniq, tmp_path, monkeypatch):
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('no config here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = omniq("status", "--app", "broken_app:app", code=1)
    assert one_error(result) == (
        "Error: --app broken_app:app: importing broken_app raised RuntimeError: no config here"
    )
    missing = omniq("status", "--app", "no_such_module_here:app", code=2)
    assert "cannot import 'no_such_module_here'" in one_error(missing)


def test_usage_errors_exit_2(omniq):
    bad_json = omniq("enqueue", "add", "--kwargs", "{bad", code=2)
    assert "Invalid value for --kwargs: invalid JSON (" in one_error(bad_json)
    not_object = omniq("enqueue", "add", "--kwargs", "[1]", code=2)
    assert "must be a JSON object, got list" in one_error(not_object)
    no_app = omniq("worker", "--burst", code=2)
    assert "the worker needs --app module:attribute" in one_error(no_app)
    assert "give a TASK_ID, or --all with --queue Q" in one_error(omniq("retry", code=2))
    assert "give a TASK_ID" in one_error(omniq("retry", "--all", code=2))
    assert "give a TASK_ID" in one_error(omniq("retry", "X", "--all", "--queue", "q", code=2))


def test_enqueue_without_app_warns_that_options_are_not_applied(omniq):
    result = omniq("enqueue", "fail", '"x"')
    assert "no --app, so fail's @app.task options" in result.stderr
    assert "no --app" not in omniq("enqueue", "--app", "task_defs:app", "add", "1", "2").stderr


def test_tasks_inspect_retry_cancel(omniq):
    failing = omniq("enqueue", "--app", "task_defs:app", "fail", '"kaput"').stdout.strip()
    later = omniq("enqueue", "add", "1", "2", "--delay", "3600", "--queue", "later").stdout.strip()
    omniq("worker", "--app", "task_defs:app", "--burst", "--no-scheduler")
    inspect = omniq("inspect", failing).stdout
    assert "result: failed" in inspect and "RuntimeError: kaput" in inspect
    assert "None" not in inspect.split("result: failed")[1].splitlines()[0]
    listing = omniq("tasks").stdout
    assert failing in listing and later in listing and "2 task(s)" in listing
    failed_only = omniq("tasks", "--state", "failed").stdout
    assert failing in failed_only and later not in failed_only and "RuntimeError" in failed_only
    assert later in omniq("tasks", "--queue", "later").stdout
    assert "(--limit reached)" in omniq("tasks", "--limit", "1").stdout
    assert omniq("tasks", "--state", "running").stdout.strip() == "no tasks in state running"

    assert omniq("retry", failing).stdout.strip() == f"{failing} back to pending"
    again = omniq("retry", failing, code=1)
    assert one_error(again) == f"Error: task {failing} is pending, not failed: not retried"
    shown = omniq("inspect", failing).stdout
    assert "pending" in shown and "retried from the dead letter" in shown
    assert "RuntimeError: kaput" in shown  # the last error is kept on the task
    omniq("worker", "--app", "task_defs:app", "--burst", "--no-scheduler")
    out = omniq("retry", "--all", "--queue", "default").stdout
    assert f"{failing} back to pending" in out and "1 failed task(s) of queue default" in out

    assert omniq("cancel", later).stdout.strip() == f"{later} cancelled"
    twice = omniq("cancel", later, code=1)
    assert one_error(twice) == f"Error: task {later} is cancelled, not pending: not cancelled"
    assert one_error(omniq("cancel", "01NOSUCHTASK", code=1)) == "Error: no task 01NOSUCHTASK"
    assert one_error(omniq("retry", "01NOSUCHTASK", code=1)) == "Error: no task 01NOSUCHTASK"


def test_purge_needs_yes(omniq):
    for i in range(3):
        omniq("enqueue", "add", str(i), "1", "--queue", "bulk")
    omniq("enqueue", "add", "1", "1")
    dry = omniq("purge", "--queue", "bulk").stdout.strip()
    assert dry == "3 pending task(s) in queue bulk; add --yes to cancel them"
    assert omniq("purge", "--queue", "bulk", "--yes").stdout.strip() == (
        "3 pending task(s) of queue bulk cancelled"
    )
    assert (
        "no tasks in state pending in queue bulk"
        in omniq("tasks", "--queue", "bulk", "--state", "pending").stdout
    )
    assert "add" in omniq("tasks", "--queue", "default", "--state", "pending").stdout


def test_purge_deletes_finished_tasks_with_their_results(omniq, data):
    failing = omniq("enqueue", "--app", "task_defs:app", "fail", '"kaput"').stdout.strip()
    done = omniq("enqueue", "add", "1", "2").stdout.strip()
    omniq("worker", "--app", "task_defs:app", "--burst", "--no-scheduler")
    dry = omniq("purge", "--queue", "default", "--state", "failed").stdout.strip()
    assert dry == "1 failed task(s) in queue default; add --yes to delete them"
    out = omniq("purge", "--queue", "default", "--state", "failed", "--yes").stdout.strip()
    assert out == "1 failed task(s) of queue default deleted"
    assert "no tasks in state failed" in omniq("tasks", "--state", "failed").stdout
    assert "result:" not in omniq("inspect", failing).stdout  # its events stay until their ttl
    failed_results = data / "results" / "failed"  # workers keep results in task records now
    assert not failed_results.exists() or not list(failed_results.iterdir())
    assert not list((data / "tasks" / "default" / "failed").iterdir())
    assert "result: success" in omniq("inspect", done).stdout  # other states untouched
    usage = omniq("purge", "--queue", "default", "--state", "running", code=2)
    assert "Invalid value for '--state'" in usage.stderr


def test_status_watch_refreshes(omniq):
    omniq("enqueue", "add", "1", "1")
    out = omniq("status", "--watch", "--interval", "0.05", "--iterations", "3").stdout
    assert "default" in out and "pending" in out


def test_cleanup_says_why_nothing_was_removed(omniq):
    omniq("enqueue", "add", "1", "1")
    out = omniq("cleanup").stdout.strip()
    assert out.startswith("nothing to remove: nothing is past its ttl")


def test_worker_log_format_json_and_levels(omniq):
    omniq("enqueue", "add", "2", "2")
    result = omniq("worker", "--app", "task_defs:app", "--burst", "--no-scheduler",
                   "--log-format", "json", "--worker-id", "wj")  # fmt: skip
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[0]["message"].startswith(f"OmniQ {__version__} worker wj starting")
    done = [line for line in lines if line.get("outcome") == "completed"]
    assert len(done) == 1 and done[0]["task"] == "add" and done[0]["attempt"] == 1
    assert lines[-1]["message"] == "worker wj: stopping, no task running"
    omniq("enqueue", "add", "2", "2")
    quiet = omniq("worker", "--app", "task_defs:app", "--burst", "--log-level", "warning")
    assert "starting" not in quiet.stderr and "completed 1" in quiet.stdout


def test_shards_shows_and_raises_a_queues_count(omniq, data, tmp_path):
    omniq("shards", "default", code=1)  # no data there yet: nothing to show
    assert "1 -> 4 shard(s)" in omniq("shards", "default", "4").output
    assert "queue default: 4 shard(s)" in omniq("shards", "default").output
    assert "default (4 shards)" in omniq("status").output
    assert '"shards": 4' in omniq("status", "--json").output
    assert "queue other: 1 shard(s)" in omniq("shards", "other").output
    assert "already has 4 shard(s)" in omniq("shards", "default", "4").output
    assert (data / "tasks" / "default" / "shards.json").exists()
    assert "raised, not lowered" in one_error(omniq("shards", "default", "2", code=1))
    assert "1-64" in one_error(omniq("shards", "default", "0", code=1))
    assert "queue name" in one_error(omniq("shards", "../x", code=1))
    db = tmp_path / "omniq.db"
    sqlite = omniq("shards", "default", "2", "--url", f"sqlite:///{db}", code=2, url=False)
    assert "directory and bucket locations" in sqlite.output
    assert not db.exists()
