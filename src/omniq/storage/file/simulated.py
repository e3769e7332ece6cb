"""A simulated bucket behind the object-store seam, to run a fleet of workers in one process.

``SimulatedBucket`` holds the objects (versioned: conditional create, compare-and-swap and
versioned deletes behave as on S3/GCS/Azure) and what a provider adds on top: a latency per
request kind (uniform within ±``jitter`` of the mean), the provider's throttling (``503``/``429``
answers, see ``Limits``), injected ``409`` write conflicts, and counts of requests by kind and
answer with their cost at list prices. ``SimulatedObjectStore`` is one process's client of it:
the real ``CloudObjectStore`` (its retries of throttled requests and conflicts, its counting)
over five in-memory "requests" that sleep for their latency. Under an event loop with virtual
time (``looptime``) a thousand workers run the real ``LeaseTaskQueue`` and ``Worker`` code in
seconds; ``benchmarks/scale_sim.py`` does that.

The model's assumptions are stated where they are made (``Limits``, ``PROFILES``); it is a model
of the providers' documented limits, not a measurement of them.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import itertools
import random
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field

from omniq.models._time import utcnow
from omniq.storage.file.cloud import CONDITIONAL, CloudObjectStore, WriteConflict
from omniq.storage.file.objects import VersionMismatch

__all__ = ["PROFILES", "Limits", "Profile", "SimulatedBucket", "SimulatedObjectStore"]

WRITES = frozenset({"put", "delete"})
# Price per request kind in US dollars per 1,000 requests (list prices, standard/hot storage,
# us-east, 2025). DELETE is free on all three; S3 and GCS bill a LIST as a write-class request.
PRICES: dict[str, dict[str, float]] = {
    "s3": {"put": 0.005, "list": 0.005, "get": 0.0004, "delete": 0.0},
    "gcs": {"put": 0.005, "list": 0.005, "get": 0.0004, "delete": 0.0},
    "azure": {"put": 0.0065, "list": 0.0065, "get": 0.0005, "delete": 0.0},
}


class ProviderError(Exception):
    """A throttling answer of the simulated provider; ``status`` is read by ``http_status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


