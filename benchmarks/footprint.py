"""What finished tasks leave on local disk: OmniQ's tree beside SqliteHuey's database.

    python -m benchmarks.footprint [--tasks 10000] [--base-src /path/to/another/omniq/src]

N no-op tasks are enqueued through the app and drained by a burst worker with the default
settings (4 slots, json, default ttls); then the base directory is walked: files, directories,
inodes (files + directories), bytes (apparent: the files' sizes; allocated: the blocks they
take, ``du``'s default), scaled to 10k tasks and per task. SqliteHuey does the same work (N
no-op tasks enqueued, run by its consumer, results stored) and its database files are measured
the same way. With ``--base-src``, OmniQ imported from that tree as well (before/after).
Each system runs in a fresh process; results go to benchmarks/results/footprint.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or -m

from benchmarks import bench_tasks

RESULTS = Path(__file__).parent / "results"
PER = 10_000


def measure_tree(root: str) -> dict[str, int]:
    """Files, directories (below ``root``), apparent bytes (of files) and allocated bytes (of
    files and directories) of a tree."""
    files = dirs = apparent = allocated = 0
    for path, dirnames, filenames in os.walk(root):
        dirs += len(dirnames)
        for name in dirnames:  # a directory takes blocks too (du counts them)
            allocated += os.lstat(os.path.join(path, name)).st_blocks * 512
        for name in filenames:
            st = os.lstat(os.path.join(path, name))
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"files": files, "dirs": dirs, "inodes": files + dirs, "apparent_bytes": apparent,
            "allocated_bytes": allocated}  # fmt: skip


def omniq_child(base: str, n: int) -> dict[str, Any]:
    from omniq import AsyncOmniQ

    async def run() -> int:
        app = AsyncOmniQ(base)
        app.task(name="noop")(bench_tasks.started_at)
        for _ in range(n):
            await app.enqueue("noop")
        stats = await app.run_worker(burst=True)
        await app.close()
        return stats.completed

    completed = asyncio.run(run())
    assert completed == n, completed
    return measure_tree(base)


def huey_child(base: str, n: int) -> dict[str, Any]:
    from huey import SqliteHuey

    from benchmarks.worker_latency import HueyCompletions, huey_consumer

    os.makedirs(base, exist_ok=True)
    huey = SqliteHuey("footprint", filename=os.path.join(base, "huey.db"))
    completions = HueyCompletions(huey)
    completions.expect(n)
    noop = huey.task(name="noop")(bench_tasks.started_at)
    for _ in range(n):
        noop()
    consumer = huey_consumer(huey)
    consumer.start()
    completions.wait()
    consumer.stop(graceful=True)
    huey.storage.close()  # type: ignore[attr-defined]
    return measure_tree(base)


def run_child(system: str, n: int, src: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="omniq-footprint-") as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.footprint", "--child", system, "--tasks", str(n),
             "--dir", os.path.join(tmp, "data")],
            env=env, cwd=Path(__file__).resolve().parent.parent, check=True,
            capture_output=True, text=True,
        )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(n: int, base_src: str | None = None) -> dict[str, Any]:
    """Footprint per system: raw counts for ``n`` tasks, scaled to 10k and per task."""
    runs: list[tuple[str, str, str | None]] = [("omniq local", "omniq", None)]
    if base_src:
        runs.append(("base local", "omniq", base_src))
    try:
        import huey  # noqa: F401

        runs.append(("huey SqliteHuey", "huey", None))
    except ImportError:
        pass
    out: dict[str, Any] = {}
    for name, system, src in runs:
        raw = run_child(system, n, src)
        out[name] = {
            "n": n, **raw,
            "per_10k": {k: v * PER / n for k, v in raw.items()},
            "per_task": {k: v / n for k, v in raw.items()},
        }  # fmt: skip
    return out


def table(data: dict[str, Any]) -> str:
    lines = [
        "| system | files / task | dirs / task | inodes per 10k | bytes / task (apparent) "
        "| bytes / task (on disk) | MB per 10k (on disk) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in data.items():
        t, k = r["per_task"], r["per_10k"]
        lines.append(
            f"| {name} | {t['files']:.2f} | {t['dirs']:.2f} | {k['inodes']:,.0f} "
            f"| {t['apparent_bytes']:,.0f} | {t['allocated_bytes']:,.0f} "
            f"| {k['allocated_bytes'] / 1e6:,.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=PER)
    parser.add_argument("--base-src", default=None, help="another OmniQ source tree to compare")
    parser.add_argument("--child", choices=["omniq", "huey"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = omniq_child if args.child == "omniq" else huey_child
        print(json.dumps(child(args.dir, args.tasks)))
        return
    data = measure(args.tasks, args.base_src)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "footprint.json").write_text(json.dumps(data, indent=2))
    print(table(data))


if __name__ == "__main__":
    main()
