"""Where the tracking layer's CPU time goes: per thread and per backend process, per training step.

    python benchmarks/tracker_cpu.py                       # console, jsonl, tensorboard, wandb
    python benchmarks/tracker_cpu.py --trackers wandb --steps 600 --json

Trains the reference CPU configuration of throughput.py with the chosen trackers logging every
step, and reads Linux's per-thread run time (``/proc/.../schedstat``, in nanoseconds) of this
process's threads and of its child processes (wandb-core) before and after. On a machine whose
cores torch keeps busy, every millisecond listed under "tracking" is a millisecond training
does not get; throughput.py measures what that costs in tokens/s.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
from throughput import ALL_TRACKERS, TrainerLoop, available

# The loop's own thread, and the threads Python did not start: torch's intra-op pool.
TRAINING_THREADS = ("MainThread", "native (torch)")


def _run_seconds(task_dir: Path) -> float:
    return int((task_dir / "schedstat").read_text().split()[0]) / 1e9


def cpu_by_thread() -> dict[str, float]:
    """Seconds on a CPU so far: this process's threads by name, each child process by its name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    seconds: dict[str, float] = {}

    def add(name: str, task_dir: Path) -> None:
        try:
            seconds[name] = seconds.get(name, 0.0) + _run_seconds(task_dir)
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            pass

    for task_dir in Path("/proc/self/task").iterdir():
        add(names.get(int(task_dir.name), "native (torch)"), task_dir)
    for pid in (child.pid for child in psutil.Process().children(recursive=True)):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except FileNotFoundError:
            continue
        for task_dir in tasks:
            add(f"process {name}", task_dir)
    return seconds


def measure(trackers: list[str], steps: int, warmup: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        loop = TrainerLoop(seed, trackers, Path(tmp, "run"))
        loop.run(warmup)
        before, began = cpu_by_thread(), time.perf_counter()
        loop.run(steps)  # ends with a flush: the trackers' work for these steps is done
        seconds, after = time.perf_counter() - began, cpu_by_thread()
        loop.close()
    per_step = {name: (after[name] - before.get(name, 0.0)) * 1e3 / steps for name in after}
    tracking = {name: round(ms, 3) for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])
                if name not in TRAINING_THREADS and ms > 0}
    return {
        "trackers": trackers,
        "steps": steps,
        "step_ms": round(seconds * 1e3 / steps, 2),
        "training_cpu_ms_per_step": round(sum(per_step.get(name, 0.0) for name in TRAINING_THREADS), 2),
        "tracking_cpu_ms_per_step": round(sum(tracking.values()), 3),
        "tracking_by_thread": tracking,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trackers", default=",".join(ALL_TRACKERS), help="default: all four")
    parser.add_argument("--steps", type=int, default=400, help="measured steps (default 400)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    trackers, missing = available(tuple(args.trackers.split(",")))
    if missing:
        raise SystemExit(f"not importable: {', '.join(missing)}")
    result = measure(trackers, args.steps, args.warmup, args.seed)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['steps']} steps of {result['step_ms']} ms; CPU per step: training "
          f"{result['training_cpu_ms_per_step']} ms, tracking {result['tracking_cpu_ms_per_step']} ms")
    for name, ms in result["tracking_by_thread"].items():
        print(f"  {name:<32} {ms:7.3f} ms")


if __name__ == "__main__":
    main()
