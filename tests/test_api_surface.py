"""The blocking app and handle show what they offer: dir(), repr(), ``with``; retry of a
dead-lettered task from Python."""

from __future__ import annotations

import pytest

from omniq import OmniQ
from omniq.exceptions import TaskFailedError


def test_app_and_handle_show_their_methods(tmp_path):
    with OmniQ(str(tmp_path / "data")) as app:

        @app.task(name="add")
        def add(x, y):
            return x + y

        h = add.delay(1, 2)
        assert {"result", "status", "cancel", "task", "id"} <= set(dir(h))
        assert repr(h) == f"<TaskHandle {h.id}> (blocking)"
        assert {"enqueue", "get_result", "retry", "cancel", "run_worker", "task"} <= set(dir(app))
        assert repr(app) == f"<OmniQ FileBackend('file://{tmp_path / 'data'}') tasks: add>"
        assert h.status() == "pending"
        app.run_worker(burst=True)
        assert h.result(timeout=5) == 3


def test_blocking_app_and_handle_document_their_methods():
    """help(), inspect.signature and get_type_hints see the blocking methods (generated from the
    async ones, not hand-written), and they are plain functions, not coroutines."""
    import inspect
    import pydoc
    import typing

    from omniq.app import AsyncOmniQ, TaskHandle

    sig = inspect.signature(OmniQ.get_result)
    assert list(sig.parameters) == ["self", "task_id", "timeout"]
    assert not inspect.iscoroutinefunction(OmniQ.get_result)
    assert OmniQ.delete_task.__doc__ == AsyncOmniQ.delete_task.__doc__
    assert typing.get_type_hints(OmniQ.retry)["return"] is bool
    assert typing.get_type_hints(TaskHandle.status)["return"] == (str | None)
    page = pydoc.render_doc(OmniQ, renderer=pydoc.plaintext)
    for method in ("get_result(self, task_id", "delete_task(self, task_id", "pause_schedule("):
        assert method in page
    assert "result(self, timeout" in pydoc.render_doc(TaskHandle, renderer=pydoc.plaintext)


def test_retry_sends_a_failed_task_back_with_attempts_reset(tmp_path):
    with OmniQ(str(tmp_path / "data")) as app:
        runs = []

        # No retry delay: a burst worker stops when nothing is runnable *now*, so a retry due
        # even 1 ms later raced the worker's next look (it lost once the loop got faster).
        @app.task(max_retries=1, retry_delay=0)
        def flaky():
            runs.append(1)
            if len(runs) <= 2:
                raise RuntimeError(f"run {len(runs)}")
            return "ok"

        h = flaky.delay()
        app.run_worker(burst=True)
        with pytest.raises(TaskFailedError, match="run 2"):
            h.result(timeout=5)
        assert not app.retry("01NOSUCHTASK00000000000000") and app.retry(h.id)
        task = h.task()
        assert task.status.value == "pending" and task.attempts == 0
        assert task.error == "RuntimeError: run 2"  # the last error is kept
        assert not app.retry(h.id)  # pending, not failed
        app.run_worker(burst=True)
        assert h.result(timeout=5) == "ok" and h.task().attempts == 1
