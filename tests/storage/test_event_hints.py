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
from typing import Any
from urllib.parse import unquote_plus

import pytest

from emulators import aws_client, sqs_hints_queue
from omniq.backend.file import FileBackend
from omniq.exceptions import ConfigError
from omniq.models.task import Task
from omniq.storage.file.hints import SqsHints
from omniq.storage.file.lease_queue import LeaseTaskQueue

# A margin no slow run crosses: moto hands the event over within milliseconds.
PATIENCE = 30.0


@pytest.fixture(autouse=True)
def _slow_machines_keep_their_hints(monkeypatch):
    """Hints over 5 s old are dropped (the doorbell has done their job by then); on a loaded
    test machine a hint may take longer, so these tests keep them for longer than they wait."""
    monkeypatch.setattr(SqsHints, "STALE_SECONDS", 2 * PATIENCE)


def _backend(server, url: str, **settings: Any) -> FileBackend:
    """A backend on ``url`` of the moto server (its endpoint and keys), with ``settings``."""
    return FileBackend.from_url(url, fs_kwargs=dict(server.options), **settings)


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
    producer = _backend(s3_server, url)
    async with producer:  # makes the bucket
        queue_url = await sqs_hints_queue(s3_server, url)
        consumer = _backend(s3_server, url, event_hints=queue_url, listing_ttl=3600)
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


async def _pending_events_left(s3_server, queue_url: str, seconds: float) -> list[str]:
    """The ``pending/`` keys of the events still in the SQS queue, received for ``seconds``
    (a message a consumer took but did not delete is visible again within 2 s)."""
    keys: list[str] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    async with aws_client(s3_server, "sqs") as sqs:
        while (left := end - loop.time()) > 0:
            answer = await sqs.receive_message(
                QueueUrl=queue_url, WaitTimeSeconds=max(1, int(left)), MaxNumberOfMessages=10
            )
            for message in answer.get("Messages", []):
                for record in json.loads(message["Body"]).get("Records", []):
                    key = unquote_plus(record["s3"]["object"]["key"])
                    if "/pending/" in f"/{key}":
                        keys.append(key)
                await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return keys


async def test_a_hint_acted_on_is_deleted(s3_server, monkeypatch):
    """The message that woke a consumer is gone from the SQS queue: it does not come back to
    wake a consumer again (or cost a receive) for a task already taken."""
    url = s3_server.url()
    producer = _backend(s3_server, url)
    async with producer:
        queue_url = await sqs_hints_queue(s3_server, url)
        consumer = _backend(s3_server, url, event_hints=queue_url, listing_ttl=3600)
        async with consumer:
            q = _resting_forever(consumer, monkeypatch)
            assert await q.dequeue("default", timeout=0.2) is None
            waiting = asyncio.ensure_future(q.dequeue("default", timeout=PATIENCE))
            await asyncio.sleep(0.1)
            await producer.task_queue.enqueue(Task(func="once"))
            assert await waiting is not None
            assert q.hints is not None and q.hints.stats["heard"] == 1, q.hints.stats
        # Received for three times the 2 s a taken message stays hidden.
        assert await _pending_events_left(s3_server, queue_url, 6.0) == []


