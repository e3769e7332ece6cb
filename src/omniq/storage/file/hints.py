"""Bucket event notifications as wake-up hints for idle consumers (issue 14).

An S3 bucket can send an event for every object created under a prefix to an SQS queue. With
``event_hints`` set to that queue's URL, a consumer whose queues rest (found empty, see
``LeaseTaskQueue._rest``) long-polls the SQS queue; an event for a key under
``<tasks>/<queue>/[sNN/]pending/`` ends that queue's rest at once, instead of at the next
doorbell read (once a second) or idle listing. SQS gives each message to one receiver: one
idle consumer wakes per batch of enqueues, not the whole fleet.

Hints only: a lost, late or duplicated message changes when a queue is listed, never what a
claim does; without any message the doorbell and the idle listings still find every task.
Errors (the queue gone, no permission, no network) are logged and retried with a back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from omniq.exceptions import MissingDependencyError
from omniq.models.config import check_hints_url
from omniq.models.ids import is_valid_name

__all__ = ["SqsHints"]

logger = logging.getLogger("omniq.storage.file")


class SqsHints:
    """Long-polls one SQS queue for S3 ``ObjectCreated`` events and reports the OmniQ queue of
    each new pending task (``on_hint``). ``prefix`` is the key of the tasks folder in the
    bucket, ending in '/'. Runs until cancelled."""

    # A long poll: an idle consumer sends 12 requests a minute ($0.007 a day at SQS's $0.40 per
    # million), and a poll that began while idle ends within this once the consumer is busy.
    WAIT_SECONDS = 5
    RETRY_MAX = 60.0  # back-off after errors, doubling from 1 s up to this

    def __init__(self, url: str, prefix: str, options: dict[str, Any]) -> None:
        self.url = check_hints_url(url)
        self.prefix = prefix
        self._options = options
        #: Messages by outcome: ``heard`` (a pending task of a queue), ``ignored`` (anything
        #: else: other keys, test events, bodies that are not S3 events), ``passed on``
        #: (received when no dequeue waited: visible again for others); ``errors``; and
        #: ``polls``, the receive requests sent.
        self.stats: Counter[str] = Counter()
        self._last_warning = 0.0

    def _client_arguments(self) -> dict[str, Any]:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        region = (self._options.get("client_kwargs") or {}).get("region_name")
        labels = host.split(".")
        if len(labels) >= 4 and labels[0] == "sqs" and labels[-2:] == ["amazonaws", "com"]:
            region = labels[1]  # sqs.<region>.amazonaws.com
        arguments: dict[str, Any] = {
            "endpoint_url": f"{parts.scheme}://{parts.netloc}",
            "region_name": region or "us-east-1",
        }
        if self._options.get("key"):
            arguments["aws_access_key_id"] = self._options["key"]
            arguments["aws_secret_access_key"] = self._options.get("secret")
            arguments["aws_session_token"] = self._options.get("token")
        return arguments

    async def run(self, on_hint: Callable[[str], None], listening: asyncio.Event) -> None:
        """Receive, report and delete messages until cancelled, while ``listening`` is set (a
        dequeue waits). A message that comes when it is not (the consumer got busy during the
        long poll) is made visible again at once, for a consumer that is idle."""
        try:
            from aiobotocore.session import get_session
        except ImportError as exc:
            raise MissingDependencyError(
                "event_hints needs aiobotocore: pip install 'omniq[s3]'"
            ) from exc
        retry = 1.0
        session = get_session()
        async with session.create_client("sqs", **self._client_arguments()) as sqs:
            while True:
                await listening.wait()
                self.stats["polls"] += 1
                try:
                    answer = await sqs.receive_message(
                        QueueUrl=self.url,
                        WaitTimeSeconds=self.WAIT_SECONDS,
                        MaxNumberOfMessages=10,
                    )
                    messages = answer.get("Messages", [])
                    handles = [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ]
                    if messages and not listening.is_set():
                        self.stats["passed on"] += len(messages)
                        await sqs.change_message_visibility_batch(
                            QueueUrl=self.url,
                            Entries=[{**h, "VisibilityTimeout": 0} for h in handles],
                        )
                    elif messages:
                        for queue in self._queues(messages):
                            on_hint(queue)
                        await sqs.delete_message_batch(QueueUrl=self.url, Entries=handles)
                    retry = 1.0
                except Exception as exc:  # hints only: the doorbell and listings go on
                    self.stats["errors"] += 1
                    self._warn(exc, retry)
                    await asyncio.sleep(retry)
                    retry = min(self.RETRY_MAX, retry * 2)

    def _warn(self, exc: Exception, retry: float) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60.0:  # one warning a minute, not one per retry
            self._last_warning = now
            logger.warning(
                "event hints from %s failed (%s: %s); trying again in %.0f s, and idle queues "
                "are still listed on their own",
                self.url, type(exc).__name__, exc, retry,
            )  # fmt: skip

    def _queues(self, messages: list[dict[str, Any]]) -> set[str]:
        queues: set[str] = set()
        for message in messages:
            found = self._queues_of(message.get("Body", ""))
            self.stats["heard" if found else "ignored"] += 1
            queues |= found
        return queues

    def _queues_of(self, body: str) -> set[str]:
        """The queues whose pending/ folder an S3 event in ``body`` names (SNS-wrapped too)."""
        try:
            event = json.loads(body)
            if isinstance(event, dict) and isinstance(event.get("Message"), str):
                event = json.loads(event["Message"])  # delivered through SNS
        except (TypeError, ValueError):
            return set()
        records = event.get("Records") if isinstance(event, dict) else None
        queues: set[str] = set()
        for record in records if isinstance(records, list) else []:
            try:
                key = unquote_plus(record["s3"]["object"]["key"])
                created = str(record.get("eventName", "")).startswith("ObjectCreated")
            except (KeyError, TypeError):
                continue
            queue = self._queue_of(key) if created else None
            if queue is not None:
                queues.add(queue)
        return queues

    def _queue_of(self, key: str) -> str | None:
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix) :].split("/")
        if len(parts) == 4 and parts[1].startswith("s") and parts[1][1:].isdigit():
            parts = [parts[0], *parts[2:]]  # a shard: <queue>/sNN/pending/<name>
        if len(parts) != 3 or parts[1] != "pending" or not is_valid_name(parts[0]):
            return None
        return parts[0]
