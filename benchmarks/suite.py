"""The benchmark suite: OmniQ against the queues people would pick instead, and the floor.

    python -m benchmarks            # full: N = 1k, 10k, 100k, 3 repeats (tens of minutes)
    python -m benchmarks --quick    # N = 1k, 3k, 1 repeat, small payload counts (< 2 min)
    python -m benchmarks --only "omniq sqlite,huey SqliteHuey"   # some systems, no worker part

Workloads (all on the same disk, in one run, systems interleaved within each repeat so that the
ratios are taken pair by pair): enqueue N and drain N (take + acknowledge) with 100-byte
messages; payload sizes 100 B / 10 KB / 1 MB; 4 consumer processes on one queue (throughput,
duplicates, losses); OmniQ's worker end to end (throughput and enqueue->start latency); the
footprint finished tasks leave on disk (files, inodes, bytes; benchmarks/footprint.py).
A system whose next size would exceed the time budget (extrapolated from its own growth) is
skipped and marked so. Prints markdown tables, writes benchmarks/results/suite.json and
benchmarks/results/per_task_cost.png.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import systems
from benchmarks.systems import MISSING, System, payload_of

RESULTS = Path(__file__).parent / "results"
# Bars against a named peer, besides the ratios to OmniQ local: system -> its peer.
PEERS = {"omniq sqlite": "huey SqliteHuey", "omniq sqlite fsync": "huey SqliteHuey"}


def one_run(factory: Any, root: str, n: int, size: int) -> dict[str, Any]:
    path = tempfile.mkdtemp(dir=root)
    system: System = factory(path)
    payloads = [payload_of(size, i) for i in range(n)]
    try:
        os.sync()
        t0 = time.perf_counter()
        system.enqueue(payloads)
        enqueue = time.perf_counter() - t0
        os.sync()
        t0 = time.perf_counter()
        got = system.drain()
        drain = time.perf_counter() - t0
    finally:
        system.close()
        shutil.rmtree(path, ignore_errors=True)
    return {"enqueue_s": enqueue, "drain_s": drain, "correct": sorted(got) == sorted(payloads)}


def extrapolate(past: list[tuple[int, float]], n: int) -> float:
    """Seconds a system will need at n, from its own growth so far (at least linear)."""
    if not past:
        return 0.0
    n2, t2 = past[-1]
    exponent = 1.0
    if len(past) > 1:
        n1, t1 = past[-2]
        exponent = max(1.0, math.log(max(t2, 1e-9) / max(t1, 1e-9)) / math.log(n2 / n1))
    return t2 * (n / n2) ** exponent


def time_ratios(base: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median of base time / system time, pair by pair (above 1: the system is faster)."""
    return {
        op: statistics.median(b[f"{op}_s"] / r[f"{op}_s"] for b, r in zip(base, runs, strict=True))
        for op in ("enqueue", "drain")
    }


def scaling(root: str, sizes: list[int], repeats: int, budget: float) -> dict[str, Any]:
    """Per-task enqueue and drain cost at each N, per system; ratios to OmniQ per repeat."""
    out: dict[str, Any] = {}
    history: dict[str, list[tuple[int, float]]] = {}
    for n in sizes:
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(repeats):
            for factory in systems.SYSTEMS:
                name = factory.name
                estimate = extrapolate(history.get(name, []), n)
                if estimate > budget:
                    out.setdefault(name, {})[str(n)] = {"skipped": f"est. {estimate:.0f} s"}
                    continue
                runs.setdefault(name, []).append(one_run(factory, root, n, 100))
            print(f"  N={n} repeat done", file=sys.stderr)
        for name, rs in runs.items():
            total = statistics.median(r["enqueue_s"] + r["drain_s"] for r in rs)
            history.setdefault(name, []).append((n, total))
            out.setdefault(name, {})[str(n)] = {
                "enqueue_us": statistics.median(r["enqueue_s"] for r in rs) / n * 1e6,
                "drain_us": statistics.median(r["drain_s"] for r in rs) / n * 1e6,
                "drain_spread_us": [min(r["drain_s"] for r in rs) / n * 1e6,
                                    max(r["drain_s"] for r in rs) / n * 1e6],
                "correct": all(r["correct"] for r in rs),
                "_runs": rs,
            }  # fmt: skip
        base = runs.get("omniq local")
        for name, rs in runs.items():
            if base and len(rs) == len(base):
                out[name][str(n)]["omniq_time_ratio"] = time_ratios(base, rs)
            peer = runs.get(PEERS.get(name, ""))
            if peer and len(rs) == len(peer):
                out[name][str(n)]["peer_time_ratio"] = time_ratios(peer, rs)
        for name in runs:
            out[name][str(n)].pop("_runs", None)
    return out