async def test_a_hint_acted_on_is_deleted_when_the_consumer_closes_at_once(s3_server):
    """The hint wakes a dequeue, which claims and closes the backend before the poller's
    delete has gone out: the close lets the delete finish, and the message does not come
    back 2 s later to wake a consumer for a task already taken."""
    async with aws_client(s3_server, "sqs") as sqs:
        queue_url = (await sqs.create_queue(QueueName=f"hints-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        hints = SqsHints(queue_url, "bkt", "base/tasks/", dict(s3_server.options))
        listening = asyncio.Event()
        listening.set()
        runner: asyncio.Future[None]

        def closed_at_once(queue: str) -> None:
            runner.cancel()  # as LeaseTaskQueue.close() does, before the poller awaits again

        runner = asyncio.ensure_future(hints.run(closed_at_once, lambda: {"emails"}, listening))
        body = _event("base/tasks/emails/pending/a")
        await sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        await asyncio.wait([runner], timeout=PATIENCE)
        assert runner.cancelled() and hints.stats["heard"] == 1, hints.stats
    assert await _pending_events_left(s3_server, queue_url, 6.0) == []


async def test_a_hint_taken_by_a_stopped_consumers_last_poll_reaches_another(
    s3_server, monkeypatch
):
    """A consumer stops while its long poll is out: the server still hands that poll the next
    message (over a closed connection). It is hidden for seconds only, not the SQS queue's
    visibility timeout (30 s), so another waiting consumer hears it soon."""
    url = s3_server.url()
    producer = _backend(s3_server, url)
    async with producer:
        queue_url = await sqs_hints_queue(s3_server, url)
        settings = {"event_hints": queue_url, "listing_ttl": 3600}
        stopping = _backend(s3_server, url, **settings)
        staying = _backend(s3_server, url, **settings)
        async with staying:
            q = _resting_forever(staying, monkeypatch)
            assert await q.dequeue("default", timeout=0.2) is None
            async with stopping:
                gone = _resting_forever(stopping, monkeypatch)
                waits = asyncio.ensure_future(gone.dequeue("default", timeout=PATIENCE))
                assert gone.hints is not None
                for _ in range(int(PATIENCE * 10)):  # until its long poll is under way
                    if gone.hints.stats["polls"]:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.3)  # the request has reached the server
                waits.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waits
            # Closed within its 5-s poll: the server's side of that poll takes this event.
            task_id = await producer.task_queue.enqueue(Task(func="for-the-other"))
            # Less than the SQS queue's 30-s visibility timeout, far more than 2 s.
            got = await q.dequeue("default", timeout=15.0)
            assert got is not None and got.id == task_id
            assert q.hints is not None and q.hints.stats["heard"] >= 1, q.hints.stats


async def test_a_hint_that_comes_while_the_queue_is_listed_is_not_lost(s3_server, monkeypatch):
    """The event of a task enqueued after a look's listing went out arrives before that look
    ends: the look, finding the queue empty, must not rest it (which would undo the hint)."""
    url = s3_server.url()
    producer = _backend(s3_server, url)
    consumer = _backend(s3_server, url, listing_ttl=3600)
    async with consumer, producer:
        q = _resting_forever(consumer, monkeypatch)
        fresh_index = q._fresh_index
        came: list[str] = []

        async def listed_then_a_task_comes(where: str):
            index = await fresh_index(where)  # empty
            if not came:
                came.append(await producer.task_queue.enqueue(Task(func="meanwhile")))
                q._hint("default")  # its event, heard before the look ends
            return index

        monkeypatch.setattr(q, "_fresh_index", listed_then_a_task_comes)
        # Without the hint the queue now rests an hour: 10 s tells the two apart.
        got = await q.dequeue("default", timeout=10.0)
        assert got is not None and came == [got.id]


async def test_a_consumer_without_hints_rests_through_the_same_enqueue(s3_server, monkeypatch):
    """The control for the test above: with the doorbell and idle listings switched off the
    same way and no hints, the task is not seen while the queue rests."""
    url = s3_server.url()
    consumer = _backend(s3_server, url, listing_ttl=3600)
    producer = _backend(s3_server, url)
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
    consumer = _backend(s3_server, url, event_hints=missing)
    producer = _backend(s3_server, url)
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


def _event(key: str, name: str = "ObjectCreated:Put", bucket: str = "bkt") -> str:
    record = {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
    return json.dumps({"Records": [record]})


def _message(body: str, sent_ms: float | None = None) -> dict[str, Any]:
    attributes = {} if sent_ms is None else {"SentTimestamp": str(int(sent_ms))}
    return {"Body": body, "Attributes": attributes}


def test_only_new_pending_tasks_of_waited_queues_are_heard():
    hints = SqsHints("https://sqs.eu-west-1.amazonaws.com/1/q", "bkt", "base/tasks/", {})
    now = 1_000_000_000_000.0

    def judge(body: str, wanted=("emails",), sent: float | None = now - 500):
        return hints.judge(_message(body, sent), set(wanted), now)

    assert judge(_event("base/tasks/emails/pending/00000-1-x.json")) == ("heard", {"emails"})
    assert judge(_event("base%2Ftasks%2Femails%2Fpending%2Fa")) == ("heard", {"emails"})
    assert judge(_event("base/tasks/emails/s03/pending/a")) == ("heard", {"emails"})  # a shard
    sns = json.dumps({"Type": "Notification", "Message": _event("base/tasks/emails/pending/a")})
    assert judge(sns) == ("heard", {"emails"})  # delivered through SNS
    # For a queue, a bucket or a base no dequeue here waits on: someone else's to hear.
    assert judge(_event("base/tasks/sms/pending/a")) == ("passed on", {"sms"})
    assert judge(_event("base/tasks/emails/pending/a", bucket="other")) == ("passed on", set())
    assert judge(_event("other/tasks/emails/pending/a")) == ("passed on", set())
    # Old: the doorbell or an idle listing has found its task.
    too_old = now - SqsHints.STALE_SECONDS * 1000 - 1
    assert judge(_event("base/tasks/sms/pending/a"), sent=too_old)[0] == "stale"
    assert judge(_event("base/tasks/emails/pending/a"), sent=too_old)[0] == "stale"
    for body in [
        _event("base/tasks/emails/completed/x"),  # not a new task
        _event("base/tasks/emails/running/a"),
        _event("base/tasks/emails/pending/a", "ObjectRemoved:Delete"),
        _event("base/tasks/emails/doorbell/17"),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}),
        "not json",
        json.dumps([1, 2]),
        json.dumps({"Records": [{"s3": None}]}),
    ]:
        assert judge(body) == ("ignored", set()), body


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/1/q", "eu-west-1"),
        ("https://eu-west-2.queue.amazonaws.com/1/q", "eu-west-2"),
        ("https://vpce-0a1b-c2d3.sqs.ap-south-1.vpce.amazonaws.com/1/q", "ap-south-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/1/q", "cn-north-1"),
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/1/q", "us-gov-west-1"),
        ("https://sqs.eu-west-1.api.aws/1/q", "eu-west-1"),
        ("http://127.0.0.1:4566/1/q", "from-options"),
    ],
)
def test_the_sqs_client_signs_for_the_queue_region(url, region):
    options = {"client_kwargs": {"region_name": "from-options"}}
    assert SqsHints(url, "b", "tasks/", options)._client_arguments()["region_name"] == region
    # Neither in the URL nor the options: botocore's own resolution (AWS_REGION, a profile).
    assert "region_name" not in SqsHints("http://localhost/1/q", "b", "t/", {})._client_arguments()


