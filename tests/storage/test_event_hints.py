"""Bucket event notifications (S3 -> SQS) as wake-up hints for idle consumers (issue 14).

Against moto's server: it delivers a bucket's ObjectCreated events to its SQS queues over real
HTTP, so the hint source runs as it would on AWS. Hints only: the tests also check that a
missing or broken hint source never keeps a task from a consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import pytest

from emulators import aws_client, sqs_hints_queue
from omniq.backend.file import FileBackend
from omniq.exceptions import ConfigError
from omniq.models.task import Task
from omniq.storage.file.hints import SqsHints
from omniq.storage.file.lease_queue import LeaseTaskQueue

# A margin no slow run crosses: moto hands the event over within milliseconds.
PATIENCE = 30.0


def _resting_forever(backend: FileBackend, monkeypatch) -> LeaseTaskQueue:
    """The consumer's queue, its other ways of noticing a task switched off: doorbell rings
    are missed and an empty queue rests an hour, so only a hint can end the rest."""
    queue = backend.task_queue
    assert isinstance(queue, LeaseTaskQueue)
    monkeypatch.setattr(LeaseTaskQueue, "IDLE_LIST_MAX", 3600.0)

    async def missed(_queue: str) -> bool:
        return False

    monkeypatch.setattr(queue.doorbell, "heard", missed)
    return queue


async def test_an_idle_consumer_wakes_on_a_bucket_event(s3_server, monkeypatch):
    url = s3_server.url()
    producer = FileBackend.from_url(url, fs_kwargs=dict(s3_server.options))
    async with producer:  # makes the bucket
        queue_url = await sqs_hints_queue(s3_server, url)
        consumer = FileBackend.from_url(
            url, fs_kwargs=dict(s3_server.options), event_hints=queue_url, listing_ttl=3600
        )
        async with consumer:
            q = _resting_forever(consumer, monkeypatch)
            assert await q.dequeue("default", timeout=0.2) is None  # found empty: it rests
            waiting = asyncio.ensure_future(q.dequeue("default", timeout=PATIENCE))
            await asyncio.sleep(0.1)  # the dequeue waits (and starts listening for hints)
            task_id = await producer.task_queue.enqueue(Task(func="wake-up"))
            got = await waiting
            assert got is not None and got.id == task_id
            assert q.hints is not None and q.hints.stats["heard"] >= 1, q.hints.stats
    # Closed with the backend: nothing left running.
    assert q._hints_task is None


async def test_a_consumer_without_hints_rests_through_the_same_enqueue(s3_server, monkeypatch):
    """The control for the test above: with the doorbell and idle listings switched off the
    same way and no hints, the task is not seen while the queue rests."""
    url = s3_server.url()
    consumer = FileBackend.from_url(url, fs_kwargs=dict(s3_server.options), listing_ttl=3600)
    producer = FileBackend.from_url(url, fs_kwargs=dict(s3_server.options))
    async with consumer, producer:
        q = _resting_forever(consumer, monkeypatch)
        assert await q.dequeue("default", timeout=0.2) is None
        await producer.task_queue.enqueue(Task(func="unheard"))
        assert await q.dequeue("default", timeout=1.0) is None


async def test_broken_hints_never_keep_a_task_from_a_consumer(s3_server, caplog):
    """An SQS queue that does not exist: the hint source logs, backs off and retries; the
    doorbell and listings still bring the task."""
    url = s3_server.url()
    missing = f"{s3_server.endpoint}/123456789012/no-such-queue-{uuid.uuid4().hex[:8]}"
    consumer = FileBackend.from_url(url, fs_kwargs=dict(s3_server.options), event_hints=missing)
    producer = FileBackend.from_url(url, fs_kwargs=dict(s3_server.options))
    with caplog.at_level(logging.WARNING, logger="omniq.storage.file"):
        async with consumer, producer:
            q = consumer.task_queue
            assert await q.dequeue("default", timeout=0.3) is None
            task_id = await producer.task_queue.enqueue(Task(func="still-found"))
            got = await q.dequeue("default", timeout=PATIENCE)
            assert got is not None and got.id == task_id
            assert isinstance(q, LeaseTaskQueue) and q.hints is not None
            assert q.hints.stats["errors"] >= 1
    assert "event hints from" in caplog.text


def _event(key: str, name: str = "ObjectCreated:Put") -> str:
    return json.dumps({"Records": [{"eventName": name, "s3": {"object": {"key": key}}}]})


def test_only_new_pending_tasks_of_valid_queues_are_hints():
    hints = SqsHints("https://sqs.eu-west-1.amazonaws.com/1/q", "base/tasks/", {})
    queues = hints._queues_of
    assert queues(_event("base/tasks/emails/pending/00000-1-x.json")) == {"emails"}
    assert queues(_event("base%2Ftasks%2Femails%2Fpending%2Fa")) == {"emails"}  # URL-encoded
    assert queues(_event("base/tasks/emails/s03/pending/a")) == {"emails"}  # a shard
    sns = json.dumps({"Type": "Notification", "Message": _event("base/tasks/b/pending/a")})
    assert queues(sns) == {"b"}  # delivered through SNS
    for body in [
        _event("base/tasks/emails/completed/x"),  # not a new task
        _event("base/tasks/emails/pending/a", "ObjectRemoved:Delete"),
        _event("other/tasks/emails/pending/a"),  # another base in the bucket
        _event("base/tasks/../pending/a"),  # not a queue name
        _event("base/tasks/emails/doorbell/17"),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}),
        "not json",
        json.dumps([1, 2]),
        json.dumps({"Records": [{"s3": None}]}),
    ]:
        assert queues(body) == set(), body
    assert hints._client_arguments()["region_name"] == "eu-west-1"


@pytest.mark.parametrize(
    "value", ["sqs://queue", "https://", "https://sqs.us-east-1.amazonaws.com/only-one-part", 5]
)
def test_event_hints_must_be_an_sqs_queue_url(value):
    with pytest.raises(ConfigError, match="event_hints"):
        FileBackend.from_url("s3://bucket-one/omniq", event_hints=value)


def test_event_hints_need_an_s3_base():
    with pytest.raises(ConfigError, match="needs an s3:// base"):
        FileBackend.from_url(
            "memory://omniq-hints", event_hints="https://sqs.us-east-1.amazonaws.com/1/q"
        )


async def test_a_hint_that_comes_to_a_busy_consumer_is_passed_on(s3_server):
    """A message received when no dequeue waits any more (the long poll began while idle) is
    made visible again at once, for an idle consumer, instead of being dropped."""
    async with aws_client(s3_server, "sqs") as sqs:
        queue_url = (await sqs.create_queue(QueueName=f"hints-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        hints = SqsHints(queue_url, "base/tasks/", dict(s3_server.options))
        heard: list[str] = []
        listening = asyncio.Event()
        listening.set()
        runner = asyncio.ensure_future(hints.run(heard.append, listening))
        try:
            for _ in range(int(PATIENCE * 10)):  # until its first long poll is under way
                if hints.stats["polls"]:
                    break
                await asyncio.sleep(0.1)
            listening.clear()  # the consumer got busy
            await sqs.send_message(
                QueueUrl=queue_url, MessageBody=_event("base/tasks/emails/pending/a")
            )
            for _ in range(int(PATIENCE * 10)):
                if hints.stats["passed on"]:
                    break
                await asyncio.sleep(0.1)
            assert hints.stats["passed on"] == 1 and heard == [], hints.stats
            again = await sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)
            assert [m["Body"] for m in again.get("Messages", [])] == [
                _event("base/tasks/emails/pending/a")
            ]
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
