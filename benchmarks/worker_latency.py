"""Workers end to end, no-op tasks: OmniQ against its peers' workers, interleaved.

    python -m benchmarks.worker_latency [--tasks 2000] [--latency-samples 200] [--repeats 3]
        [--kinds thread,async] [--peers all] [--base-src /path/to/another/omniq/src]

Every measurement runs in a fresh process, and each repeat runs every system in turn: on a
shared machine compare the ratios within a repeat (printed per repeat), not absolute numbers.

- throughput: N tasks queued up front, then one worker process with 4 slots drains them (OmniQ:
  a burst worker; Huey: its consumer with 4 worker threads, polling every 10 ms; the Redis peers
  below: their workers, paused with SIGSTOP while the tasks are queued). Wall time and the
  worker processes' CPU time per task.
- latency: an idle worker is running; one task at a time is enqueued; latency is the task's
  start (taken inside it) minus the time just before the enqueue call. p50 and p99.
- idle CPU: the worker processes' CPU time over 2 s with nothing to do, in % of one core.

Systems: OmniQ per worker kind; with ``--base-src``, OmniQ imported from that source tree as
well (``base <kind>``: an older commit, for before/after); Huey's SqliteHuey and FileHuey; and
when a ``redis-server`` binary is on the PATH (started on a free port, no persistence, emptied
before each Redis peer): RedisHuey, and RQ, SAQ and Celery with their own worker CLIs (see
``PEERS``: RQ runs one job at a time per worker, so it gets four SimpleWorker processes).
``--peers`` picks a subset by key. A peer whose package is missing is skipped with the reason.
Results go to benchmarks/results/worker_latency.json.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or -m

from benchmarks import bench_tasks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SLOTS = 4
IDLE_SECONDS = 2.0


# ---------------------------------------------------------------------------- OmniQ (child)


def make_app(base: str, kind: str) -> Any:
    """An app with the no-op task of the worker kind (an async worker refuses plain functions)."""
    from omniq import AsyncOmniQ

    app = AsyncOmniQ(base)
    if kind == "async":
        app.task(name="noop_async")(bench_tasks.started_at_async)
    else:
        app.task(name="noop")(bench_tasks.started_at)
    return app


async def throughput(base: str, kind: str, n: int) -> tuple[float, float]:
    """Tasks per second and CPU seconds per task of a burst worker draining ``n`` tasks."""
    app = make_app(base, kind)
    name = "noop_async" if kind == "async" else "noop"
    for _ in range(n):
        await app.enqueue(name)
    t0, c0 = time.perf_counter(), time.process_time()
    stats = await app.run_worker(kind=kind, concurrency=SLOTS, burst=True)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert stats.completed == n, stats
    return n / elapsed, cpu / n


async def latency(base: str, kind: str, samples: int) -> tuple[list[float], float]:
    """Enqueue->start latencies (ms) with an idle worker, and its idle CPU (% of a core)."""
    app = make_app(base, kind)
    name = "noop_async" if kind == "async" else "noop"
    worker = app.worker(kind=kind, concurrency=SLOTS)
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.5)  # let it go idle
    c0 = time.process_time()
    await asyncio.sleep(IDLE_SECONDS)
    idle = (time.process_time() - c0) / IDLE_SECONDS * 100
    out = []
    for _ in range(samples):
        before = time.time()
        handle = await app.enqueue(name)
        started = await handle.result(timeout=30)
        out.append((started - before) * 1000)
        await asyncio.sleep(0.02)
    worker.stop()
    await runner
    return out, idle


def omniq_child(kind: str, n: int, samples: int, tmp: str) -> dict[str, Any]:
    rate, cpu = asyncio.run(throughput(os.path.join(tmp, "tp"), kind, n))
    lat, idle = asyncio.run(latency(os.path.join(tmp, "lat"), kind, samples))
    return {"tasks_per_s": rate, "cpu_us_per_task": cpu * 1e6, "latency_ms": lat, "idle_cpu": idle}


# ----------------------------------------------------------------------------- Huey (child)


def huey_consumer(huey: Any) -> Any:
    """Huey's consumer as the benchmarks run it: SLOTS threads polling every 10 ms."""
    return huey.create_consumer(
        workers=SLOTS, worker_type="thread", initial_delay=0.01, backoff=1.0, max_delay=0.01,
        periodic=False, check_worker_health=False,
    )  # fmt: skip


