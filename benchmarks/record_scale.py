"""The local record at scale: what the run tools cost on a million-event run and a thousand runs.

    python benchmarks/record_scale.py            # a table
    python benchmarks/record_scale.py --json     # one JSON object, figures and targets
    python benchmarks/record_scale.py --events 20000 --runs 20 --run-events 100   # a quick look

Builds, through the real Run API and the jsonl tracker, one run of ``--events`` train events
(8 metrics each) with an eval every ``--eval-every`` steps, timing every log call (the caller's
cost while the tracker writes at its sustained rate), and a folder of ``--runs`` runs of
``--run-events`` events. Then runs ``trackkit runs list`` (the folder), ``show`` and ``compare``
(the big run and ``--compare`` - 1 others), ``export``, ``plot`` and ``sync --to tensorboard`` (the
big run) as subprocesses, each with its wall time and peak memory (the process's own high-water
mark of resident memory, VmHWM), and reads the big record once with Python's json module, the
yardstick of export's time. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trackkit

TARGETS = {  # command -> (most seconds, most MB); export's seconds are relative to the json read
    "list": (2.0, 150), "show": (1.0, 150), "compare": (1.0, 150),
    "export": (None, 300), "plot": (None, 300), "sync": (None, 300),
}
EXPORT_OVER_JSON = 3.0
RATE_TARGET, P50_TARGET_US = 50_000, 5.0


def train_metrics(step: int, rng: random.Random) -> dict[str, float]:
    """Eight values that vary like a training run's (full-precision floats, as a real loss is)."""
    loss = 2.0 + 3.0 / math.sqrt(step) + rng.random() * 0.1
    return {
        "loss": loss, "perplexity": math.exp(loss), "learning_rate": 3e-4 * min(1.0, step / 2000),
        "grad_norm": rng.random() + 0.5, "tokens_per_second": 50_000 + rng.random() * 1000,
        "elapsed_time": 0.04 + rng.random() * 0.001, "epoch": 1 + step // 100_000, "batch": step % 100_000,
    }


class NullTracker:
    """A tracker that takes every record and does nothing: what the layer alone sustains."""

    @trackkit.hookimpl
    def trackkit_log_train(self, metrics, step):
        pass

    @trackkit.hookimpl
    def trackkit_flush(self):
        pass


def build_run(out: Path, events: int, eval_every: int, seed: int, tracker: str = "jsonl") -> dict[str, float]:
    """Log ``events`` train events (and evals) into a new run at ``out``, as fast as the run takes them.

    Returns the records per second the run sustained (from the first log call until the tracker
    had written them all), the records per second of CPU time of the tracker's own thread (what it
    sustains beside a loop whose steps leave the interpreter free, as torch's kernels do), and the
    cost of a log call to the caller. The metrics are made beforehand: the rate is the tracker's,
    not that of making them.
    """
    rng = random.Random(seed)
    pool = [train_metrics(step, rng) for step in range(1, min(events, 4096) + 1)]
    run = trackkit.start([tracker], output_dir=out, config={"seed": seed, "lr": 3e-4 * (1 + seed % 3)},
                         handle_signals=False)
    costs = [0] * events
    clock = time.perf_counter_ns
    began = time.perf_counter()
    for step in range(1, events + 1):
        metrics = pool[step % len(pool)]
        before = clock()
        run.log_train(metrics, step=step)
        costs[step - 1] = clock() - before
        if step % eval_every == 0:
            loss = 2.0 + 3.0 / math.sqrt(step)
            run.log_eval({"loss": loss, "perplexity": math.exp(loss)}, step=step)
    run.log_final({"best_perplexity": math.exp(2.0 + 3.0 / math.sqrt(events)), "total_steps": events})
    run.flush(timeout=3600)  # every record written: the rate counts them all
    seconds = time.perf_counter() - began
    thread_seconds = thread_cpu_seconds(f"trackkit-{tracker.rpartition(':')[2].lower()}")
    run.finish()
    records = events + events // eval_every + 1
    return {"records": records, "seconds": seconds, "records_per_s": records / seconds,
            # None for a run too short for the clock's ticks (tests' small sizes)
            "records_per_thread_cpu_s": records / thread_seconds if thread_seconds else None,
            "p50_us": statistics.median(costs) / 1000, "p99_us": sorted(costs)[int(len(costs) * 0.99)] / 1000}


def thread_cpu_seconds(name: str) -> float:
    """CPU seconds the thread called ``name`` has used so far (Linux's per-thread accounting)."""
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def read_with_json(path: Path) -> dict[str, float]:
    """Reading the record once, line by line, with Python's json module: export's yardstick."""
    began, cpu = time.perf_counter(), time.process_time()
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
    return {"seconds": time.perf_counter() - began, "cpu_seconds": time.process_time() - cpu}


# `trackkit ARGS` as the console script runs it, writing its peak resident memory (VmHWM, in KiB)
# to the file named first. A child's ru_maxrss from wait4 will not do: Linux carries into it the
# peak of the process it was forked from, this benchmark, whatever the child itself uses.
_CHILD = """
import atexit, sys
out = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(kib)
atexit.register(peak)
from trackkit.cli import main
sys.argv[0] = "trackkit"
main()
"""


