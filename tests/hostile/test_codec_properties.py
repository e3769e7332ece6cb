"""Properties of the name codec and the payload codecs: accepted tasks round-trip; any input to
a decoder gives a valid object or a clear error, never another exception."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniq.exceptions import SerializationError, ValidationError
from omniq.models._time import MAX_DUE
from omniq.models.task import PRIORITY_MAX, PRIORITY_MIN, Task
from omniq.serialization import EXTENSIONS, Serializer
from omniq.storage.file.common import to_ms
from omniq.storage.file.keys import (
    PendingIndex,
    is_pending_name,
    parse_pending,
    parse_running,
    pending_stem,
    running_name,
    split_ext,
    task_id_of,
)

ids = st.text(st.sampled_from("ABCXYZ0189az_-"), min_size=1, max_size=128)
queues = st.text(st.sampled_from("ab09_-."), min_size=1, max_size=20).filter(
    lambda q: not q.startswith(".")
)
due_times = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=MAX_DUE.replace(tzinfo=None),
    timezones=st.just(timezone.utc),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
tasks = st.builds(
    Task,
    func=st.text(min_size=1, max_size=30).filter(str.strip),
    args=st.tuples(json_values, json_values),
    kwargs=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    queue_name=queues,
    id=ids,
    priority=st.integers(PRIORITY_MIN, PRIORITY_MAX),
    eta=due_times,
    max_retries=st.integers(0, 100),
    retry_delay=st.floats(0, 1e6),
)
quick = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@quick
@given(tasks, st.sampled_from(sorted(EXTENSIONS.values())))
def test_pending_names_round_trip_and_sort_in_queue_order(task, ext):
    name = pending_stem(task) + ext
    assert is_pending_name(name)
    parsed = parse_pending(split_ext(name)[0])
    assert parsed is not None
    assert (int(parsed.rank), parsed.due_ms, parsed.task_id) == (
        PRIORITY_MAX - task.priority,
        to_ms(task.due_at),
        task.id,
    )
    assert task_id_of(name) == task.id
    lease = running_name(split_ext(name)[0], to_ms(task.due_at), "worker_1-abc", ext)
    assert parse_running(lease) == (split_ext(name)[0], to_ms(task.due_at), "worker_1-abc")
    assert task_id_of(lease) == task.id


@quick
@given(st.lists(tasks, min_size=1, max_size=8, unique_by=lambda t: t.id))
def test_index_yields_due_names_by_priority_then_due_time(batch):
    names = [pending_stem(t) + ".json" for t in batch]
    index = PendingIndex(names, 0.0)
    now_ms = to_ms(MAX_DUE)
    taken = []
    while (name := index.next_due(now_ms)) is not None:
        index.discard(name)
        taken.append(name)
    assert taken == sorted(set(names))


@given(st.lists(tasks, min_size=1, max_size=8, unique_by=lambda t: t.id), due_times,
       st.integers(1, 9))  # fmt: skip
def test_index_counts_the_due_names_left(batch, now, at_most):
    names = [pending_stem(t) + ".json" for t in batch]
    index = PendingIndex(names, 0.0)
    now_ms = to_ms(now)
    index.discard(sorted(names)[0])
    left = sorted(set(names))[1:]
    due = [n for n in left if parse_pending(split_ext(n)[0]).due_ms <= now_ms]
    got = index.due_left(now_ms, at_most)  # exact below ``at_most``, at least it above
    assert got == len(due) if len(due) < at_most else got >= at_most


@quick
@given(st.text(max_size=200))
def test_name_parsers_never_raise(text):
    parse_pending(text)
    parse_running(text)
    task_id_of(text)
    if is_pending_name(text):
        assert parse_pending(split_ext(text)[0]) is not None


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("secret", [None, "k"])
def test_payloads_round_trip(fmt, secret):
    serializer = Serializer(fmt, secret)

    @quick
    @given(tasks)
    def check(task):
        data = serializer.encode(task)
        assert serializer.decode(data, Task, "x" + EXTENSIONS[fmt]) == task

    check()


@pytest.mark.parametrize("fmt", ["json", "msgpack", "pickle"])
@pytest.mark.parametrize("secret", [None, "k"])
def test_decoders_give_a_task_or_a_clear_error(fmt, secret):
    serializer = Serializer(fmt, secret)

    @quick
    @given(st.binary(max_size=300) | st.builds(lambda t: serializer.encode(t)[:-3], tasks))
    def check(data):
        try:
            got = serializer.decode(data, Task, "x" + EXTENSIONS[fmt])
        except (SerializationError, ValidationError):
            return
        assert isinstance(got, Task)

    check()
