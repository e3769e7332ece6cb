"""Result storage contract, on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from omniq.exceptions import SerializationError, ValidationError
from omniq.models._time import utcnow
from omniq.models.result import ResultStatus, TaskResult


async def test_set_get_list_delete(backend):
    rs = backend.get_result_storage()
    ok = TaskResult(task_id="task_123", status=ResultStatus.SUCCESS, result={"output": "processed"})
    bad = TaskResult(task_id="task_456", status=ResultStatus.FAILED, error="boom", traceback="tb")
    await rs.set(ok)
    await rs.set(bad)
    assert await rs.get("task_123") == ok
    assert await rs.get("task_456") == bad
    assert await rs.get("missing") is None
    assert {r.task_id for r in await rs.list_results()} == {"task_123", "task_456"}
    assert [r.task_id for r in await rs.list_results(status=ResultStatus.FAILED)] == ["task_456"]
    assert [r.task_id for r in await rs.list_results(status="success")] == ["task_123"]
    assert len(await rs.list_results(limit=1)) == 1
    assert await rs.delete("task_123") is True
    assert await rs.delete("task_123") is False
    assert await rs.get("task_123") is None


async def test_status_change_moves_folder(backend):
    rs = backend.get_result_storage()
    await rs.set(TaskResult(task_id="t1", status=ResultStatus.FAILED, error="first try"))
    await rs.set(TaskResult(task_id="t1", status=ResultStatus.SUCCESS, result=1))
    assert (await rs.get("t1")).status is ResultStatus.SUCCESS
    assert await rs.list_results(status=ResultStatus.FAILED) == []


@pytest.mark.file_layout("result objects under success/ and failed/")
async def test_layout_on_disk(backend):
    rs = backend.get_result_storage()
    await rs.set(TaskResult(task_id="a", result=1))
    await rs.set(TaskResult(task_id="b", status=ResultStatus.CANCELLED))
    assert await backend.objects.list("results/success") == ["a.json"]
    assert await backend.objects.list("results/failed") == ["b.json"]


async def test_cleanup_expired_results(backend):
    rs = backend.get_result_storage()
    await rs.set(TaskResult(task_id="old", result=1, ttl=0))
    await rs.set(TaskResult(task_id="fresh", result=2, ttl=3600))
    await rs.set(TaskResult(task_id="forever", result=3))
    assert await rs.cleanup_expired_results() == 1
    assert await rs.get("old") is None
    assert await rs.get("fresh") is not None
    later = utcnow() + timedelta(hours=2)
    assert await rs.cleanup_expired_results(now=later) == 1
    assert [r.task_id for r in await rs.list_results()] == ["forever"]


async def test_unserializable_result_rejected(backend):
    rs = backend.get_result_storage()
    with pytest.raises(SerializationError):
        await rs.set(TaskResult(task_id="x", result=object()))
    assert await rs.get("x") is None


async def test_bad_input(backend):
    rs = backend.get_result_storage()
    with pytest.raises(ValidationError):
        await rs.get("../etc/passwd")
    with pytest.raises(ValidationError):
        await rs.delete("a/b")
    with pytest.raises(ValidationError):
        await rs.list_results(status="weird")
    with pytest.raises(ValidationError):
        await rs.set({"task_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TaskResult(task_id="x", status="nope")
    with pytest.raises(ValidationError):
        TaskResult(task_id="x", ttl=-1)
