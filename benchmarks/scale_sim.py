"""A fleet of workers on one simulated bucket, under virtual time (issue 14).

    python benchmarks/scale_sim.py [--workers 10,100,1000] [--scenarios steady,idle,...]
                                   [--shards K] [--partitioned] [--s3-limit-scale 0.1]

Runs the real ``LeaseTaskQueue`` and ``Worker`` code for N workers (4 slots each, async) in one
process, each worker with its own backend and client of one ``SimulatedBucket``
(``omniq.storage.file.simulated``: per-request latencies LIST 60 ms, PUT 40, GET 20, DELETE 30,
±50%; the provider's throttling; request counts and list prices). ``looptime`` fast-forwards the
event loop: time moves on only when every worker waits on a request or a sleep, so a
thousand workers' minute takes as long as its Python work does. OmniQ's clocks (``utcnow``,
``time.monotonic`` in the queue and worker) read the loop's time.

Scenarios (``SCENARIOS``): ``idle`` (no work: requests and cost of waiting, then the time one new
task takes to be picked up), ``steady`` (2-s tasks, a backlog of ``backlog_seconds`` of
capacity, then tasks arriving at capacity for ``produce_seconds``), ``burst`` (a backlog of
6 s of capacity arrives at once while every worker is idle), ``killed`` (10%
of the workers freeze mid-task, as if SIGKILLed: their tasks come back when their leases
expire), ``gcs-short`` (0.2-s tasks on the GCS profile, one write per second per object).

``--shards K`` spreads the queue over K prefixes (``omniq.storage.file.shards``);
``--partitioned`` starts with S3's partitions split down to the queue's folders (the simulated
bucket otherwise splits one level of the key path per minute of throttling).

Every run checks the invariants: every task finished exactly once by a live worker (a second
run only for tasks of killed workers, after the kill), nothing left pending or running, and a
finish after the lease was taken over raises ``LeaseLostError``. Prints a table per scenario and
writes JSON to benchmarks/results/scale_sim.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import importlib
import json
import logging
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import looptime  # noqa: E402

from omniq import AsyncOmniQ  # noqa: E402
from omniq.backend.file import FileBackend  # noqa: E402
from omniq.exceptions import LeaseLostError  # noqa: E402
from omniq.models import _time  # noqa: E402
from omniq.models.config import FileConfig  # noqa: E402
from omniq.models.task import Task, TaskStatus  # noqa: E402
from omniq.storage.file.shards import location  # noqa: E402
from omniq.storage.file.simulated import (  # noqa: E402
    PRICES,
    PROFILES,
    SimulatedBucket,
    SimulatedObjectStore,
)
from omniq.worker import Worker  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
KINDS = ("put", "get", "list", "delete")
# Modules whose ``time.monotonic()`` must read the virtual clock.
TIMED_MODULES = (
    "omniq.worker",
    "omniq.app",
    "omniq.storage.checks",
    "omniq.storage.file.task_queue",
    "omniq.storage.file.lease_queue",
    "omniq.storage.file.doorbell",
    "omniq.storage.file.shards",
)


@dataclass(frozen=True)
class Scenario:
    name: str
    workers: int
    slots: int = 4
    task_seconds: float = 2.0
    task_jitter: float = 0.0  # each task lasts task_seconds x (1 ± up to this), mean unchanged
    backlog_seconds: float = 4.0  # the backlog at the start: seconds of the fleet's capacity
    produce_seconds: float = 10.0  # then tasks arrive at the fleet's capacity for this long
    profile: str = "s3"
    idle_seconds: float = 0.0  # before the backlog arrives (burst) or instead of it (idle)
    kill_fraction: float = 0.0
    kill_at: float = 3.0
    visibility_timeout: float = 10.0
    limit_seconds: float = 600.0  # virtual time after which a run is cut short (and fails)
    shards: int = 1  # the queue's shard count (omniq.storage.file.shards)
    partitioned: bool = False  # S3 partitions split down to the queue's folders from the start

    @property
    def capacity(self) -> float:
        return self.workers * self.slots / self.task_seconds

    @property
    def tasks(self) -> int:
        if self.name == "idle":
            return 1
        return max(self.workers * self.slots, math.ceil(self.capacity * self.backlog_seconds))


def scaled_s3(scale: float) -> str:
    """The name of an S3 profile whose per-prefix limits are ``scale`` times S3's (registered
    in ``PROFILES``): the throttling of a large fleet with a small one."""
    name = f"s3x{scale:g}"
    limits = PROFILES["s3"].limits
    assert limits.prefix_writes is not None and limits.prefix_reads is not None
    PROFILES[name] = replace(
        PROFILES["s3"], name=name, limits=replace(
            limits, prefix_writes=limits.prefix_writes * scale,
            prefix_reads=limits.prefix_reads * scale,
        ),
    )  # fmt: skip
    return name


def scenario(name: str, workers: int, **overrides: Any) -> Scenario:
    base = {
        "idle": Scenario("idle", workers, idle_seconds=60.0),
        "steady": Scenario("steady", workers),
        "burst": Scenario(
            "burst", workers, idle_seconds=5.0, backlog_seconds=6.0, produce_seconds=0.0
        ),
        "killed": Scenario("killed", workers, kill_fraction=0.1),
        "gcs-short": Scenario(
            "gcs-short", workers, task_seconds=0.2, profile="gcs", produce_seconds=5.0
        ),
    }[name]
    return replace(base, **overrides)


SCENARIOS = ("idle", "steady", "burst", "killed", "gcs-short")


# ---------------------------------------------------------------------- virtual time


class VirtualTime:
    """Stands in for the ``time`` module in OmniQ's modules: monotonic time is loop time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    perf_counter = monotonic

    def time(self) -> float:
        return EPOCH.timestamp() + self._loop.time()

    def time_ns(self) -> int:
        return int(self.time() * 1e9)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def virtual_time(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    shim = VirtualTime(loop)
    modules = [importlib.import_module(m) for m in TIMED_MODULES]
    saved = [m.time for m in modules]  # type: ignore[attr-defined]
    for module in modules:
        module.time = shim  # type: ignore[attr-defined]
    _time.set_clock(lambda: EPOCH + timedelta(seconds=loop.time()))
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.time = original  # type: ignore[attr-defined]
        _time.set_clock(None)


# ---------------------------------------------------------------------- the fleet


class SimBackend(FileBackend):
    """A file backend whose objects live in a simulated bucket."""

    def __init__(self, store: SimulatedObjectStore, **settings: Any) -> None:
        self._sim_store = store
        super().__init__(config=FileConfig(fsspec_uri="memory://sim"), **settings)

    def _make_objects(self) -> SimulatedObjectStore:  # type: ignore[override]
        return self._sim_store


RUNNING_ON: contextvars.ContextVar[str] = contextvars.ContextVar("running_on", default="?")


@dataclass
class Ledger:
    """What happened, as the task function and the wrapped queue methods saw it."""

    runs: dict[int, list[tuple[str, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    finished: dict[str, float] = field(default_factory=dict)  # task id -> time of its finish
    finishes: Counter[str] = field(default_factory=Counter)
    claims: list[float] = field(default_factory=list)  # claim latencies (dequeues with a task)
    claimed_at: list[float] = field(default_factory=list)
    lost_finishes: int = 0


class Fleet:
    def __init__(self, sc: Scenario, loop: asyncio.AbstractEventLoop, seed: int) -> None:
        self.sc = sc
        self.loop = loop
        self.bucket = SimulatedBucket(sc.profile, seed=seed)
        if sc.partitioned:
            self.bucket.partition("tasks/default/")
        self.ledger = Ledger()
        self.lengths = random.Random(seed)  # task lengths (task_jitter), apart from latencies
        self.workers: dict[str, Worker] = {}
        self.stores: dict[str, SimulatedObjectStore] = {}
        self.runs: dict[str, asyncio.Task[Any]] = {}
        self.killed: set[str] = set()
        self.killed_at = math.inf
        self.stale: list[Task] = []  # tasks the killed workers held

    def app(self, store: SimulatedObjectStore) -> AsyncOmniQ:
        backend = SimBackend(store, visibility_timeout=self.sc.visibility_timeout)
        app = AsyncOmniQ(backend)
        ledger, loop = self.ledger, self.loop

        @app.task(name="job")
        async def job(key: int, seconds: float) -> None:
            start = loop.time()
            await asyncio.sleep(seconds)
            ledger.runs[key].append((RUNNING_ON.get(), start, loop.time()))

        return app

    def instrument(self, backend: FileBackend) -> None:
        queue, ledger, loop = backend.task_queue, self.ledger, self.loop
        dequeue, finish = queue.dequeue, queue.finish_task

        async def timed_dequeue(*args: Any, **kwargs: Any) -> Task | None:
            start = loop.time()
            task = await dequeue(*args, **kwargs)
            if task is not None:
                ledger.claims.append(loop.time() - start)
                ledger.claimed_at.append(loop.time())
            return task

        async def counted_finish(task: Task, *args: Any, **kwargs: Any) -> Task:
            try:
                done = await finish(task, *args, **kwargs)
            except LeaseLostError:
                ledger.lost_finishes += 1
                raise
            ledger.finishes[task.id] += 1
            ledger.finished[task.id] = loop.time()
            return done

        queue.dequeue = timed_dequeue  # type: ignore[method-assign]
        queue.finish_task = counted_finish  # type: ignore[method-assign]

    async def start_worker(self, worker_id: str) -> None:
        store = SimulatedObjectStore(self.bucket)
        app = self.app(store)
        self.instrument(app.backend)  # type: ignore[arg-type]
        worker = Worker(app, concurrency=self.sc.slots, kind="async", scheduler=False,
                        cleanup_interval=None, worker_id=worker_id,
                        visibility_timeout=self.sc.visibility_timeout)  # fmt: skip
        self.workers[worker_id], self.stores[worker_id] = worker, store
        ctx = contextvars.copy_context()
        ctx.run(RUNNING_ON.set, worker_id)
        self.runs[worker_id] = ctx.run(asyncio.create_task, worker.run())

    async def enqueue(self, count: int, start: int = 0) -> list[str]:
        """Put ``count`` tasks in the queue at once (no latency, but counted and billed)."""
        app = self.app(SimulatedObjectStore(self.bucket, instant=True))
        ids = []
        for key in range(start, start + count):
            seconds = self.sc.task_seconds * (1 + self.sc.task_jitter * self.lengths.uniform(-1, 1))
            task = Task(func="job", args=(key, seconds), max_retries=3)
            await app.backend.task_queue.enqueue(task)
            ids.append(task.id)
        return ids

    async def produce(self, ids: list[str]) -> None:
        """Enqueue at the fleet's capacity, every 0.1 s, for ``produce_seconds``."""
        per_tick, owed, key = self.sc.capacity / 10, 0.0, len(ids)
        for _ in range(round(self.sc.produce_seconds * 10)):
            await asyncio.sleep(0.1)
            owed += per_tick
            count, owed = int(owed), owed - int(owed)
            ids.extend(await self.enqueue(count, key))
            key += count

    def unsettled(self) -> bool:
        """Whether a task is still pending or running."""
        places = [location("default", k) for k in range(self.sc.shards)]
        return any(
            self.bucket.count(f"tasks/{where}/{state}/")
            for where in places for state in ("pending", "running")
        )  # fmt: skip

    def kill(self) -> None:
        victims = sorted(self.workers)[: round(len(self.workers) * self.sc.kill_fraction)]
        for worker_id in victims:
            self.stores[worker_id].frozen = True
            self.stale.extend(self.workers[worker_id]._running.values())
        self.killed.update(victims)
        self.killed_at = self.loop.time()

    async def stop(self) -> None:
        for worker_id, worker in self.workers.items():
            if worker_id not in self.killed:
                worker.stop(force=True)
        live = [t for w, t in self.runs.items() if w not in self.killed]
        await asyncio.wait(live, timeout=60)
        # Frozen workers' runs, and anything they left (task runners waiting on a request).
        # A cancelled runner of a frozen worker tries to release its task: another request that
        # never returns, cancelled in turn.
        for _ in range(20):
            left = asyncio.all_tasks() - {asyncio.current_task()}
            if not left:
                break
            for task in left:
                task.cancel()
            await asyncio.wait(left, timeout=1.0)


# ---------------------------------------------------------------------- one run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def late_finish_is_refused(fleet: Fleet) -> bool:
    """A holder whose lease expired and was taken over cannot finish the task."""
    first = fleet.app(SimulatedObjectStore(fleet.bucket)).backend.task_queue
    second = fleet.app(SimulatedObjectStore(fleet.bucket)).backend.task_queue
    await first.enqueue(Task(func="job", args=(-1, 0.0), queue_name="late", max_retries=1))
    held = await first.dequeue("late", visibility_timeout=1.0, worker_id="late-1")
    assert held is not None
    await asyncio.sleep(1.5)
    await second.requeue_expired()
    again = await second.dequeue("late", timeout=5.0, worker_id="late-2")
    assert again is not None and again.id == held.id
    try:
        await first.finish_task(held)
    except LeaseLostError:
        await second.finish_task(again)
        return True
    return False


async def run_scenario(sc: Scenario, seed: int = 1) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    fleet = Fleet(sc, loop, seed)
    if sc.shards > 1:
        setup = fleet.app(SimulatedObjectStore(fleet.bucket, instant=True))
        await setup.backend.task_queue.set_shards("default", sc.shards)  # type: ignore[attr-defined]
    t0 = loop.time()
    for i in range(sc.workers):
        await fleet.start_worker(f"w{i:04d}")
    expected: list[str] = []
    if sc.name != "idle" and sc.idle_seconds == 0:
        expected = await fleet.enqueue(sc.tasks)
    idle_requests: Counter[str] = Counter()
    pickup = float("nan")
    if sc.idle_seconds:
        await asyncio.sleep(30.0)  # start-up, and the idle listing back-off reaching its end
        before = Counter(fleet.bucket.requests)
        await asyncio.sleep(sc.idle_seconds)
        idle_requests = Counter(fleet.bucket.requests)
        idle_requests.subtract(before)
        arrived = loop.time()
        expected = await fleet.enqueue(sc.tasks)
        while not fleet.ledger.claimed_at and loop.time() - arrived < 60:
            await asyncio.sleep(0.01)
        pickup = (fleet.ledger.claimed_at[0] - arrived) if fleet.ledger.claimed_at else math.inf
    counted_from = Counter(fleet.bucket.requests)
    answers_from = Counter(fleet.bucket.answers)
    start = loop.time()
    producing = None
    if sc.produce_seconds and sc.name != "idle":
        producing = asyncio.create_task(fleet.produce(expected))
    killed_yet = sc.kill_fraction == 0
    while (
        fleet.unsettled() or (producing is not None and not producing.done())
    ) and loop.time() - start < sc.limit_seconds:
        await asyncio.sleep(0.05)
        if not killed_yet and loop.time() - start >= sc.kill_at:
            fleet.kill()
            killed_yet = True
    end = loop.time()
    if producing is not None:
        producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)
    requests = Counter(fleet.bucket.requests)
    requests.subtract(counted_from)
    answers = Counter(fleet.bucket.answers)
    answers.subtract(answers_from)
    refused_late = [False]
    for stale in fleet.stale:
        try:
            await fleet.app(SimulatedObjectStore(fleet.bucket)).backend.task_queue.finish_task(
                stale
            )
        except LeaseLostError:
            refused_late.append(True)
    await fleet.stop()
    late_ok = await late_finish_is_refused(fleet)

    # ------------------------------------------------------------- invariants
    runs = fleet.ledger.runs
    problems = []
    cut_short = end - start >= sc.limit_seconds
    missing = [t for t in expected if t not in fleet.ledger.finished]
    if missing:  # settled by a reaper (its worker was killed half-way through the finish)?
        queue = fleet.app(SimulatedObjectStore(fleet.bucket, instant=True)).backend.task_queue
        found = [await queue.get_task(t) for t in missing]
        missing = [t for t, f in zip(missing, found, strict=True)
                   if f is None or f.status is not TaskStatus.COMPLETED]  # fmt: skip
    if missing and not cut_short:
        problems.append(f"{len(missing)} task(s) never finished")
    twice = [t for t, n in fleet.ledger.finishes.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} task(s) finished twice")
    for key, executions in runs.items():
        live = [r for r in executions if r[0] not in fleet.killed]
        # A killed worker's run counts once its outcome was settled (by the reaper, when it
        # froze half-way through the settle); live workers run a task at most once.
        if key >= 0 and (len(live) > 1 or not executions):
            problems.append(f"task {key} ran {len(live)} times on live workers")
        if len(executions) > len(live) and any(r[1] < fleet.killed_at for r in live):
            problems.append(f"task {key} ran again before its holder was killed")
    left = [k for k in fleet.bucket.paths() if "/pending/" in k or "/running/" in k]
    if left and not cut_short:
        problems.append(f"{len(left)} object(s) left pending or running")
    if fleet.stale and not all(refused_late[1:]):
        problems.append("a killed worker's late finish was accepted")
    if not late_ok:
        problems.append("a late finish after a take-over was accepted")

    # ------------------------------------------------------------- figures
    n = max(1, len(fleet.ledger.finished) if cut_short else len(expected))
    finish_times = sorted(fleet.ledger.finished.values())
    # Delivered: finishes while there was work for every slot (after the first round, until
    # the last claim of a backlog, or the end of the arrivals).
    last_claim = max(fleet.ledger.claimed_at, default=end)
    busy_until = start + sc.produce_seconds if sc.produce_seconds else last_claim
    window = (start + sc.task_seconds, max(start + sc.task_seconds, busy_until))
    done_in = sum(1 for t in finish_times if window[0] <= t <= window[1])
    span = window[1] - window[0]
    delivered = done_in / span if span > 0 else len(finish_times) / max(end - start, 1e-9)
    # Slots busy: the share of slot-time in the window spent running tasks. With tasks of one
    # length the fleet moves in waves (all slots free within a moment, claim, run 2 s...), and
    # counting finishes in a window of a few waves swings with where the waves fall (92% or
    # 75% for the same cycle); the busy share does not.
    busy = sum(
        max(0.0, min(t1, window[1]) - max(t0, window[0]))
        for executions in fleet.ledger.runs.values() for _, t0, t1 in executions
    )  # fmt: skip
    slots_busy = busy / (sc.workers * sc.slots * span) if span > 0 else float("nan")
    prices = PRICES[fleet.bucket.profile.prices]
    idle_day = (
        sum(prices.get(k, 0.0) * v / 1000 for k, v in idle_requests.items())
        / sc.idle_seconds * 86400
        if sc.idle_seconds else float("nan")
    )  # fmt: skip
    queue_stats: Counter[str] = Counter()
    reap_stats: Counter[str] = Counter()  # leases the reapers' sweeps read and skipped
    for worker in fleet.workers.values():
        queue_stats.update(getattr(worker.backend.task_queue, "claim_stats", {}))
        reap_stats.update(getattr(worker.backend.task_queue, "reap_stats", {}))
    result = {
        "scenario": sc.name,
        "workers": sc.workers,
        "profile": sc.profile,
        "tasks": len(expected),
        "capacity_per_s": round(sc.capacity, 1),
        "delivered_per_s": round(delivered, 1),
        "share_of_capacity": round(delivered / sc.capacity, 3),
        "slots_busy": round(slots_busy, 3),
        "virtual_seconds": round(end - start, 1),
        "failed_creates_per_task": round(answers.get(("create", 412), 0) / n, 3),
        "get_404_per_task": round(answers.get(("get", 404), 0) / n, 3),
        "claim_p50_s": round(percentile(fleet.ledger.claims, 0.5), 3),
        "claim_p99_s": round(percentile(fleet.ledger.claims, 0.99), 3),
        "requests_per_task": {k: round(requests.get(k, 0) / n, 2) for k in KINDS},
        "billable_per_task": round(sum(requests.get(k, 0) for k in ("put", "get", "list")) / n, 2),
        "throttled": sum(v for (_, s), v in answers.items() if s in (429, 503)),
        "conflicts_409": answers.get(("put", 409), 0),
        "cost_per_million_tasks": round(fleet.bucket.cost(requests) / n * 1e6, 2),
        "idle_cost_per_queue_day": round(idle_day, 2),
        "idle_cost_per_worker_day": round(idle_day / sc.workers, 4) if sc.idle_seconds else None,
        "idle_requests": dict(idle_requests),
        "idle_requests_per_worker_s": (
            round(sum(idle_requests.values()) / sc.idle_seconds / sc.workers, 3)
            if sc.idle_seconds
            else None
        ),
        "pickup_s": round(pickup, 3),
        "killed": len(fleet.killed),
        "cut_short": cut_short,
        "finished": len(fleet.ledger.finished),
        "queue_stats": dict(queue_stats),
        "reap_stats": dict(reap_stats),
        "lost_finishes": fleet.ledger.lost_finishes,
        "problems": problems,
        "wall_seconds": None,
        "started_at": t0,
    }
    return result


def virtual_loop() -> asyncio.AbstractEventLoop:
    """An event loop on virtual time (``looptime``), whose timers are never shorter than its
    resolution: a wait of a few nanoseconds (what is left of a timeout, after float rounding)
    would fire without moving time on, and a loop that waits for time to pass would spin."""
    # One no-op cycle before time moves on (looptime's default, 42, costs 42 loop iterations per
    # step of time: most of the run when a thousand workers each wait on their own timers).
    loop = looptime.new_event_loop(start=0.0, noop_cycles=1)
    base = type(loop)

    class Loop(base):  # type: ignore[valid-type,misc]
        def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
            now = self.time()
            if now < when < now + RESOLUTION:
                when = now + RESOLUTION
            return super().call_at(when, callback, *args, context=context)

    loop.__class__ = Loop
    return loop


RESOLUTION = 2e-6


def run(sc: Scenario, seed: int = 1) -> dict[str, Any]:
    """One scenario on a fresh virtual-time event loop. ``seed`` seeds the bucket's latencies
    and also the global ``random`` (the queue's claim picks, retry jitter) for the run: left
    unseeded, the same scenario counted 17-20 reaper PUTs in three runs of one process."""
    loop = virtual_loop()
    wall = time.perf_counter()
    saved = random.getstate()
    random.seed(seed)
    try:
        with virtual_time(loop):
            result = loop.run_until_complete(run_scenario(sc, seed))
    finally:
        random.setstate(saved)
        loop.close()
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    return result


# ---------------------------------------------------------------------- output

COLUMNS = (
    ("N", "workers"),
    ("tasks", "tasks"),
    ("delivered/s (capacity)", None),
    ("slots busy", "slots_busy"),
    ("failed creates/task", "failed_creates_per_task"),
    ("GET 404/task", "get_404_per_task"),
    ("claim p50 / p99 s", None),
    ("billable req/task", "billable_per_task"),
    ("throttled", "throttled"),
    ("$/M tasks", "cost_per_million_tasks"),
    ("idle $/queue/day", "idle_cost_per_queue_day"),
    ("pickup s", "pickup_s"),
    ("ok", None),
)


def row(r: dict[str, Any]) -> list[str]:
    cells = []
    for _, key in COLUMNS:
        if key is not None:
            cells.append(str(r[key]))
    cells.insert(2, f"{r['delivered_per_s']} ({r['capacity_per_s']})")
    cells.insert(6, f"{r['claim_p50_s']} / {r['claim_p99_s']}")
    verdict = "yes" if not r["problems"] else "; ".join(r["problems"])
    if r.get("cut_short"):
        verdict += f" (cut short: {r['finished']} finished)"
    cells.append(verdict)
    return cells


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for name in dict.fromkeys(r["scenario"] for r in results):
        rows = [r for r in results if r["scenario"] == name]
        lines.append(f"\n### {name} ({rows[0]['profile']})\n")
        lines.append("| " + " | ".join(c for c, _ in COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        lines.extend("| " + " | ".join(row(r)) + " |" for r in rows)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="10,100,1000")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--limit", type=float, default=None, help="cut each run short after this virtual time"
    )
    parser.add_argument("--backlog", type=float, default=None, help="backlog_seconds")
    parser.add_argument("--produce", type=float, default=None, help="produce_seconds")
    parser.add_argument("--task-seconds", type=float, default=None, help="task_seconds")
    parser.add_argument(
        "--task-jitter", type=float, default=None,
        help="task lengths spread ± this fraction around task_seconds (0.5: 1-3 s for 2-s "
        "tasks), so that the fleet does not run in lockstep waves",
    )  # fmt: skip
    parser.add_argument(
        "--s3-limit-scale", type=float, default=None,
        help="S3 profile with its per-prefix limits scaled (0.1: a tenth; a throttled fleet "
        "at N = 100 instead of 1,000, in seconds rather than minutes)",
    )  # fmt: skip
    parser.add_argument("--shards", type=int, default=None, help="the queue's shard count")
    parser.add_argument(
        "--slots", type=int, default=None, help="each worker's concurrency (4 unless given)"
    )
    parser.add_argument(
        "--partitioned", action="store_true",
        help="S3 partitions split down to the queue's folders from the start (as after "
        "sustained load: the simulation otherwise splits one level a minute)",
    )  # fmt: skip
    parser.add_argument("--label", default="current", help="a name for this run in the JSON")
    parser.add_argument("--out", default=str(RESULTS / "scale_sim.json"))
    args = parser.parse_args()
    if args.s3_limit_scale is not None and not args.s3_limit_scale > 0:
        parser.error("--s3-limit-scale must be a number above 0")
    if args.slots is not None and args.slots < 1:
        parser.error("--slots must be at least 1")
    if args.task_jitter is not None and not 0 <= args.task_jitter < 1:
        parser.error("--task-jitter must be at least 0 and below 1 (a task cannot last 0 s)")
    logging.getLogger("omniq").setLevel(logging.ERROR)  # expected expiries and lost leases
    results: list[dict[str, Any]] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.scenarios.split(","):
        for n in (int(x) for x in args.workers.split(",")):
            given = {
                "limit_seconds": args.limit, "backlog_seconds": args.backlog,
                "produce_seconds": args.produce, "task_seconds": args.task_seconds,
                "task_jitter": args.task_jitter,
                "shards": args.shards, "partitioned": args.partitioned or None,
                "slots": args.slots,
            }  # fmt: skip
            overrides = {k: v for k, v in given.items() if v is not None}
            if args.s3_limit_scale is not None:
                overrides["profile"] = scaled_s3(args.s3_limit_scale)
            result = run(scenario(name, n, **overrides), args.seed)
            results.append(result)
            print(
                f"{name} N={n}: {result['delivered_per_s']}/s of {result['capacity_per_s']}, "
                f"{result['failed_creates_per_task']} failed creates/task, p99 "
                f"{result['claim_p99_s']} s, {result['wall_seconds']} s wall, "
                f"problems: {result['problems'] or 'none'}",
                flush=True,
            )
            stored = json.loads(out.read_text()) if out.exists() else {}
            stored[args.label] = results  # after each run: long runs may be cut short
            out.write_text(json.dumps(stored, indent=1, default=str) + "\n")
    print(table(results))
    print(f"\nwritten to {out} under {args.label!r}")


if __name__ == "__main__":
    main()

__all__ = ["Scenario", "asdict", "run", "scenario"]