def measure(*args: str) -> dict[str, float]:
    """Run ``trackkit ARGS``: wall and CPU seconds, and the peak resident memory of that process in MB."""
    with tempfile.NamedTemporaryFile("r") as peak:
        began, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, "-c", _CHILD, peak.name, *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        seconds, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"trackkit {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": int(peak.read()) / 1024}


def run_benchmark(args: argparse.Namespace, work: Path) -> dict:
    big, sweep = work / "big", work / "sweep"
    log = (lambda message: None) if args.json else (lambda message: print(message, file=sys.stderr, flush=True))
    log(f"building a run of {args.events:,} events ...")
    jsonl = build_run(big, args.events, args.eval_every, seed=0)
    ceiling = build_run(work / "null", min(args.events, 200_000), args.eval_every, 0, "__main__:NullTracker")
    jsonl["layer_alone_records_per_s"] = ceiling["records_per_s"]
    jsonl["layer_alone_records_per_thread_cpu_s"] = ceiling["records_per_thread_cpu_s"]
    log(f"building {args.runs:,} runs of {args.run_events:,} events ...")
    for i in range(args.runs):
        build_run(sweep / f"run-{i:04d}", args.run_events, args.eval_every, seed=i + 1)
    record = big / "trackkit" / "metrics.jsonl"
    others = [str(sweep / f"run-{i:04d}") for i in range(min(args.runs, args.compare - 1))]
    log("timing the commands ...")
    commands = {
        "list": ("runs", "list", str(sweep)),
        "show": ("runs", "show", str(big)),
        "compare": ("runs", "compare", str(big), *others),
        "export": ("runs", "export", str(big), "-o", str(work / "export")),
        "plot": ("runs", "plot", str(big), "-o", str(work / "curves.png")),
        "sync": ("sync", str(big), "--to", "tensorboard"),
    }
    timed = {}
    json_read = read_with_json(record)  # right before the commands: the machine as export finds it
    for name, command in commands.items():
        timed[name] = measure(*command)
        log(f"  {name}: {timed[name]['seconds']:.2f} s, {timed[name]['peak_mb']:.0f} MB")
    return {
        "events": args.events, "runs": args.runs, "run_events": args.run_events,
        "record_mb": record.stat().st_size / 2**20, "json_read": json_read,
        "jsonl": jsonl, "commands": timed,
    }


def verdicts(result: dict) -> dict[str, bool]:
    """Each target (TARGETS, EXPORT_OVER_JSON, the rate and the p50), met or not."""
    met = {}
    for name, (seconds, mb) in TARGETS.items():
        figures = result["commands"][name]
        met[f"{name}_memory"] = figures["peak_mb"] <= mb
        if seconds is not None:
            met[f"{name}_time"] = figures["seconds"] <= seconds
    met["export_time"] = export_over_json(result) <= EXPORT_OVER_JSON
    met["jsonl_rate"] = result["jsonl"]["records_per_s"] >= RATE_TARGET
    met["caller_p50"] = result["jsonl"]["p50_us"] <= P50_TARGET_US
    return met


def export_over_json(result: dict) -> float:
    """Export's time over the json read's, in CPU seconds: on a machine others share, wall times
    taken a minute apart can differ by more than the ratio itself."""
    return result["commands"]["export"]["cpu_seconds"] / result["json_read"]["cpu_seconds"]


def print_table(result: dict) -> None:
    json_read = result["json_read"]
    print(f"record: {result['events']:,} events, {result['record_mb']:.0f} MB; json.loads of every line: "
          f"{json_read['seconds']:.2f} s ({json_read['cpu_seconds']:.2f} s CPU)")
    jsonl = result["jsonl"]
    print(f"jsonl tracker: {jsonl['records_per_s']:,.0f} records/s sustained, "
          f"{_rate(jsonl['records_per_thread_cpu_s'])} per CPU second of its thread "
          f"(a tracker that does nothing: {jsonl['layer_alone_records_per_s']:,.0f} and "
          f"{_rate(jsonl['layer_alone_records_per_thread_cpu_s'])}); "
          f"log call p50 {jsonl['p50_us']:.2f} us, p99 {jsonl['p99_us']:.2f} us")
    print(f"{'command':10s} {'seconds':>8s} {'CPU s':>8s} {'peak MB':>8s}")
    for name, figures in result["commands"].items():
        print(f"{name:10s} {figures['seconds']:8.2f} {figures['cpu_seconds']:8.2f} {figures['peak_mb']:8.0f}")
    print(f"export / json read: {export_over_json(result):.2f}x in CPU time")
    missed = [name for name, ok in result["targets_met"].items() if not ok]
    print("targets: all met" if not missed else f"targets missed: {', '.join(missed)}")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="train events of the big run")
    parser.add_argument("--eval-every", type=int, default=1000, help="steps between evals")
    parser.add_argument("--runs", type=int, default=1000, help="runs in the folder that list reads")
    parser.add_argument("--run-events", type=int, default=2000, help="train events of each of those runs")
    parser.add_argument("--compare", type=int, default=10, help="runs given to compare (the big one included)")
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temporary folder, removed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="record-scale-"))
    try:
        result = run_benchmark(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result["targets_met"] = verdicts(result)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