class HueyCompletions:
    """Counts Huey's completed tasks down: ``expect(n)``, then ``wait()`` until n completed."""

    def __init__(self, huey: Any) -> None:
        from huey.signals import SIGNAL_COMPLETE

        self._lock, self._finished, self._left = threading.Lock(), threading.Event(), 0
        huey.signal(SIGNAL_COMPLETE)(self._completed)

    def expect(self, n: int) -> None:
        with self._lock:
            self._left = n
            self._finished.clear()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def _completed(self, signal: Any, task: Any, *args: Any) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self._finished.set()


def make_huey(store: str, tmp: str) -> Any:
    """Huey on ``store``: sqlite (a database file), file (a folder) or redis."""
    from huey import FileHuey, RedisHuey, SqliteHuey

    if store == "sqlite":
        return SqliteHuey("bench", filename=os.path.join(tmp, "huey.db"))
    if store == "file":
        return FileHuey("bench", path=os.path.join(tmp, "huey"))
    return RedisHuey(f"bench-{os.getpid()}", port=int(os.environ["BENCH_REDIS_PORT"]))


def huey_child(store: str, n: int, samples: int, tmp: str) -> dict[str, Any]:
    huey = make_huey(store, tmp)
    completions = HueyCompletions(huey)
    noop = huey.task(name="noop")(bench_tasks.started_at)

    def consumer() -> Any:
        return huey_consumer(huey)

    completions.expect(n)
    for _ in range(n):
        noop()
    drain = consumer()
    t0, c0 = time.perf_counter(), time.process_time()
    drain.start()
    completions.wait()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    drain.stop(graceful=True)
    huey.flush()
    idle_consumer = consumer()
    idle_consumer.start()

    def run_one() -> float:
        completions.expect(1)
        result = noop()
        completions.wait(30)
        return float(result.get())

    idle, lat = idle_then_latency(time.process_time, run_one, samples)
    idle_consumer.stop(graceful=True)
    return figures(n, elapsed, cpu, lat, idle)


def idle_then_latency(
    cpu: Callable[[], float], run_one: Callable[[], float], samples: int
) -> tuple[float, list[float]]:
    """Idle CPU (% of a core, by ``cpu``: seconds used) of workers with nothing to do, then
    ``samples`` enqueue-to-start latencies in ms (``run_one`` returns a task's start time)."""
    time.sleep(0.5)  # let them go idle
    c0 = cpu()
    time.sleep(IDLE_SECONDS)
    idle = (cpu() - c0) / IDLE_SECONDS * 100
    lat = []
    for _ in range(samples):
        before = time.time()
        lat.append((run_one() - before) * 1000)
        time.sleep(0.02)
    return idle, lat


def figures(n: int, elapsed: float, cpu: float, lat: list[float], idle: float) -> dict[str, Any]:
    return {"tasks_per_s": n / elapsed, "cpu_us_per_task": cpu / n * 1e6, "latency_ms": lat,
            "idle_cpu": idle}  # fmt: skip


# ------------------------------------------------ Redis peers: workers from their CLIs (child)


