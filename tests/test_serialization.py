"""Codecs, unserializable values and HMAC signing."""

from __future__ import annotations

import pytest

from omniq.exceptions import ConfigError, SerializationError, SignatureError
from omniq.models.task import Task
from omniq.serialization import Serializer


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_unserializable_argument(fmt):
    with pytest.raises(SerializationError, match="cannot serialize"):
        Serializer(fmt).encode(Task(func="f", args=(object(),)))


def test_pickle_carries_any_python_object():
    s = Serializer("pickle")
    t = Task(func="f", args=({1, 2}, (1, (2, 3)), complex(1, 2)))
    assert s.decode(s.encode(t), Task, "t.pickle").args == t.args


def test_pickle_refused_unless_opted_in():
    data = Serializer("pickle").encode(Task(func="f"))
    with pytest.raises(SerializationError, match="refusing to unpickle"):
        Serializer("json").decode(data, Task, "t.pickle")


def test_reader_decodes_by_extension():
    data = Serializer("msgpack").encode(Task(func="f"))
    assert Serializer("json").decode(data, Task, "t.msgpack").func == "f"


def test_unknown_format():
    with pytest.raises(ConfigError):
        Serializer("xml")


def test_signed_roundtrip_and_tamper_detection():
    s = Serializer("json", secret_key="s3cret")
    data = s.encode(Task(func="f"))
    assert data.startswith(b"#omniq-hmac-sha256:")
    assert s.decode(data, Task, "t.json").func == "f"
    tampered = data.replace(b'"func":"f"', b'"func":"g"')
    with pytest.raises(SignatureError, match="mismatch"):
        s.decode(tampered, Task, "t.json")
    with pytest.raises(SignatureError, match="mismatch"):
        Serializer("json", secret_key="other").decode(data, Task, "t.json")
    with pytest.raises(SignatureError, match="unsigned"):
        s.decode(Serializer("json").encode(Task(func="f")), Task, "t.json")


@pytest.mark.file_layout(
    "drops a file into pending/ (SQLite: tests/backend/test_sqlite_backend.py)"
)
async def test_backend_refuses_injected_task_when_key_set(backend_factory):
    signed = backend_factory(secret_key="k1")
    async with signed:
        q = signed.get_task_queue()
        await q.enqueue(Task(func="legit"))
        # Someone with write access to the bucket drops in an unsigned task.
        from omniq.storage.file.keys import pending_stem

        evil = Task(func="os.system", args=("rm -rf /",), priority=9)
        await signed.objects.put(
            f"tasks/default/pending/{pending_stem(evil)}.json", Serializer("json").encode(evil)
        )
        got = await q.dequeue("default")
        assert got is not None and got.func == "legit"
        assert await q.dequeue("default") is None
        from storage.test_corruption import claimed_dir

        assert len(await signed.objects.list(f"corrupt/tasks/default/{claimed_dir(signed)}")) == 1


@pytest.mark.file_layout("reads the stored file (SQLite: tests/backend/test_sqlite_backend.py)")
async def test_secret_key_from_environment(backend_factory, monkeypatch):
    monkeypatch.setenv("OMNIQ_SECRET_KEY", "from-env")
    b = backend_factory()
    async with b:
        await b.get_task_queue().enqueue(Task(func="f"))
        [name] = await b.objects.list("tasks/default/pending")
        assert (await b.objects.get(f"tasks/default/pending/{name}")).startswith(b"#omniq-hmac")


def test_appended_json_reads_as_its_last_document():
    s = Serializer("json")
    payload = Task(func="f", args=(1,))
    done = Task(func="f", args=(1,), id=payload.id, status="completed")
    data = s.encode(payload) + s.appended(done)
    assert data.count(b"\n") == 1  # JSON Lines: one document per line
    assert s.decode(data, Task, "t.json").status.value == "completed"


@pytest.mark.parametrize("cut", [1, 2, 40])
def test_a_partial_append_reads_as_the_document_before_it(cut):
    """A writer killed in the middle of an append leaves part of a line: it does not count."""
    s = Serializer("json")
    payload = Task(func="f", args=(1,))
    tail = s.appended(Task(func="f", id=payload.id, status="completed"))
    got = s.decode(s.encode(payload) + tail[:cut], Task, "t.json")
    assert got.status.value == "pending" and got.args == (1,)


def test_json_written_with_line_breaks_still_reads():
    text = b'{\n  "func": "f",\n  "args": [1]\n}\n'
    assert Serializer("json").decode(text, Task, "t.json").args == (1,)
    with pytest.raises(SerializationError):
        Serializer("json").decode(b'{\n  "func": "f",\n  "args": [1\n', Task, "t.json")


def test_only_unsigned_json_appends():
    assert Serializer("json").appends
    assert not Serializer("json", secret_key="k").appends  # the signature covers all bytes
    assert not Serializer("msgpack").appends and not Serializer("pickle").appends


def test_a_whole_last_line_this_reader_cannot_take_is_unreadable_not_skipped():
    """Only a line cut short is passed over: a complete document that does not decode (a
    status from a later version, say) must not read as the payload before it."""
    s = Serializer("json")
    payload = Task(func="f")
    later = s.appended(Task(func="f", id=payload.id)).replace(b'"pending"', b'"exploded"')
    with pytest.raises(SerializationError):
        s.decode(s.encode(payload) + later, Task, "t.json")


def test_a_value_nested_too_deep_is_a_serialization_error():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for fmt in ("json", "msgpack", "pickle"):
        with pytest.raises(SerializationError, match="cannot serialize"):
            Serializer(fmt).encode(Task(func="f", args=(deep,)))


def test_only_json_objects_take_appends():
    s = Serializer("json")
    assert s.appends_to("tasks/q/running/a~1~t.json")
    assert not s.appends_to("tasks/q/running/a~1~t.msgpack")  # read by its extension
