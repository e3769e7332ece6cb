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
import contextlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from omniq.exceptions import MissingDependencyError
from omniq.models.config import check_hints_url
from omniq.models.ids import is_valid_name

__all__ = ["SqsHints"]

logger = logging.getLogger("omniq.storage.file")


#: The parts of an AWS host name that name a region: ``eu-west-1``, ``us-gov-west-1``,
#: ``us-isob-east-1``, ``eusc-de-east-1``; and the domains of AWS hosts.
_REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-\d+")
_AWS_DOMAINS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws", ".amazonaws.eu")


class SqsHints:
    """Long-polls one SQS queue for S3 ``ObjectCreated`` events of one OmniQ base (``bucket``,
    and ``prefix``: the key of its tasks folder, ending in '/') and reports the queues that
    got a new pending task (``on_hint``). Runs until cancelled."""

    # A long poll: an idle consumer sends 12 requests a minute ($0.007 a day at SQS's $0.40 per
    # million), and a poll that began while idle ends within this once the consumer is busy.
    WAIT_SECONDS = 5
    RETRY_MAX = 60.0  # back-off after errors, doubling from 1 s up to this
    #: Every message received is hidden this long only: one for queues this consumer does not
    #: wait on is visible again after it for a consumer that does (not at once: this one would
    #: take it again and again), and so is one a stopped consumer's last poll took.
    PASS_ON_SECONDS = 2
    #: An event older than this is dropped: the doorbell (within about 1.5 s) or an idle
    #: listing has seen its task by then, and a message no consumer wants is not passed
    #: round for long. (Consumers' clocks must agree within this, as they must for leases.)
    STALE_SECONDS = 5.0

    def __init__(self, url: str, bucket: str, prefix: str, options: dict[str, Any]) -> None:
        self.url = check_hints_url(url)
        self.bucket = bucket
        self.prefix = prefix
        self._options = options
        #: Messages by outcome: ``heard`` (a new pending task of a queue a dequeue here waits
        #: on), ``passed on`` (for queues or a base no dequeue here waits on: visible again for
        #: another consumer), ``stale``, ``ignored`` (other keys and events, test events,
        #: bodies that are not S3 events); ``errors``, ``polls`` (receive requests) and ``not
        #: deleted`` (deletes SQS refused, such as a receipt that had expired).
        self.stats: Counter[str] = Counter()
        self._last_warning = -math.inf

    def _client_arguments(self) -> dict[str, Any]:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        labels = host.split(".") if host.endswith(_AWS_DOMAINS) else []
        regions = [label for label in labels if _REGION.fullmatch(label)]
        # The queue's own region (sqs.<region>.amazonaws.com, <region>.queue.amazonaws.com,
        # VPC endpoints, .cn, FIPS), else the base's, else botocore's (AWS_REGION, profile).
        region = (
            regions[0] if regions else (self._options.get("client_kwargs") or {}).get("region_name")
        )
        arguments: dict[str, Any] = {"endpoint_url": f"{parts.scheme}://{parts.netloc}"}
        if region:
            arguments["region_name"] = region
        if self._options.get("key"):
            arguments["aws_access_key_id"] = self._options["key"]
            arguments["aws_secret_access_key"] = self._options.get("secret")
            arguments["aws_session_token"] = self._options.get("token")
        return arguments

    async def run(
        self,
        on_hint: Callable[[str], None],
        waited: Callable[[], Collection[str]],
        listening: asyncio.Event,
    ) -> None:
        """Receive messages while ``listening`` is set (a dequeue waits; ``waited()`` says on
        which queues), report the queues among them that got a task, delete what was
        reported, stale or not a new task, and pass the rest on, until cancelled."""
        try:
            from aiobotocore.session import get_session
        except ImportError as exc:
            raise MissingDependencyError(
                "event_hints needs aiobotocore: pip install 'omniq[s3]'"
            ) from exc
        retry = 1.0
        while True:
            try:
                session = get_session()
                if self._options.get("profile"):
                    session.set_config_variable("profile", self._options["profile"])
                async with session.create_client("sqs", **self._client_arguments()) as sqs:
                    while True:
                        await listening.wait()
                        await self._poll(sqs, on_hint, waited)
                        retry = 1.0
            except Exception as exc:  # hints only: the doorbell and listings go on
                self.stats["errors"] += 1
                self._warn(exc, retry)
                await asyncio.sleep(retry)
                retry = min(self.RETRY_MAX, retry * 2)

    async def _poll(
        self, sqs: Any, on_hint: Callable[[str], None], waited: Callable[[], Collection[str]]
    ) -> None:
        self.stats["polls"] += 1
        # Every message received stays hidden only PASS_ON_SECONDS: one passed on needs no
        # further request, and one taken by a poll whose consumer stopped meanwhile (the
        # server answers a closed connection too) is back for the others within seconds.
        answer = await sqs.receive_message(
            QueueUrl=self.url,
            WaitTimeSeconds=self.WAIT_SECONDS,
            MaxNumberOfMessages=10,
            VisibilityTimeout=self.PASS_ON_SECONDS,
            AttributeNames=["SentTimestamp"],
        )
        done: list[dict[str, str]] = []
        wanted = set(waited())
        now_ms = time.time() * 1000
        for i, message in enumerate(answer.get("Messages", [])):
            outcome, queues = self.judge(message, wanted, now_ms)
            self.stats[outcome] += 1
            if outcome == "passed on":
                continue
            if outcome == "heard":
                for queue in queues:
                    on_hint(queue)
            done.append({"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]})
        if done:
            # A delete later than PASS_ON_SECONDS (a blocked loop, a slow answer) may miss: the
            # message is back, at worst a second hint, and dropped as stale within seconds.
            deleting = asyncio.ensure_future(
                sqs.delete_message_batch(QueueUrl=self.url, Entries=done)
            )
            try:
                answer = await asyncio.shield(deleting)
            except asyncio.CancelledError:
                # Closed just after a hint woke a dequeue: let the delete go out (briefly),
                # or the message would come back and wake a consumer for a task taken.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(deleting, self.PASS_ON_SECONDS)
                raise
            self.stats["not deleted"] += len(answer.get("Failed", []))

    def judge(
        self, message: dict[str, Any], wanted: set[str], now_ms: float
    ) -> tuple[str, set[str]]:
        """What to do with one message: ``heard`` (every queue it names is waited on here),
        ``passed on`` (a new task of a queue, or of another base, not waited on here),
        ``stale`` or ``ignored``; and the queues of this base it names."""
        ours, others = self._queues_of(message.get("Body", ""))
        if not ours and not others:
            return "ignored", ours
        sent = str(message.get("Attributes", {}).get("SentTimestamp", ""))
        if sent.isdigit() and now_ms - int(sent) > self.STALE_SECONDS * 1000:
            return "stale", ours
        if ours and not others and ours <= wanted:
            return "heard", ours
        return "passed on", ours

    def _warn(self, exc: Exception, retry: float) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60.0:  # one warning a minute, not one per retry
            self._last_warning = now
            logger.warning(
                "event hints from %s failed (%s: %s); trying again in %.0f s, and idle queues "
                "are still listed on their own",
                self.url, type(exc).__name__, exc, retry,
            )  # fmt: skip

    def _queues_of(self, body: str) -> tuple[set[str], bool]:
        """The queues of this base whose pending/ folder an S3 event in ``body`` (SNS-wrapped
        too) names, and whether it names a pending/ key of another bucket or base."""
        try:
            event = json.loads(body)
            if isinstance(event, dict) and isinstance(event.get("Message"), str):
                event = json.loads(event["Message"])  # delivered through SNS
        except (TypeError, ValueError):
            return set(), False
        records = event.get("Records") if isinstance(event, dict) else None
        queues: set[str] = set()
        others = False
        for record in records if isinstance(records, list) else []:
            try:
                key = unquote_plus(record["s3"]["object"]["key"])
                bucket = record["s3"].get("bucket", {}).get("name", self.bucket)
                created = str(record.get("eventName", "")).startswith("ObjectCreated")
            except (AttributeError, KeyError, TypeError):
                continue
            if not created or "/pending/" not in f"/{key}":
                continue
            queue = self._queue_of(key) if bucket == self.bucket else None
            if queue is not None:
                queues.add(queue)
            else:
                others = True
        return queues, others

    def _queue_of(self, key: str) -> str | None:
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix) :].split("/")
        if len(parts) == 4 and parts[1].startswith("s") and parts[1][1:].isdigit():
            parts = [parts[0], *parts[2:]]  # a shard: <queue>/sNN/pending/<name>
        if len(parts) != 3 or parts[1] != "pending" or not is_valid_name(parts[0]):
            return None
        return parts[0]