def session_cpu(sessions: Collection[int]) -> float:
    """CPU seconds of the live processes in these sessions and of the children they reaped."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # from field 3 on: the name may hold spaces
        if int(fields[3]) in sessions:
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class WorkerGroup:
    """Worker processes, each leading a session of its own so the processes it forks are counted,
    paused and resumed with it; their output goes to log files, shown when something fails."""

    def __init__(self, commands: list[list[str]], tmp: str) -> None:
        self.logs = [os.path.join(tmp, f"worker-{i}.log") for i in range(len(commands))]
        self.procs: list[subprocess.Popen[bytes]] = []
        for cmd, log in zip(commands, self.logs, strict=True):
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(
                    cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                ))  # fmt: skip

    def cpu(self) -> float:
        return session_cpu({p.pid for p in self.procs})

    def signal(self, sig: int) -> None:
        for p in self.procs:
            os.killpg(p.pid, sig)

    def wait_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a worker exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.005)

    def output(self) -> str:
        return "\n".join(Path(log).read_text(errors="replace")[-1500:] for log in self.logs)

    def stop(self) -> None:
        """Resume them if paused, and ask for a warm shutdown (SIGTERM); SIGKILL after 15 s."""
        live = [p for p in self.procs if p.poll() is None]
        for p in live:
            os.killpg(p.pid, signal.SIGCONT)
            p.terminate()
        for p in live:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


class RedisPeer(abc.ABC):
    """A peer whose workers are processes started from its CLI; the child talks to its Redis."""

    def __init__(self, port: int) -> None:
        import redis

        self.url = f"redis://127.0.0.1:{port}"
        self.redis = redis.Redis(port=port)
        self.redis.flushall()  # every Redis peer starts on an empty server
        self.sent = 0

    @abc.abstractmethod
    def commands(self) -> list[list[str]]:
        """The worker processes to start."""

    @abc.abstractmethod
    def send_many(self, n: int) -> None:
        """Enqueue ``n`` no-op tasks."""

    @abc.abstractmethod
    def send_one(self, timeout: float) -> float:
        """Enqueue one no-op task, wait for it to finish and return when it started."""

    @abc.abstractmethod
    def finished(self) -> int:
        """How many tasks have finished so far."""

    def ready(self) -> bool:
        """Whether every worker process is up and waiting for work."""
        return True

    def enqueue(self, n: int) -> None:
        self.send_many(n)
        self.sent += n

    def run_one(self, timeout: float = 30) -> float:
        started = self.send_one(timeout)
        self.sent += 1
        return started

    def close(self) -> None:
        self.redis.close()


class RqWorkers(RedisPeer):
    """RQ: an RQ worker runs one job at a time, so SLOTS SimpleWorker processes on one queue."""

    def __init__(self, port: int) -> None:
        from rq import Queue

        super().__init__(port)
        self.queue = Queue("bench", connection=self.redis)

    def commands(self) -> list[list[str]]:
        cmd = [sys.executable, "-m", "rq.cli", "worker", "--worker-class", "rq.worker.SimpleWorker",
               "--url", self.url, "--quiet", "bench"]  # fmt: skip
        return [cmd] * SLOTS

    def ready(self) -> bool:
        from rq import Worker

        workers = Worker.all(queue=self.queue)
        return len(workers) == SLOTS and all(w.get_state() == "idle" for w in workers)

    def send_many(self, n: int) -> None:
        for _ in range(n):
            self.queue.enqueue(bench_tasks.started_at)

    def send_one(self, timeout: float) -> float:
        result = self.queue.enqueue(bench_tasks.started_at).latest_result(timeout=int(timeout))
        if result is None or result.return_value is None:
            raise RuntimeError(f"RQ job failed or timed out: {result}")
        return float(result.return_value)

    def finished(self) -> int:
        return int(self.queue.finished_job_registry.count)


def saq_queue() -> Any:
    from saq import Queue

    return Queue.from_url(f"redis://127.0.0.1:{os.environ['BENCH_REDIS_PORT']}")


def saq_settings() -> dict[str, Any]:
    """The SAQ worker's settings: its CLI loads ``benchmarks.worker_latency.saq_settings``."""
    return {"queue": saq_queue(), "functions": [("noop", bench_tasks.started_at_ctx)],
            "concurrency": SLOTS}  # fmt: skip


