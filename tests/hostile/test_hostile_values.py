"""Numbers, due times and argument values: refused at construction or enqueue with an error
that names the field or argument, and nothing written; or delivered unchanged."""

from __future__ import annotations

import decimal
from datetime import datetime, timezone

import pytest

from omniq import AsyncOmniQ
from omniq.exceptions import ConfigError, SerializationError, ValidationError
from omniq.models.config import FileConfig
from omniq.models.schedule import Schedule, ScheduleType
from omniq.models.task import Task, TaskStatus

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retry_delay", NAN), ("retry_delay", INF), ("ttl", NAN), ("ttl", INF),
        ("timeout", NAN), ("timeout", INF), ("delay", NAN), ("delay", INF), ("delay", 1e20),
        ("delay", 1e10), ("ttl", -1), ("eta", datetime(2300, 1, 1, tzinfo=timezone.utc)),
    ],
)  # fmt: skip
def test_task_numbers_are_checked_at_construction(field, value):
    with pytest.raises(ValidationError, match="due time" if field == "eta" else field):
        Task(func="f", **{field: value})


@pytest.mark.parametrize(
    "setting", ["visibility_timeout", "poll_interval", "listing_ttl", "reap_interval", "task_ttl"]
)
@pytest.mark.parametrize("value", [NAN, INF, -1.0])
def test_config_numbers_are_checked(setting, value):
    with pytest.raises(ConfigError, match=setting):
        FileConfig(**{setting: value})


def test_schedule_interval_must_be_finite():
    with pytest.raises(ValidationError, match="interval"):
        Schedule(schedule_type=ScheduleType.INTERVAL, func="f", interval=NAN)


async def test_queue_calls_check_their_numbers(backend):
    q = backend.get_task_queue()
    for kwargs in ({"timeout": NAN}, {"timeout": -1}, {"visibility_timeout": NAN},
                   {"visibility_timeout": INF}, {"visibility_timeout": 0}):  # fmt: skip
        with pytest.raises(ValidationError):
            await q.dequeue("default", **kwargs)


async def test_far_due_times_are_refused_and_nothing_is_written(backend):
    app = AsyncOmniQ(backend)

    @app.task
    def f():
        return 1

    for options in ({"delay": 1e10}, {"eta": datetime(2300, 1, 1, tzinfo=timezone.utc)},
                    {"delay": NAN}, {"retry_delay": INF}, {"ttl": NAN}):  # fmt: skip
        with pytest.raises(ValidationError):
            await app.enqueue(f, **options)
    assert await backend.task_queue.list_tasks() == []
    # The latest due time a name holds still works, and is not claimed early.
    late = await app.enqueue(f, eta=datetime(2286, 11, 20, tzinfo=timezone.utc))
    assert await backend.task_queue.dequeue("default") is None
    assert (await backend.task_queue.get_task(late.id)).eta.year == 2286


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"abc", "bytes"), (datetime(2026, 1, 1, tzinfo=timezone.utc), "datetime"),
        (decimal.Decimal("1.5"), "Decimal"), ((1, 2), "tuple"), ({1, 2}, "set"),
        ({1: "a"}, "dict key"), (NAN, "nan"), (object(), "cannot be represented"),
    ],
)  # fmt: skip
async def test_json_refuses_values_it_would_change(backend, value, fragment):
    app = AsyncOmniQ(backend)

    @app.task
    def f(*args, **kwargs):
        return None

    with pytest.raises(SerializationError, match=r"args\[1\]") as err:
        await app.enqueue(f, 1, value)
    assert fragment in str(err.value)
    with pytest.raises(SerializationError, match=r"kwargs\['when'\]"):
        await app.enqueue(f, when=[value])
    assert await backend.task_queue.list_tasks() == []


async def test_msgpack_delivers_bytes_and_aware_datetimes_unchanged(backend_factory):
    app = AsyncOmniQ(backend_factory(serialization_format="msgpack"))
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    @app.task
    def echo(data, when):
        return [type(data).__name__, data, type(when).__name__, when.isoformat()]

    async with app:
        h = await echo.delay(b"\x00\xff", when)
        await app.run_worker(burst=True)
        assert await h.result(timeout=5) == ["bytes", b"\x00\xff", "datetime", when.isoformat()]
        with pytest.raises(SerializationError, match="tuple"):
            await echo.delay((1, 2), when)


async def test_pickle_delivers_anything_picklable(backend_factory):
    app = AsyncOmniQ(backend_factory(serialization_format="pickle"))

    @app.task
    def kinds(*values):
        return [type(v).__name__ for v in values]

    async with app:
        h = await kinds.delay((1, 2), {3}, decimal.Decimal("1.5"), b"x")
        await app.run_worker(burst=True)
        assert await h.result(timeout=5) == ["tuple", "set", "Decimal", "bytes"]


async def test_a_result_nested_too_deep_fails_the_task_instead_of_stranding_it(backend):
    app = AsyncOmniQ(backend)

    @app.task(name="deep")
    def deep():
        value: list = []
        for _ in range(5000):
            value = [value]
        return value

    async with app:
        h = await app.enqueue("deep")
        stats = await app.run_worker(burst=True)
        assert (stats.completed, stats.failed) == (0, 1)
        task = await backend.task_queue.get_task(h.id)
        assert task.status is TaskStatus.FAILED and "recursion" in task.error
