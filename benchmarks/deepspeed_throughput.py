"""Training throughput of the DeepSpeed engine (ZeRO stage 0) against the plain engine, one process.

    python benchmarks/deepspeed_throughput.py          # a table
    python benchmarks/deepspeed_throughput.py --json   # {"plain_tokens_per_s": .., "deepspeed_tokens_per_s": .., ...}

Both run ``Trainer.loop`` at the reference CPU configuration of throughput.py (--tracker none,
logging every step) in this process, DeepSpeed in a world of one on the gloo backend. As in
throughput.py, start-up is excluded, the two take turns running chunks of ``--steps`` steps with
the order alternating every round, rounds that reach an epoch's end left out, and the result is
the median of the per-round ratios.
Target: deepspeed/plain >= 0.9 on the CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from throughput import TrainerLoop, side_by_side


def measure(steps: int, repeats: int, warmup: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        contestants = {
            "plain": TrainerLoop(seed, [], Path(tmp, "plain")),
            "deepspeed": TrainerLoop(seed, [], Path(tmp, "deepspeed"), deepspeed=True, zero_stage=0),
        }
        speeds = side_by_side(contestants, steps, repeats, warmup)
        for contestant in contestants.values():
            contestant.close()
    ratios = [d / p for d, p in zip(speeds["deepspeed"], speeds["plain"])]
    return {
        "plain_tokens_per_s": round(statistics.median(speeds["plain"]), 1),
        "deepspeed_tokens_per_s": round(statistics.median(speeds["deepspeed"]), 1),
        "deepspeed_over_plain": round(statistics.median(ratios), 4),
        "steps_per_round": steps,
        "rounds": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per chunk (default 20)")
    parser.add_argument("--repeats", type=int, default=9, help="rounds of plain/deepspeed chunks (default 9)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = measure(args.steps, args.repeats, args.warmup, args.seed)
    if args.json:
        print(json.dumps(result))
        return
    for name in ("plain", "deepspeed"):
        print(f"{name:>9}: {result[f'{name}_tokens_per_s']:>10,.0f} tokens/s")
    print(f"deepspeed/plain: {result['deepspeed_over_plain']:.3f} (target >= 0.9), ZeRO stage 0, one process")


if __name__ == "__main__":
    main()