@pytest.mark.parametrize(
    "value",
    [
        "sqs://queue",
        "https://",
        "https://sqs.us-east-1.amazonaws.com/only-one-part",
        "https://sqs.us-east-1.amazonaws.com/1/q.fifo",
        5,
    ],
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
    made visible again soon, for an idle consumer, instead of being dropped."""
    async with aws_client(s3_server, "sqs") as sqs:
        queue_url = (await sqs.create_queue(QueueName=f"hints-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        hints = SqsHints(queue_url, "bkt", "base/tasks/", dict(s3_server.options))
        heard: list[str] = []
        listening = asyncio.Event()
        listening.set()

        def waited() -> set[str]:
            return {"emails"} if listening.is_set() else set()

        runner = asyncio.ensure_future(hints.run(heard.append, waited, listening))
        try:
            for _ in range(int(PATIENCE * 10)):  # until its first long poll is under way
                if hints.stats["polls"]:
                    break
                await asyncio.sleep(0.1)
            listening.clear()  # the consumer got busy
            body = _event("base/tasks/emails/pending/a")
            await sqs.send_message(QueueUrl=queue_url, MessageBody=body)
            for _ in range(int(PATIENCE * 10)):
                if hints.stats["passed on"]:
                    break
                await asyncio.sleep(0.1)
            assert hints.stats["passed on"] == 1 and heard == [], hints.stats
            again = await sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=20)
            assert [m["Body"] for m in again.get("Messages", [])] == [body]
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_a_hint_for_a_queue_another_consumer_serves_reaches_it(s3_server, monkeypatch):
    """Two consumers of one base share the SQS queue and serve different queues: a hint for
    the queue of the one that is busy elsewhere is passed on, not taken, and the other wakes."""
    url = s3_server.url()
    producer = _backend(s3_server, url)
    async with producer:
        queue_url = await sqs_hints_queue(s3_server, url)
        settings = {"event_hints": queue_url, "listing_ttl": 3600}
        a = _backend(s3_server, url, **settings)
        b = _backend(s3_server, url, **settings)
        async with a, b:
            qa, qb = _resting_forever(a, monkeypatch), _resting_forever(b, monkeypatch)
            assert await qa.dequeue("other", timeout=0.2) is None
            assert await qb.dequeue("default", timeout=0.2) is None
            a_waits = asyncio.ensure_future(qa.dequeue("other", timeout=PATIENCE))
            await asyncio.sleep(0.1)
            task_id = await producer.task_queue.enqueue(Task(func="for-b"))
            assert qa.hints is not None
            for _ in range(int(PATIENCE * 10)):  # only a waits: the message comes to it
                if qa.hints.stats["passed on"]:
                    break
                await asyncio.sleep(0.1)
            assert qa.hints.stats["passed on"] >= 1 and qa.hints.stats["heard"] == 0
            a_waits.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await a_waits
            got = await qb.dequeue("default", timeout=PATIENCE)
            assert got is not None and got.id == task_id
            assert qb.hints is not None and qb.hints.stats["heard"] >= 1, qb.hints.stats


def test_hints_start_again_when_the_backend_is_opened_on_another_loop(s3_server, monkeypatch):
    """``asyncio.run`` twice on one backend (closed in between): the second loop's waits get
    hints too (the first loop's poller and its event are gone with it)."""
    url = s3_server.url()
    producer = _backend(s3_server, url)

    async def setup() -> str:
        async with producer:
            return await sqs_hints_queue(s3_server, url)

    queue_url = asyncio.run(setup())
    consumer = _backend(s3_server, url, event_hints=queue_url, listing_ttl=3600)

    async def one_round() -> bool:
        async with consumer, producer:
            q = _resting_forever(consumer, monkeypatch)
            assert await q.dequeue("default", timeout=0.2) is None
            waiting = asyncio.ensure_future(q.dequeue("default", timeout=PATIENCE))
            await asyncio.sleep(0.1)
            task_id = await producer.task_queue.enqueue(Task(func="round"))
            got = await waiting
            return got is not None and got.id == task_id

    assert asyncio.run(one_round())
    assert asyncio.run(one_round())
    assert consumer.task_queue.hints.stats["heard"] >= 2


def test_an_event_hints_variable_is_ignored_by_bases_that_are_not_s3(monkeypatch, tmp_path):
    """OMNIQ_EVENT_HINTS exported for a shell's S3 bases leaves its other bases working; the
    setting given in code to such a base is an error (above)."""
    monkeypatch.setenv("OMNIQ_EVENT_HINTS", "https://sqs.us-east-1.amazonaws.com/1/q")
    backend = FileBackend(base_dir=str(tmp_path / "data"), fs_protocol="file")
    assert backend.config.event_hints is not None


async def test_a_dequeue_listens_for_its_queues_while_it_looks_too(s3_server):
    """A dequeue that may wait wants hints for its queues from its start to its end, also
    while it lists and claims between its sleeps: a hint that came then would otherwise be
    passed on to another consumer, seconds later."""
    url = s3_server.url()
    producer = _backend(s3_server, url)
    async with producer:
        queue_url = await sqs_hints_queue(s3_server, url)
        consumer = _backend(s3_server, url, event_hints=queue_url)
        async with consumer:
            q = consumer.task_queue
            assert isinstance(q, LeaseTaskQueue)
            seen: list[set[str]] = []
            claim_next = q._claim_next

            async def looking(queue, *args, **kwargs):
                seen.append(set(q._waited))
                return await claim_next(queue, *args, **kwargs)

            q._claim_next = looking  # type: ignore[method-assign]
            assert await q.dequeue(["default", "other"], timeout=0.3) is None
            assert seen and all(wanted == {"default", "other"} for wanted in seen), seen
            assert not q._waited and not q._listening.is_set()  # none once it returned


async def test_a_worker_picks_up_through_a_hint(s3_server, monkeypatch):
    """End to end: a worker whose queue rests (doorbell and idle listings switched off) runs a
    task another process enqueues, woken by the bucket's event."""
    from omniq import AsyncOmniQ

    url = s3_server.url()
    producer = _backend(s3_server, url)
    async with AsyncOmniQ(producer) as sender:
        queue_url = await sqs_hints_queue(s3_server, url)
        backend = _backend(s3_server, url, event_hints=queue_url, listing_ttl=3600)
        async with AsyncOmniQ(backend) as app:
            q = _resting_forever(backend, monkeypatch)

            @app.task(name="echo")
            def echo(i: int) -> int:
                return i

            @sender.task(name="echo")
            def echo_elsewhere(i: int) -> int:
                return i

            worker = app.worker(["default"], concurrency=2)
            runner = asyncio.create_task(worker.run())
            for _ in range(int(PATIENCE * 10)):  # until the worker found the queue empty
                if "default" in q._quiet:
                    break
                await asyncio.sleep(0.1)
            assert "default" in q._quiet
            handle = await echo_elsewhere.delay(7)
            try:
                assert await handle.result(timeout=PATIENCE) == 7
            finally:
                worker.stop()
                await runner
            assert q.hints is not None and q.hints.stats["heard"] >= 1, q.hints.stats
