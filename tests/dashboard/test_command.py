"""``omniq dashboard``: its refusals (one line, exit code 2 or 1) and a real server it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from emulators import free_port
from omniq.app import OmniQ
from omniq.cli import cli


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), obj={})
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip().splitlines()[-1]


def test_refuses_a_non_loopback_address_without_a_token(tmp_path: Path) -> None:
    OmniQ(tmp_path).close()
    code, line = invoke("dashboard", "--url", str(tmp_path), "--host", "0.0.0.0")
    assert code == 2
    assert line == (
        "Error: refusing to listen on 0.0.0.0 without --token: anyone who reaches it could act "
        "on the queue"
    )


def test_refuses_a_location_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, line = invoke("dashboard", "--url", str(missing))
    assert (code, line) == (1, f"Error: no OmniQ data at {missing} (check --url or OMNIQ_URL)")
    assert not missing.exists()


def test_serves_the_store_with_its_token(tmp_path: Path) -> None:
    app = OmniQ(tmp_path / "data")
    task_id = app.enqueue("remote.job", 1).id
    app.close()
    port = free_port()
    env = {**os.environ, "OMNIQ_DASHBOARD_TOKEN": "t0ken"}
    command = [sys.executable, "-m", "omniq", "dashboard", "--url", str(tmp_path / "data"),
               "--port", str(port), "--read-only"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        banner = server.stdout.readline() if server.stdout else ""
        assert f"on http://127.0.0.1:{port}/ (read-only)" in banner
        url = f"http://127.0.0.1:{port}/api/tasks/{task_id}"
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(url, headers={"Authorization": "Bearer t0ken"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.05)
        assert answer.status_code == 200 and answer.json()["task"]["func"] == "remote.job"
        assert httpx.get(url).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/api/csrf",
                         headers={"Authorization": "Bearer t0ken"}).json()["read_only"]  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)


def test_status_json_for_scripts(tmp_path: Path) -> None:
    app = OmniQ(tmp_path)
    app.enqueue("remote.job", 1, queue="q1")
    app.close()
    result = CliRunner().invoke(cli, ["status", "--json", "--url", str(tmp_path)], obj={})
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["queues"]
    assert (row["queue"], row["pending"], row["failed"]) == ("q1", 1, 0)
    assert row["oldest_runnable_age_s"] >= 0 and row["workers"] == {}
    watched = CliRunner().invoke(
        cli, ["status", "--json", "--watch", "--interval", "0.05", "--iterations", "3",
              "--url", str(tmp_path)], obj={},
    )  # fmt: skip
    lines = watched.output.strip().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["queues"] for line in lines)
