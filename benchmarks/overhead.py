"""What one log call with five metrics costs the training loop, per tracker configuration.

    python benchmarks/overhead.py                 # a table
    python benchmarks/overhead.py --json          # {"<config>": {"p50_us": .., "p99_us": ..}, ...}
    python benchmarks/overhead.py --only none,console+jsonl --calls 2000

Between two log calls the loop sleeps ``--step-ms`` (a stand-in for a training step, which runs
in torch kernels with the GIL released), so the trackers' threads get to work as they would in
training. Only the log call itself is timed. ``direct-*`` call the backend in the loop, the way
trackkit replaces: five ``SummaryWriter.add_scalar`` calls, or one wandb ``run.log``.
All configurations run in one process, one after another, so their ratios are comparable.
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
from pathlib import Path
from typing import Callable, Iterator

import trackkit

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


@contextlib.contextmanager
def log_function(config: str, workdir: Path) -> Iterator[Callable[[dict, int], None]]:
    """A function ``log(metrics, step)`` for the configuration, and its clean-up."""
    if config == "no-run":
        yield lambda m, step: None
    elif config in TRACKED:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            run = trackkit.start(TRACKED[config], output_dir=workdir / config, config={"lr": 3e-4},
                                 options={"offline": True}, handle_signals=False)
            yield run.log_train
            run.finish()
    elif config == "direct-tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(workdir / config))

        def log(m: dict, step: int) -> None:
            for key, value in m.items():
                writer.add_scalar(f"train/{key}", value, step)

        yield log
        writer.close()
    elif config == "direct-wandb":
        import wandb

        run = wandb.init(mode="offline", dir=str(workdir), project="overhead", config={"lr": 3e-4})
        yield lambda m, step: run.log({f"train/{k}": v for k, v in m.items()}, step=step)
        run.finish()
    else:
        raise ValueError(config)


def measure(config: str, calls: int, step_s: float, workdir: Path) -> dict[str, float]:
    durations = []
    with log_function(config, workdir) as log:
        for step in range(1, calls + 1):
            m = metrics(step)
            t0 = time.perf_counter_ns()
            log(m, step)
            durations.append(time.perf_counter_ns() - t0)
            time.sleep(step_s)
    durations = durations[calls // 10:]  # the first calls warm caches and start threads
    q = statistics.quantiles(durations, n=100)
    return {"p50_us": statistics.median(durations) / 1000, "p99_us": q[98] / 1000}


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
    parser.add_argument("--calls", type=int, default=1000, help="log calls per configuration")
    parser.add_argument("--step-ms", type=float, default=1.0, help="simulated training step between calls")
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configurations")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            os.environ[var] = tmp  # nothing of wandb's lands in the home folder
        for config in args.only.split(","):
            if config not in CONFIGS:
                parser.error(f"unknown configuration {config!r}; choose from {', '.join(CONFIGS)}")
            if not available(config):
                print(f"skipped {config}: its backend or tracker is not installed", file=sys.stderr)
                continue
            results[config] = measure(config, args.calls, args.step_ms / 1000, Path(tmp))
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'configuration':<20}{'p50 us':>10}{'p99 us':>10}")
    for config, r in results.items():
        print(f"{config:<20}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}")
    for tracked, direct in (("tensorboard", "direct-tensorboard"), ("wandb", "direct-wandb")):
        if tracked in results and direct in results:
            ratio = results[direct]["p50_us"] / results[tracked]["p50_us"]
            print(f"{direct} / {tracked} (p50): {ratio:.0f}x")


if __name__ == "__main__":
    main()