class TokenBucket:
    """``rate`` requests per second with a burst of one second's worth."""

    __slots__ = ("at", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Limits:
    """A provider's request-rate limits (``None``: not limited).

    - ``prefix_writes`` / ``prefix_reads``: S3's 3,500 writes and 5,500 reads per second per
      partitioned prefix, answered with 503. A bucket starts as one partition; a partition that
      has throttled during ``split_after`` seconds splits into one partition per next path
      component (S3 splits on key ranges, after minutes of load; this is the coarse version).
    - ``bucket_writes`` / ``bucket_reads``: GCS's initial ~1,000 writes and 5,000 reads per
      second per bucket, answered with 429 (the ramp-up, doubling every 20 minutes, is not
      modelled: runs are shorter).
    - ``object_write_interval``: GCS's one write per second per object name (429).
    - ``account_requests``: Azure's 20,000 requests per second per storage account (503).
    """

    prefix_writes: float | None = None
    prefix_reads: float | None = None
    split_after: float = 60.0
    bucket_writes: float | None = None
    bucket_reads: float | None = None
    object_write_interval: float | None = None
    account_requests: float | None = None
    status: int = 503


@dataclass
class Profile:
    """A provider: mean latency per request kind (seconds), its limits and its prices."""

    name: str
    latency: dict[str, float] = field(
        default_factory=lambda: {"list": 0.060, "put": 0.040, "get": 0.020, "delete": 0.030}
    )
    jitter: float = 0.5
    limits: Limits = field(default_factory=Limits)
    conflict_rate: float = 0.0  # share of conditional writes answered 409 (retried by the client)
    prices: str = "s3"


PROFILES: dict[str, Profile] = {
    "s3": Profile("s3", limits=Limits(prefix_writes=3500, prefix_reads=5500, status=503)),
    "gcs": Profile(
        "gcs",
        limits=Limits(bucket_writes=1000, bucket_reads=5000, object_write_interval=1.0, status=429),
        prices="gcs",
    ),
    "azure": Profile("azure", limits=Limits(account_requests=20000, status=503), prices="azure"),
}


class SimulatedBucket:
    """The shared state of one simulated bucket: objects, limits and request counts."""

    def __init__(self, profile: Profile | str = "s3", *, seed: int | None = None) -> None:
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.random = random.Random(seed)
        self._objects: dict[str, tuple[bytes, int]] = {}
        self._dirs: dict[str, list[str]] = {}  # prefix (ending in '/') -> sorted file paths
        self._below: Counter[str] = Counter()  # prefix -> objects anywhere below it
        self._subdirs: dict[str, set[str]] = {}  # prefix -> its non-empty sub-prefixes
        self._generation = 0
        self.requests: Counter[str] = Counter()  # by kind, answered requests only
        self.answers: Counter[tuple[str, int]] = Counter()  # (kind, HTTP status)
        self._partitions: dict[str, tuple[TokenBucket, TokenBucket, float]] = {}
        self._split: set[str] = set()  # partitions that split, by prefix
        self._bucket_limits: tuple[TokenBucket, TokenBucket] | None = None
        self._account: TokenBucket | None = None
        self._last_write: dict[str, float] = {}
        self._modified: dict[str, float] = {}  # path -> its last write by OmniQ's clock

    # --------------------------------------------------------------- accounting

    def cost(self, counts: Counter[str] | None = None) -> float:
        """Dollars for ``counts`` (default: every answered request so far) at list prices."""
        prices = PRICES[self.profile.prices]
        counts = self.requests if counts is None else counts
        return sum(prices.get(kind, 0.0) * n / 1000 for kind, n in counts.items())

    @property
    def throttled(self) -> int:
        return sum(n for (_, status), n in self.answers.items() if status in (429, 503))

    def count(self, prefix: str) -> int:
        """How many objects are stored under ``prefix`` (ending in '/')."""
        return self._below[prefix]

    def paths(self) -> builtins.list[str]:
        return sorted(self._objects)

    # --------------------------------------------------------------- the limits

    def partition(self, prefix: str) -> None:
        """Split the partitions down to the children of ``prefix`` (ending in '/') now, as S3
        has them after sustained load or a partitioning request: every ancestor splits."""
        cut = 0
        while True:
            self._split.add(prefix[:cut])
            cut = prefix.find("/", cut) + 1
            if cut == 0:
                return

    def _partition(self, path: str) -> str:
        prefix = ""
        while prefix in self._split:
            cut = path.find("/", len(prefix))
            if cut < 0:
                break
            prefix = path[: cut + 1]
        return prefix

    def admit(self, kind: str, path: str, now: float) -> ProviderError | None:
        """Whether the provider takes one more request now; the throttling answer if not."""
        limits, write = self.profile.limits, kind in WRITES
        status = limits.status
        if limits.account_requests is not None:
            if self._account is None:
                self._account = TokenBucket(limits.account_requests, now)
            if not self._account.take(now):
                return ProviderError(status, "account request rate exceeded")
        if limits.prefix_writes is not None and limits.prefix_reads is not None:
            prefix = self._partition(path)
            entry = self._partitions.get(prefix)
            if entry is None:
                reads, writes = (TokenBucket(limits.prefix_reads, now),
                                 TokenBucket(limits.prefix_writes, now))  # fmt: skip
                entry = self._partitions[prefix] = (reads, writes, -1.0)
            reads, writes, hot_since = entry
            if not (writes if write else reads).take(now):
                if hot_since < 0:
                    self._partitions[prefix] = (reads, writes, now)
                elif now - hot_since >= limits.split_after:
                    self._split.add(prefix)
                return ProviderError(status, f"SlowDown: prefix {prefix!r} is busy")
        if limits.bucket_writes is not None and limits.bucket_reads is not None:
            if self._bucket_limits is None:
                self._bucket_limits = (TokenBucket(limits.bucket_reads, now),
                                       TokenBucket(limits.bucket_writes, now))  # fmt: skip
            reads, writes = self._bucket_limits
            if not (writes if write else reads).take(now):
                return ProviderError(status, "bucket request rate exceeded")
        if write and limits.object_write_interval is not None:
            last = self._last_write.get(path)
            if last is not None and now - last < limits.object_write_interval:
                return ProviderError(status, "one write per second per object exceeded")
        return None

    # --------------------------------------------------------------- the objects

    def _parent(self, path: str) -> str:
        return path[: path.rfind("/") + 1]

    def _ancestors(self, path: str) -> builtins.list[str]:
        cuts = [i for i, ch in enumerate(path) if ch == "/"]
        return [""] + [path[: i + 1] for i in cuts]

    def _store(self, path: str, data: bytes, now: float) -> str:
        self._generation += 1
        if path not in self._objects:
            bisect.insort(self._dirs.setdefault(self._parent(path), []), path)
            ancestors = self._ancestors(path)
            for parent, prefix in itertools.pairwise(ancestors):
                if self._below[prefix] == 0:
                    self._subdirs.setdefault(parent, set()).add(prefix)
            for prefix in ancestors:
                self._below[prefix] += 1
        self._objects[path] = (data, self._generation)
        self._last_write[path] = now
        self._modified[path] = utcnow().timestamp()  # the server's clock agrees with OmniQ's
        return str(self._generation)

    def _remove(self, path: str, now: float) -> None:
        del self._objects[path]
        self._modified.pop(path, None)
        names = self._dirs[self._parent(path)]
        del names[bisect.bisect_left(names, path)]
        ancestors = self._ancestors(path)
        for prefix in ancestors:
            self._below[prefix] -= 1
        for parent, prefix in itertools.pairwise(ancestors):
            if self._below[prefix] == 0:
                self._subdirs[parent].discard(prefix)
        self._last_write[path] = now

    def put(self, path: str, data: bytes, create: bool, version: str | None, now: float) -> str:
        current = self._objects.get(path)
        if create and current is not None:
            self.answers["create", 412] += 1  # a lost claim race, told apart from a lost CAS
            raise FileExistsError(path)
        if version is not None and (current is None or str(current[1]) != version):
            self.answers["put", 412] += 1
            raise VersionMismatch(path)
        self.answers["put", 200] += 1
        return self._store(path, data, now)

    def get(self, path: str) -> tuple[bytes, str]:
        current = self._objects.get(path)
        if current is None:
            self.answers["get", 404] += 1
            raise FileNotFoundError(path)
        self.answers["get", 200] += 1
        return current[0], str(current[1])

    def delete(self, path: str, version: str | None, now: float) -> bool:
        current = self._objects.get(path)
        if current is None:
            self.answers["delete", 404] += 1
            return False
        if version is not None and str(current[1]) != version:
            self.answers["delete", 412] += 1
            raise VersionMismatch(path)
        self.answers["delete", 204] += 1
        self._remove(path, now)
        return True

    def modified_of(self, paths: builtins.list[str]) -> dict[str, float]:
        """The last write of each object among ``paths`` (sub-prefixes have none)."""
        return {p: self._modified[p] for p in paths if p in self._modified}

    def page(
        self, prefix: str, recursive: bool, size: int, start_after: str | None
    ) -> builtins.list[str]:
        """One listing page: paths (files, and sub-prefixes with a trailing '/') after
        ``start_after``, in name order."""
        self.answers["list", 200] += 1
        if recursive:
            return list(itertools.islice(self._below_after(prefix, start_after), size))
        paths = self._entries(prefix)
        start = 0 if start_after is None else bisect.bisect_right(paths, start_after)
        return paths[start : start + size]

    def _entries(self, prefix: str) -> builtins.list[str]:
        paths = self._dirs.get(prefix, [])
        subdirs = self._subdirs.get(prefix)
        return sorted(paths + list(subdirs)) if subdirs else list(paths)

    def _below_after(self, prefix: str, start_after: str | None) -> Iterator[str]:
        """Every object path below ``prefix`` after ``start_after``, in name order (a walk of
        the folders: sorting the whole bucket per page would be slow at a thousand workers)."""
        entries = self._entries(prefix)
        start = 0
        if start_after is not None:
            start = bisect.bisect_right(entries, start_after)
            # The folder holding ``start_after`` sorts before it: the walk goes on inside it.
            if start and entries[start - 1].endswith("/"):
                holder = entries[start - 1]
                if start_after.startswith(holder):
                    yield from self._below_after(holder, start_after)
        for path in entries[start:]:
            if path.endswith("/"):
                yield from self._below_after(path, None)
            else:
                yield path


class SimulatedObjectStore(CloudObjectStore):
    """One client (one worker process) of a ``SimulatedBucket``: the real ``CloudObjectStore``
    logic over requests that take the profile's latency (the change takes effect half-way
    through the request) and may be throttled or answered 409.

    ``frozen`` simulates a killed process: from then on its requests never return.
    ``instant`` skips latency and limits (requests are counted still): for producers whose
    timing is not under study."""

    protocol = "sim"
    driver = "omniq"
    seeks = True

    def __init__(self, bucket: SimulatedBucket, *, instant: bool = False) -> None:
        super().__init__("sim-bucket", {})
        self.sim = bucket
        self.instant = instant
        self.frozen = False
        self.capabilities = CONDITIONAL
        self.object_write_interval = bucket.profile.limits.object_write_interval or 0.0

    async def open(self) -> None:
        """Nothing to connect to, and no probe needed: the simulation honours every condition."""

    async def close(self) -> None:
        """Nothing to release."""

    async def _connect(self) -> None:
        return None

    async def _disconnect(self) -> None:
        return None

    async def _ensure_bucket(self) -> None:
        return None

    async def _request(self, kind: str, path: str) -> float:
        """Send one request: wait half its latency, then raise the provider's throttling answer
        or count it (billed); return the other half, to wait once the change is made."""
        if self.frozen:
            await asyncio.Event().wait()  # a killed process sends nothing more
        self.requests[kind] += 1
        if self.instant:
            self.sim.requests[kind] += 1
            return 0.0
        profile = self.sim.profile
        latency = profile.latency[kind] * (
            1 + self.sim.random.uniform(-profile.jitter, profile.jitter)
        )
        # Halves on a millisecond grid: requests that end together are one step of a
        # virtual-time loop instead of one each (a thousand workers' timers, coalesced).
        half = max(0.001, round(latency / 2, 3))
        await asyncio.sleep(half)
        refused = self.sim.admit(kind, path, self._now())
        if refused is not None:
            self.sim.answers[kind, refused.status] += 1
            self.requests[kind] -= 1  # throttled answers are not billed
            await asyncio.sleep(half)
            raise refused
        self.sim.requests[kind] += 1
        return half

    async def _put(self, path: str, data: bytes, *, create: bool, version: str | None) -> str:
        rest = await self._request("put", path)
        try:
            conflicts = self.sim.profile.conflict_rate
            conditional = create or version is not None
            if conditional and conflicts > 0 and self.sim.random.random() < conflicts:
                self.sim.answers["put", 409] += 1
                raise WriteConflict(path)
            return self.sim.put(path, data, create, version, self._now())
        finally:
            await asyncio.sleep(rest)

    async def _get(self, path: str) -> tuple[bytes, str]:
        rest = await self._request("get", path)
        try:
            return self.sim.get(path)
        finally:
            await asyncio.sleep(rest)

    async def _delete(self, path: str, version: str | None) -> bool:
        rest = await self._request("delete", path)
        try:
            return self.sim.delete(path, version, self._now())
        finally:
            await asyncio.sleep(rest)

    async def _pages(
        self,
        prefix: str,
        recursive: bool,
        page_size: int,
        start_after: str | None = None,
        modified: dict[str, float] | None = None,
    ) -> AsyncGenerator[builtins.list[str], None]:
        after = start_after
        while True:
            rest = await self._request("list", prefix)
            page = self.sim.page(prefix, recursive, page_size, after)
            if modified is not None:
                modified.update(self.sim.modified_of(page))
            await asyncio.sleep(rest)
            yield page
            if len(page) < page_size:
                return
            after = page[-1]

    def _now(self) -> float:
        return asyncio.get_running_loop().time()