def payloads(root: str, sizes: dict[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, n in sizes.items():
        for factory in systems.SYSTEMS:
            r = one_run(factory, root, n, size)
            out.setdefault(factory.name, {})[str(size)] = {
                "n": n, "enqueue_us": r["enqueue_s"] / n * 1e6, "drain_us": r["drain_s"] / n * 1e6,
                "correct": r["correct"],
            }  # fmt: skip
    return out


def _consume(factory: Any, path: str, ready: Any, start: Any, out: Any) -> None:
    """Drain in a consumer process; an error is reported (a system that surfaces "database is
    locked" to its caller, say) instead of leaving the parent waiting for this consumer."""
    opened = False
    try:
        system = factory(path)
        ready.put(True)
        opened = True
        start.wait()
        got = system.drain()
        system.close()
        out.put(got)
    except Exception as exc:
        if not opened:
            ready.put(False)
        out.put(f"{type(exc).__name__}: {exc}")


CONSUMER_SCALING = (1, 2, 4)  # consumer processes: does a queue go faster with more of them?


def concurrent(root: str, n: int, consumers: int = 4) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ctx = mp.get_context("spawn")
    for factory in systems.SYSTEMS:
        if not factory.multi_process:
            continue
        path = tempfile.mkdtemp(dir=root)
        producer = factory(path)
        sent = [payload_of(100, i) for i in range(n)]
        producer.enqueue(sent)
        producer.close()
        ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        # Daemons: if one dies before it is ready (the wait below then times out), the others,
        # waiting for the start, end with this process instead of holding it at exit.
        procs = [
            ctx.Process(target=_consume, args=(factory, path, ready, start, results), daemon=True)
            for _ in range(consumers)
        ]
        for p in procs:
            p.start()
        # Every consumer has imported and opened its store before the clock starts: four
        # processes starting at once on two cores can take longer than a fixed pause, and
        # their start-up counted as queue time made more consumers look slower.
        for _ in procs:
            ready.get(timeout=600)
        t0 = time.perf_counter()
        start.set()
        outcomes = [results.get(timeout=600) for _ in procs]
        elapsed = time.perf_counter() - t0
        errors = [o for o in outcomes if isinstance(o, str)]
        got = [m for o in outcomes if not isinstance(o, str) for m in o]
        for p in procs:
            p.join()
        shutil.rmtree(path, ignore_errors=True)
        out[factory.name] = {
            "tasks_per_s": n / elapsed, "duplicates": len(got) - len(set(got)),
            "lost": len(set(sent) - set(got)), "consumers": consumers, "n": n,
            "errors": errors,
        }  # fmt: skip
    return out


def worker_end_to_end(tasks: int, samples: int, repeats: int) -> dict[str, Any]:
    """OmniQ's worker against its peers' workers, interleaved (benchmarks/worker_latency.py)."""
    from benchmarks.worker_latency import measure

    return measure(tasks, samples, repeats, ["thread", "async"], log=sys.stderr)


def footprint(n: int) -> dict[str, Any]:
    """Files, inodes and bytes that n finished tasks leave, beside SqliteHuey's database."""
    from benchmarks.footprint import measure

    return measure(n)


def plot(scale: dict[str, Any], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, by_n in scale.items():
        xs = [  # a run that lost or changed messages is not a cost
            n for n in sizes
            if "drain_us" in by_n.get(str(n), {}) and by_n[str(n)].get("correct", True)
        ]  # fmt: skip
        ys = [by_n[str(n)]["drain_us"] + by_n[str(n)]["enqueue_us"] for n in xs]
        if xs:
            ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tasks in the queue (N)")
    ax.set_ylabel("µs per task (enqueue + drain)")
    ax.set_title("Per-task cost vs queue size (lower and flatter is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(data: dict[str, Any], sizes: list[int]) -> str:
    lines = [f"Machine: {data['machine']}", ""]
    lines += [
        "Per-task cost, 100-byte messages (µs; median of repeats [min-max]).",
        "(x r): OmniQ local's time divided by the system's, pair by pair in each repeat",
        "(above 1: the system is faster).",
        "",
    ]
    head = "| system | " + " | ".join(f"enqueue N={n} | drain N={n}" for n in sizes) + " |"
    lines += [head, "|---|" + "---|---|" * len(sizes)]
    for name, by_n in data["scaling"].items():
        cells = []
        for n in sizes:
            r = by_n.get(str(n), {})
            if "skipped" in r:
                cells += [f"skipped ({r['skipped']})", ""]
                continue
            ratio = r.get("omniq_time_ratio")
            bad = "" if r.get("correct", True) else " ⚠ wrong"
            vs = {op: f" (x{ratio[op]:.2f})" if ratio else "" for op in ("enqueue", "drain")}
            cells.append(f"{r['enqueue_us']:.0f}{vs['enqueue']}")
            lo, hi = r["drain_spread_us"]
            spread = f" [{lo:.0f}-{hi:.0f}]" if hi - lo >= 1 else ""
            cells.append(f"{r['drain_us']:.0f}{spread}{vs['drain']}{bad}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, peer in PEERS.items():
        by_n = data["scaling"].get(name, {})
        cells = [
            f"N={n}: enqueue x{r['peer_time_ratio']['enqueue']:.2f}, "
            f"drain x{r['peer_time_ratio']['drain']:.2f}"
            for n in sizes
            if "peer_time_ratio" in (r := by_n.get(str(n), {}))
        ]
        if cells:
            lines += ["", f"{name} against {peer} (its time / ours): " + "; ".join(cells)]
    sizes_p = sorted({int(s) for v in data["payloads"].values() for s in v})
    lines += ["", "Payload sizes (µs per message, enqueue / drain)", ""]
    lines += [
        "| system | " + " | ".join(f"{s:,} B" for s in sizes_p) + " |",
        "|---|" + "---|" * len(sizes_p),
    ]
    for name, by_size in data["payloads"].items():
        cells = [
            f"{by_size[str(s)]['enqueue_us']:.0f} / {by_size[str(s)]['drain_us']:.0f}"
            for s in sizes_p
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "4 consumer processes on one queue", ""]
    lines += ["| system | tasks/s | duplicates | lost | consumer errors |", "|---|---|---|---|---|"]
    for name, r in data["concurrent"].items():
        errors = r.get("errors", [])
        failed = f"{len(errors)} ({errors[0]})" if errors else "0"
        lines.append(
            f"| {name} | {r['tasks_per_s']:,.0f} | {r['duplicates']} | {r['lost']} | {failed} |"
        )
    if data.get("consumer_scaling"):
        counts = sorted(data["consumer_scaling"], key=int)
        lines += ["", "Consumer processes on one queue: tasks/s (x one process's)", ""]
        heads = [f"{c} process{'es' * (c != '1')}" for c in counts]
        lines += ["| system | " + " | ".join(heads) + " |", "|---|" + "---|" * len(counts)]
        for name in data["consumer_scaling"][counts[0]]:
            one = data["consumer_scaling"][counts[0]][name]["tasks_per_s"]
            cells = [
                f"{r['tasks_per_s']:,.0f} (x{r['tasks_per_s'] / one:.2f})"
                for c in counts
                if (r := data["consumer_scaling"][c].get(name))
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if data.get("footprint"):
        from benchmarks.footprint import table as footprint_table

        n = next(iter(data["footprint"].values()))["n"]
        lines += ["", f"Footprint of {n:,} finished no-op tasks (worker with default settings)",
                  "", footprint_table(data["footprint"])]  # fmt: skip
    if data["worker"]:
        from benchmarks.worker_latency import table

        lines += ["", "Workers end to end, no-op tasks, local disk or a local redis-server, 4 slots"
                  " (per repeat: tasks/s divided by SqliteHuey's)", "",
                  table(data["worker"])]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (< 2 min)")
    parser.add_argument("--dir", default=None, help="where the queues live (default: a temp dir)")
    parser.add_argument("--report", metavar="JSON", help="only print the tables of a saved run")
    parser.add_argument(
        "--only", metavar="NAMES", help="comma-separated system names (skips the worker part)"
    )
    args = parser.parse_args()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        unknown = wanted - {s.name for s in systems.SYSTEMS}
        if unknown:
            parser.error(f"unknown or not installed: {', '.join(sorted(unknown))}")
        systems.SYSTEMS[:] = [s for s in systems.SYSTEMS if s.name in wanted]
    if args.report:
        data = json.loads(Path(args.report).read_text())
        sizes = sorted({int(n) for by_n in data["scaling"].values() for n in by_n})
        print(report(data, sizes))
        return
    if args.quick:
        sizes, repeats, budget = [1000, 3000], 1, 15.0
        payload_sizes = {100: 300, 10_000: 300, 1_000_000: 20}
        conc_n, worker_tasks, samples, footprint_n = 2000, 500, 30, 2000
    else:
        sizes, repeats, budget = [1000, 10_000, 100_000], 3, 120.0
        payload_sizes = {100: 2000, 10_000: 2000, 1_000_000: 100}
        conc_n, worker_tasks, samples, footprint_n = 10_000, 2000, 200, 10_000
    if MISSING:
        print(f"not installed, left out: {', '.join(MISSING)} (pip install -e '.[bench]')")
    root = tempfile.mkdtemp(prefix="omniq-suite-", dir=args.dir)
    t0 = time.perf_counter()
    try:
        data: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, {'quick' if args.quick else 'full'} run",
        }
        print("scaling...", file=sys.stderr)
        data["scaling"] = scaling(root, sizes, repeats, budget)
        print("payload sizes...", file=sys.stderr)
        data["payloads"] = payloads(root, payload_sizes)
        print("concurrent consumers...", file=sys.stderr)
        data["concurrent"] = concurrent(root, conc_n)
        data["consumer_scaling"] = {
            str(c): concurrent(root, conc_n, consumers=c) for c in CONSUMER_SCALING if c != 4
        }
        data["consumer_scaling"]["4"] = data["concurrent"]
        print("footprint...", file=sys.stderr)
        data["footprint"] = footprint(footprint_n)
        print("worker end to end...", file=sys.stderr)
        data["worker"] = {} if args.only else worker_end_to_end(worker_tasks, samples, repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    data["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "suite.json").write_text(json.dumps(data, indent=2))
    plot(data["scaling"], sizes, RESULTS / "per_task_cost.png")
    print(report(data, sizes))
    print(f"\n({data['seconds']:.0f} s; JSON and PNG in {RESULTS})")


if __name__ == "__main__":
    main()