class SaqWorker(RedisPeer):
    """SAQ: one worker process running up to SLOTS async jobs at once."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.loop = asyncio.new_event_loop()
        self.queue = saq_queue()
        self.loop.run_until_complete(self.queue.connect())

    def commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "saq", "benchmarks.worker_latency.saq_settings", "--quiet"]]

    def ready(self) -> bool:
        """Its first sweep has run (it aborts any job dequeued but not yet started, as at start)."""
        return bool(self.redis.exists(self.queue.namespace("sweep")))

    def send_many(self, n: int) -> None:
        async def send() -> None:
            for _ in range(n):
                await self.queue.enqueue("noop")

        self.loop.run_until_complete(send())

    def send_one(self, timeout: float) -> float:
        return float(self.loop.run_until_complete(asyncio.wait_for(self._one(), timeout)))

    async def _one(self) -> Any:
        from saq.job import Status

        job = await self.queue.enqueue("noop")
        while job.status != Status.COMPLETE:  # SAQ's own wait subscribes after it looks: racy
            if job.status in (Status.FAILED, Status.ABORTED):
                raise RuntimeError(f"SAQ job {job.status}: {job.error}")
            await asyncio.sleep(0.002)
            await job.refresh()
        return job.result

    def finished(self) -> int:
        return self.sent - int(self.loop.run_until_complete(self.queue.count("incomplete")))

    def close(self) -> None:
        self.loop.run_until_complete(self.queue.disconnect())
        self.loop.close()
        super().close()


@functools.cache
def make_celery_app(results: bool) -> Any:
    """Celery on the benchmark's Redis; with ``results``, results go to its database 1."""
    from celery import Celery

    url = f"redis://127.0.0.1:{os.environ['BENCH_REDIS_PORT']}"
    app = Celery("bench", broker=f"{url}/0", backend=f"{url}/1" if results else None)
    app.conf.broker_connection_retry_on_startup = True
    app.task(name="noop")(bench_tasks.started_at)
    return app


def __getattr__(name: str) -> Any:
    """``celery_app``, built on first use: the Celery worker loads it with ``-A``."""
    if name == "celery_app":
        return make_celery_app(results=True)
    raise AttributeError(name)


class CeleryWorker(RedisPeer):
    """Celery: one prefork worker with SLOTS processes; a finished task is its stored result."""

    def __init__(self, port: int) -> None:
        import redis

        super().__init__(port)
        self.results = redis.Redis(port=port, db=1)

    def commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "celery", "-A", "benchmarks.worker_latency:celery_app",
                 "worker", "-P", "prefork", "-c", str(SLOTS), "-l", "WARNING"]]  # fmt: skip

    def send_many(self, n: int) -> None:
        sender = make_celery_app(results=False)  # no subscription to each result
        for _ in range(n):
            sender.send_task("noop")

    def send_one(self, timeout: float) -> float:
        return float(make_celery_app(results=True).send_task("noop").get(timeout=timeout))

    def finished(self) -> int:
        return int(self.results.dbsize())

    def close(self) -> None:
        self.results.close()
        super().close()


REDIS_PEERS: dict[str, type[RedisPeer]] = {
    "rq": RqWorkers, "saq": SaqWorker, "celery": CeleryWorker,
}  # fmt: skip


def redis_peer_child(system: str, n: int, samples: int, tmp: str) -> dict[str, Any]:
    peer = REDIS_PEERS[system](int(os.environ["BENCH_REDIS_PORT"]))
    workers = WorkerGroup(peer.commands(), tmp)
    try:
        return measure_workers(peer, workers, n, samples)
    except Exception as e:
        raise RuntimeError(f"{system}: {e}\n--- worker output:\n{workers.output()}") from e
    finally:
        workers.stop()
        peer.close()


def measure_workers(peer: RedisPeer, workers: WorkerGroup, n: int, samples: int) -> dict[str, Any]:
    """The child's measurements on worker processes: paused while the tasks are queued."""
    workers.wait_until(peer.ready, 60, "the workers to be ready")
    peer.run_one(timeout=60)  # a first task has run: the workers are up
    time.sleep(0.5)  # let them go idle
    workers.signal(signal.SIGSTOP)
    peer.enqueue(n)
    t0, c0 = time.perf_counter(), workers.cpu()
    workers.signal(signal.SIGCONT)
    workers.wait_until(lambda: peer.finished() >= peer.sent, 60 + n / 20, f"{n} tasks")
    elapsed, cpu = time.perf_counter() - t0, workers.cpu() - c0
    idle, lat = idle_then_latency(workers.cpu, peer.run_one, samples)
    if peer.finished() != peer.sent:
        raise RuntimeError(f"{peer.sent} tasks sent, {peer.finished()} finished")
    return figures(n, elapsed, cpu, lat, idle)


