"""What one log call with five metrics costs the training loop, per tracker configuration.

    python benchmarks/overhead.py                 # a table
    python benchmarks/overhead.py --json          # {"<config>": {"p50_us": .., "p99_us": ..}, ...}
    python benchmarks/overhead.py --only none,console+jsonl --calls 2000

Between two log calls the loop multiplies matrices for ``--step-ms``: a stand-in for a training
step, which keeps the CPU busy in torch kernels with the GIL released, so the trackers' threads
get to work as they would in training. (Not a sleep: on a virtual machine, the first
instructions after an idle CPU wakes up run several times slower, and that would be measured.)
Only the log call itself is timed. ``direct-*`` call the backend in the loop, the way
trackkit replaces: five ``SummaryWriter.add_scalar`` calls, or one wandb ``run.log``.

Every configuration is open at once and they take turns, ``--rounds`` chunks each, the order
rotating every round, so that a slow spell of the machine hits all of them alike. After its
chunk, a configuration's trackers are flushed (untimed): the next one does not pay for them.
Ratios are the median over rounds of the ratio within a round.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import trackkit

_WORK = torch.randn(96, 96)


def training_step(seconds: float) -> None:
    """Keep the CPU busy in torch kernels, which release the GIL, for about ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        _WORK @ _WORK


TRACKED = {
    "none": ["none"],
    "console": ["console"],
    "jsonl": ["jsonl"],
    "console+jsonl": ["console", "jsonl"],
    "tensorboard": ["tensorboard"],
    "wandb": ["wandb"],
    "all": ["console", "jsonl", "tensorboard", "wandb"],
}
DIRECT = ("direct-tensorboard", "direct-wandb")
CONFIGS = ("no-run", *TRACKED, *DIRECT)


def metrics(step: int) -> dict[str, float]:
    return {
        "loss": 2.0 + 1.0 / step, "perplexity": 7.4, "learning_rate": 3e-4,
        "elapsed_time": 0.012, "tokens_per_second": 51234.0,
    }


class Contestant:
    """A configuration's ``log(metrics, step)``, what settles its backlog, and its clean-up."""

    def __init__(self, config: str, workdir: Path, stack: contextlib.ExitStack):
        self.settle: Callable[[], None] = lambda: None
        if config == "no-run":
            self.log = lambda m, step: None
        elif config in TRACKED:
            devnull = stack.enter_context(open(os.devnull, "w"))
            with contextlib.redirect_stdout(devnull):
                run = trackkit.start(TRACKED[config], output_dir=workdir / config, config={"lr": 3e-4},
                                     options={"offline": True}, handle_signals=False)
            stack.callback(run.finish)
            self.log, self.settle = run.log_train, run.flush
        elif config == "direct-tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(workdir / config))
            stack.callback(writer.close)

            def log(m: dict, step: int) -> None:
                for key, value in m.items():
                    writer.add_scalar(f"train/{key}", value, step)

            self.log, self.settle = log, writer.flush
        elif config == "direct-wandb":
            import wandb

            run = wandb.init(mode="offline", dir=str(workdir), project="overhead", config={"lr": 3e-4},
                             reinit="create_new")
            stack.callback(run.finish)
            self.log = lambda m, step: run.log({f"train/{k}": v for k, v in m.items()}, step=step)
        else:
            raise ValueError(config)
        self.step = 0
        self.durations: list[list[int]] = []  # ns per call, one list per round

    def chunk(self, calls: int, step_s: float, timed: bool = True) -> None:
        durations = []
        for _ in range(calls):
            self.step += 1
            m = metrics(self.step)
            t0 = time.perf_counter_ns()
            self.log(m, self.step)
            durations.append(time.perf_counter_ns() - t0)
            training_step(step_s)
        self.settle()
        if timed:
            self.durations.append(durations)


def measure(configs: list[str], calls: int, rounds: int, step_s: float, workdir: Path) -> dict[str, dict]:
    per_round = max(1, calls // rounds)
    with contextlib.ExitStack() as stack:
        contestants = {config: Contestant(config, workdir, stack) for config in configs}
        for contestant in contestants.values():  # warms caches and starts threads
            contestant.chunk(max(10, per_round // 5), step_s, timed=False)
        for round_ in range(rounds):
            shift = round_ % len(configs)
            for config in configs[shift:] + configs[:shift]:
                contestants[config].chunk(per_round, step_s)
    results = {}
    for config, contestant in contestants.items():
        every = [d for chunk in contestant.durations for d in chunk]
        results[config] = {
            "p50_us": statistics.median(every) / 1000,
            "p99_us": statistics.quantiles(every, n=100)[98] / 1000,
            "round_p50s_us": [statistics.median(chunk) / 1000 for chunk in contestant.durations],
        }
    return results


def ratio(results: dict[str, dict], slow: str, fast: str) -> float:
    """Median over rounds of ``slow``'s p50 over ``fast``'s p50 in the same round."""
    pairs = zip(results[slow]["round_p50s_us"], results[fast]["round_p50s_us"])
    return statistics.median(a / b for a, b in pairs)


def available(config: str) -> bool:
    needs = {"tensorboard": "tensorboard", "direct-tensorboard": "tensorboard", "wandb": "wandb",
             "direct-wandb": "wandb", "all": "wandb"}
    module = needs.get(config)
    if module is None:
        return True
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return False
    if config in TRACKED:  # the tracker itself may not exist yet
        from trackkit.plugins import discovered

        return all(name in discovered() and discovered()[name].backend_available() for name in TRACKED[config])
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=2000, help="timed log calls per configuration")
    parser.add_argument("--rounds", type=int, default=10, help="turns each configuration takes")
    parser.add_argument("--step-ms", type=float, default=1.0, help="simulated training step between calls")
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configurations")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    configs = []
    for config in args.only.split(","):
        if config not in CONFIGS:
            parser.error(f"unknown configuration {config!r}; choose from {', '.join(CONFIGS)}")
        if available(config):
            configs.append(config)
        else:
            print(f"skipped {config}: its backend or tracker is not installed", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            os.environ[var] = tmp  # nothing of wandb's lands in the home folder
        results = measure(configs, args.calls, args.rounds, args.step_ms / 1000, Path(tmp))
    pairs = [(d, t) for t, d in (("tensorboard", "direct-tensorboard"), ("wandb", "direct-wandb"))
             if t in results and d in results]
    if args.json:
        out = {config: {k: round(v, 2) for k, v in r.items() if k != "round_p50s_us"} for config, r in results.items()}
        out.update({f"{d}/{t}": round(ratio(results, d, t), 1) for d, t in pairs})
        print(json.dumps(out))
        return
    print(f"{'configuration':<20}{'p50 us':>10}{'p99 us':>10}")
    for config, r in results.items():
        print(f"{config:<20}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}")
    for direct, tracked in pairs:
        print(f"{direct} / {tracked} (p50, median over rounds): {ratio(results, direct, tracked):.0f}x")


if __name__ == "__main__":
    main()
