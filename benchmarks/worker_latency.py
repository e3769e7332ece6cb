"""Workers end to end on local disk, no-op tasks: OmniQ against Huey's consumers, interleaved.

    python -m benchmarks.worker_latency [--tasks 2000] [--latency-samples 200] [--repeats 3]
        [--kinds thread,async] [--base-src /path/to/another/omniq/src]

Every measurement runs in a fresh process, and each repeat runs every system in turn: on a
shared machine compare the ratios within a repeat (printed per repeat), not absolute numbers.

- throughput: N tasks queued up front, then one worker process with 4 slots drains them (OmniQ:
  a burst worker; Huey: its consumer with 4 worker threads, polling every 10 ms). Wall time and
  the worker process's CPU time per task.
- latency: an idle worker is running; one task at a time is enqueued; latency is the task's
  start (taken inside it) minus the time just before the enqueue call. p50 and p99.
- idle CPU: the worker process's CPU time over 2 s with nothing to do, in % of one core.

Systems: OmniQ per worker kind; with ``--base-src``, OmniQ imported from that source tree as
well (``base <kind>``: an older commit, for before/after); Huey's SqliteHuey; and RedisHuey
when a ``redis-server`` binary is on the PATH (started on a free port, no persistence).
Results go to benchmarks/results/worker_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or -m

from benchmarks import bench_tasks

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


def huey_child(store: str, n: int, samples: int, tmp: str) -> dict[str, Any]:
    from huey import RedisHuey, SqliteHuey

    if store == "sqlite":
        huey: Any = SqliteHuey("bench", filename=os.path.join(tmp, "huey.db"))
    else:
        huey = RedisHuey(f"bench-{os.getpid()}", port=int(os.environ["BENCH_REDIS_PORT"]))
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
    time.sleep(0.5)
    c0 = time.process_time()
    time.sleep(IDLE_SECONDS)
    idle = (time.process_time() - c0) / IDLE_SECONDS * 100
    lat = []
    for _ in range(samples):
        completions.expect(1)
        before = time.time()
        result = noop()
        completions.wait(30)
        lat.append((result.get() - before) * 1000)
        time.sleep(0.02)
    idle_consumer.stop(graceful=True)
    return {"tasks_per_s": n / elapsed, "cpu_us_per_task": cpu / n * 1e6, "latency_ms": lat,
            "idle_cpu": idle}  # fmt: skip


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


def systems(kinds: list[str], base_src: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """The systems to run, and why any peer is skipped."""
    out = [{"name": f"omniq {k}", "system": "omniq", "arg": k, "src": None} for k in kinds]
    if base_src:
        out += [{"name": f"base {k}", "system": "omniq", "arg": k, "src": base_src} for k in kinds]
    skipped = []
    try:
        import huey  # noqa: F401
    except ImportError:
        skipped.append("Huey: not installed (pip install -e '.[bench]')")
    else:
        out.append({"name": "huey SqliteHuey", "system": "huey", "arg": "sqlite", "src": None})
        if shutil.which("redis-server"):
            out.append({"name": "huey RedisHuey", "system": "huey", "arg": "redis", "src": None})
        else:
            skipped.append("RedisHuey: no redis-server binary on the PATH")
    return out, skipped


def run_child(system: dict[str, Any], n: int, samples: int, env: dict[str, str]) -> dict[str, Any]:
    env = dict(os.environ, **env)
    root = str(Path(__file__).resolve().parent.parent)
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
    log: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Run every system ``repeats`` times, interleaved; medians and per-repeat ratios."""
    chosen, skipped = systems(kinds, base_src)
    runs: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in chosen}
    tmp = tempfile.mkdtemp(prefix="omniq-worker-bench-")
    redis = None
    try:
        env = {}
        if any(s["arg"] == "redis" for s in chosen):
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
    out: dict[str, Any] = {"cpus": os.cpu_count(), "tasks": n, "samples": samples,
                           "repeats": repeats, "skipped": skipped, "systems": {}}  # fmt: skip
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
    lines += [f"\nskipped: {s}" for s in data["skipped"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", default="thread,async")
    parser.add_argument("--base-src", help="also run OmniQ from this src directory ('base')")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        system, arg = args.child
        tmp = tempfile.mkdtemp(prefix="omniq-worker-child-")
        try:
            child = omniq_child if system == "omniq" else huey_child
            print(json.dumps(child(arg, args.tasks, args.latency_samples, tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    kinds = [k for k in args.kinds.split(",") if k]
    data = measure(args.tasks, args.latency_samples, args.repeats, kinds, args.base_src, sys.stderr)
    print(table(data))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worker_latency.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