# ------------------------------------------------------------------------------ orchestration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away redis-server on a free port, no persistence; ``None`` without the binary."""

    def __init__(self, tmp: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass(frozen=True)
class Peer:
    key: str  # what --peers names it
    name: str  # its row
    child: str  # the child function that measures it
    arg: str
    package: str
    redis: bool  # needs a redis-server
    note: str  # what runs, for the notes under the table


PEERS = (
    Peer("huey-sqlite", "huey SqliteHuey", "huey", "sqlite", "huey", False,
         "Huey's consumer in the process, 4 worker threads polling every 10 ms"),
    Peer("huey-file", "huey FileHuey", "huey", "file", "huey", False,
         "Huey's consumer in the process, 4 worker threads polling every 10 ms, in a temp folder"),
    Peer("huey-redis", "huey RedisHuey", "huey", "redis", "huey", True,
         "Huey's consumer in the process, 4 worker threads (a blocking pop: no polling)"),
    Peer("rq", "rq SimpleWorker x4 (Redis)", "redis", "rq", "rq", True,
         "4 processes of `rq worker --worker-class rq.worker.SimpleWorker --quiet` on one queue"),
    Peer("saq", "saq Worker c=4 (Redis)", "redis", "saq", "saq", True,
         "1 process of `saq benchmarks.worker_latency.saq_settings --quiet` (concurrency=4),"
         " async no-op"),
    Peer("celery", "celery prefork -c 4 (Redis)", "redis", "celery", "celery", True,
         "`celery worker -P prefork -c 4 -l WARNING`, Redis broker, results in Redis"),
)  # fmt: skip


def unavailable(peer: Peer) -> str | None:
    """Why ``peer`` cannot run here, if it cannot."""
    if importlib.util.find_spec(peer.package) is None:
        return f"{peer.package} not installed (pip install -e '.[bench]')"
    if peer.redis and not shutil.which("redis-server"):
        return "no redis-server binary on the PATH"
    if peer.child == "redis" and not os.path.isdir("/proc"):
        return "reads its worker processes' CPU time from /proc (Linux)"
    return None


def systems(
    kinds: list[str], base_src: str | None, peers: Collection[str] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The systems to run (``peers``: keys of PEERS, None for all), and why any is skipped."""
    out = [{"name": f"omniq {k}", "system": "omniq", "arg": k, "src": None, "redis": False}
           for k in kinds]  # fmt: skip
    if base_src:
        out += [{"name": f"base {k}", "system": "omniq", "arg": k, "src": base_src,
                 "redis": False} for k in kinds]  # fmt: skip
    skipped = []
    for peer in PEERS:
        if peers is not None and peer.key not in peers:
            continue
        if reason := unavailable(peer):
            skipped.append(f"{peer.name}: {reason}")
        else:
            out.append({"name": peer.name, "system": peer.child, "arg": peer.arg, "src": None,
                        "redis": peer.redis, "note": peer.note})  # fmt: skip
    return out, skipped


def run_child(system: dict[str, Any], n: int, samples: int, env: dict[str, str]) -> dict[str, Any]:
    env = dict(os.environ, **env)
    root = str(ROOT)
    src = system["src"] or os.path.join(root, "src")
    env["PYTHONPATH"] = os.pathsep.join([src, root, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "benchmarks.worker_latency", "--child", system["system"],
           system["arg"], "--tasks", str(n), "--latency-samples", str(samples)]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{system['name']} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(
    n: int, samples: int, repeats: int, kinds: list[str], base_src: str | None = None,
    log: Any = None, peers: Collection[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run every system ``repeats`` times, interleaved; medians and per-repeat ratios."""
    chosen, skipped = systems(kinds, base_src, peers)
    runs: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in chosen}
    tmp = tempfile.mkdtemp(prefix="omniq-worker-bench-")
    redis = None
    try:
        env = {}
        if any(s["redis"] for s in chosen):
            redis = RedisServer(tmp)
            env["BENCH_REDIS_PORT"] = str(redis.port)
        for r in range(repeats):
            for system in chosen:
                if log:
                    print(f"  repeat {r + 1}/{repeats}: {system['name']}", file=log)
                runs[system["name"]].append(run_child(system, n, samples, env))
    finally:
        if redis:
            redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    notes = {s["name"]: s["note"] for s in chosen if "note" in s}
    out: dict[str, Any] = {"cpus": os.cpu_count(), "tasks": n, "samples": samples,
                           "repeats": repeats, "skipped": skipped, "notes": notes,
                           "systems": {}}  # fmt: skip
    reference = "huey SqliteHuey" if "huey SqliteHuey" in runs else None
    for name, reps in runs.items():
        lat = [statistics.median(r["latency_ms"]) for r in reps]
        p99 = [statistics.quantiles(r["latency_ms"], n=100)[98] for r in reps]
        row = {
            "tasks_per_s": statistics.median(r["tasks_per_s"] for r in reps),
            "cpu_us_per_task": statistics.median(r["cpu_us_per_task"] for r in reps),
            "latency_ms_p50": statistics.median(lat), "latency_ms_p99": statistics.median(p99),
            "idle_cpu_percent": statistics.median(r["idle_cpu"] for r in reps),
            "tasks_per_s_runs": [r["tasks_per_s"] for r in reps],
        }  # fmt: skip
        if reference:
            row["throughput_ratio_runs"] = [
                a["tasks_per_s"] / b["tasks_per_s"]
                for a, b in zip(reps, runs[reference], strict=True)
            ]
            row["cpu_ratio_runs"] = [
                a["cpu_us_per_task"] / b["cpu_us_per_task"]
                for a, b in zip(reps, runs[reference], strict=True)
            ]
        out["systems"][name] = row
    return out


def table(data: dict[str, Any]) -> str:
    ref = "huey SqliteHuey"
    lines = [
        f"| system | tasks/s | x {ref} (per repeat) | CPU µs/task | enqueue→start p50 / p99"
        " | idle CPU |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in data["systems"].items():
        ratios = " ".join(f"{x:.2f}" for x in r.get("throughput_ratio_runs", []))
        lines.append(
            f"| {name} | {r['tasks_per_s']:,.0f} | {ratios or '-'} | {r['cpu_us_per_task']:,.0f}"
            f" | {r['latency_ms_p50']:.1f} ms / {r['latency_ms_p99']:.1f} ms"
            f" | {r['idle_cpu_percent']:.1f}% |"
        )
    lines += [f"\n{name}: {note}" for name, note in data.get("notes", {}).items()]
    lines += [f"\nskipped: {s}" for s in data["skipped"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", default="thread,async", help="OmniQ worker kinds ('' for none)")
    parser.add_argument(
        "--peers", default="all",
        help=f"'all', 'none' or some of {','.join(p.key for p in PEERS)}",
    )  # fmt: skip
    parser.add_argument("--base-src", help="also run OmniQ from this src directory ('base')")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        system, arg = args.child
        tmp = tempfile.mkdtemp(prefix="omniq-worker-child-")
        try:
            child = {"omniq": omniq_child, "huey": huey_child, "redis": redis_peer_child}[system]
            print(json.dumps(child(arg, args.tasks, args.latency_samples, tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    kinds = [k for k in args.kinds.split(",") if k]
    peers = None if args.peers == "all" else [p for p in args.peers.split(",") if p != "none"]
    if unknown := set(peers or ()) - {p.key for p in PEERS}:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    data = measure(
        args.tasks, args.latency_samples, args.repeats, kinds, args.base_src, sys.stderr, peers
    )
    print(table(data))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worker_latency.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
