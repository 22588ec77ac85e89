"""Training throughput: a bare loop vs. the trainer untracked vs. the trainer with every tracker.

    python benchmarks/throughput.py            # a table
    python benchmarks/throughput.py --json     # {"bare_tokens_per_s": .., "none_tokens_per_s": .., ...}
    python benchmarks/throughput.py --each console,jsonl,tensorboard,wandb,csv,mlflow,mlflow-http
                                               # each tracker alone against none, side by side

``--trackers`` and ``--each`` take any installed tracker, plugins included; ``mlflow-http`` is the
MLflow tracker against a ``mlflow server`` this script starts on 127.0.0.1 (SQLite behind it).

All three train the reference CPU configuration (n_layer 4, n_head 4, n_embd 128, block 64,
batch 12, char tokenizer, dropout 0) on the built-in corpus, in one process:

- bare: the same model, batch, AdamW and gradient clipping in a dozen lines; no trainer, no tracking;
- none: ``Trainer.loop`` with ``--tracker none``, logging every step;
- all: ``Trainer.loop`` with console, jsonl, tensorboard and wandb (offline), logging every step.

Start-up (data, model, backends) is excluded: each contestant is built once and warmed up, then
they take turns running chunks of ``--steps`` steps, the order rotating every round, so that
load from other processes hits all three alike. The trainer's chunks end with ``run.flush()``:
whatever the trackers still had queued is paid for inside the measurement. A round in which the
trainers reached the end of an epoch (they evaluate and save the best checkpoint there; the
bare loop does neither) is left out and run again. Reported: the median tokens/s of each, and
the median over rounds of the ratios within a round, with their quartiles (the machine's noise).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from reference_trainer.config import TrainConfig
from reference_trainer.data import build_tokenizer, encode_corpus, read_corpus, split
from reference_trainer.model import GPT, preset
from reference_trainer.optim import build_optimizer
from reference_trainer.train import Trainer
from trackkit.options import Tracking
from trackkit.plugins import source_for

REFERENCE = dict(model="tiny", n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, tokenizer="char",
                 dropout=0.0, learning_rate=1e-3)
ALL_TRACKERS = ("console", "jsonl", "tensorboard", "wandb")


class Bare:
    """A minimal training loop of the same model and batch: random windows, forward, backward, step."""

    steps_per_epoch = math.inf  # no epochs, no evaluation

    def __init__(self, seed: int):
        documents = read_corpus(None)
        tokens = encode_corpus(build_tokenizer("char", documents, 0), documents)
        self.tokens, _ = split(tokens, 0.1, REFERENCE["block_size"])
        vocab = int(tokens.max()) + 1
        torch.manual_seed(seed)
        self.model = GPT(preset("tiny", n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, vocab_size=vocab))
        self.optimizer = build_optimizer(self.model, 1e-3, 0.1, torch.device("cpu"))
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(REFERENCE["block_size"] + 1)

    def run(self, steps: int) -> bool:
        for _ in range(steps):
            high = len(self.tokens) - len(self.offsets)
            starts = torch.randint(high, (REFERENCE["batch_size"],), generator=self.generator)
            rows = self.tokens[starts[:, None] + self.offsets].long()
            _, loss = self.model(rows[:, :-1], rows[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        loss.item()
        return False  # no epochs here


class TrainerLoop:
    """The trainer's own loop, driven chunk by chunk; its run stays open between chunks."""

    def __init__(self, seed: int, trackers: list[str], folder: Path, options: dict | None = None, **overrides):
        cfg = TrainConfig(**REFERENCE, seed=seed, device="cpu", output_dir=str(folder), max_steps=1_000_000,
                          log_interval=1, eval_interval=0, checkpoint_interval=0, **overrides)
        # The console tracker keeps the stream it finds at start: its lines go to /dev/null.
        self.devnull = open(os.devnull, "w")
        offline = {"offline": True} if not options else {}  # a server of ours on 127.0.0.1 is no network
        with contextlib.redirect_stdout(self.devnull):
            self.trainer = Trainer.create(cfg, Tracking(trackers, {**offline, **(options or {})}))

    def run(self, steps: int) -> bool:
        """Train ``steps`` steps; True if an epoch ended among them."""
        epoch = self.trainer.progress.epoch
        self.trainer.loop(until=self.trainer.progress.step + steps)
        # The flush wakes every tracker thread at once: the chunk pays for what they still had
        # queued, not for a polling interval.
        self.trainer.run.flush(timeout=600)
        return self.trainer.progress.epoch != epoch

    def close(self) -> None:
        self.trainer.run.finish()
        self.devnull.close()

    @property
    def steps_per_epoch(self) -> int:
        return self.trainer.batches.steps_per_epoch


def available(names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    found, missing = [], []
    for name in names:
        try:
            ok = source_for(name).backend_available()
        except Exception:
            ok = False
        (found if ok else missing).append(name)
    return found, missing


def side_by_side(contestants: dict, steps: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Tokens/s of each contestant over ``repeats`` rounds of ``steps`` steps, taking turns.

    The order rotates every round, so that load from other processes hits every contestant alike.
    """
    if steps >= min(contestant.steps_per_epoch for contestant in contestants.values()):
        raise SystemExit("--steps must be fewer than an epoch's: every round would reach an epoch's end")
    tokens_per_step = REFERENCE["batch_size"] * REFERENCE["block_size"]
    for contestant in contestants.values():
        contestant.run(warmup)
    speeds: dict[str, list[float]] = {name: [] for name in contestants}
    names = list(contestants)
    rounds = 0
    while len(speeds[names[0]]) < repeats:
        shift = rounds % len(names)
        rounds += 1
        this_round, epoch_ended = {}, False
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            epoch_ended |= contestants[name].run(steps)
            this_round[name] = steps * tokens_per_step / (time.perf_counter() - began)
        if not epoch_ended:
            for name, speed in this_round.items():
                speeds[name].append(speed)
    return speeds


def measure_each(steps: int, repeats: int, warmup: int, seed: int, wanted: tuple[str, ...]) -> dict:
    """Each tracker alone against ``--tracker none``, all taking turns in the same rounds."""
    backends = {n: "mlflow" if n == "mlflow-http" else n for n in wanted}  # contestant -> tracker
    found, missing = available(tuple(dict.fromkeys(backends.values())))
    if missing:
        print(f"note: not importable, left out: {', '.join(missing)}", file=sys.stderr)
    names = [n for n in wanted if backends[n] in found]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        contestants = {"none": TrainerLoop(seed, [], Path(tmp, "none"))}
        for name in names:
            options = {}
            if name == "mlflow-http":
                from trackkit_mlflow.local_server import LocalServer

                options["mlflow_tracking_uri"] = stack.enter_context(LocalServer(Path(tmp, "server"))).url
            contestants[name] = TrainerLoop(seed, [backends[name]], Path(tmp, name), options=options)
        speeds = side_by_side(contestants, steps, repeats, warmup)
        for contestant in contestants.values():
            contestant.close()
    result: dict = {"none_tokens_per_s": round(statistics.median(speeds["none"]), 1), "trackers": names,
                    "steps_per_round": steps, "rounds": repeats, "torch_threads": torch.get_num_threads()}
    for name in names:
        ratios = [x / y for x, y in zip(speeds[name], speeds["none"])]
        result[f"{name}_over_none"] = round(statistics.median(ratios), 4)
        result[f"{name}_over_none_quartiles"] = [round(q, 4) for q in statistics.quantiles(ratios)[::2]]
    return result


def measure(steps: int, repeats: int, warmup: int, seed: int, wanted: tuple[str, ...] = ALL_TRACKERS) -> dict:
    trackers, missing = available(wanted)
    if missing:
        print(f"note: not importable, measured without them: {', '.join(missing)}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        contestants = {
            "bare": Bare(seed),
            "none": TrainerLoop(seed, [], Path(tmp, "none")),
            "all": TrainerLoop(seed, trackers, Path(tmp, "all")),
        }
        speeds = side_by_side(contestants, steps, repeats, warmup)
        for name in ("none", "all"):
            contestants[name].close()
    ratios = lambda a, b: [x / y for x, y in zip(speeds[a], speeds[b])]  # noqa: E731
    ratio = lambda a, b: statistics.median(ratios(a, b))  # noqa: E731
    quartiles = lambda a, b: [round(q, 4) for q in statistics.quantiles(ratios(a, b))[::2]]  # noqa: E731
    return {
        "bare_tokens_per_s": round(statistics.median(speeds["bare"]), 1),
        "none_tokens_per_s": round(statistics.median(speeds["none"]), 1),
        "all_tokens_per_s": round(statistics.median(speeds["all"]), 1),
        "none_over_bare": round(ratio("none", "bare"), 4),
        "all_over_none": round(ratio("all", "none"), 4),
        "none_over_bare_quartiles": quartiles("none", "bare"),
        "all_over_none_quartiles": quartiles("all", "none"),
        "trackers": trackers,
        "steps_per_round": steps,
        "rounds": repeats,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per chunk (default 30)")
    parser.add_argument("--repeats", type=int, default=32, help="rounds of bare/none/all chunks (default 32)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--trackers", default=",".join(ALL_TRACKERS),
                        help=f"the trackers of 'all' (default {','.join(ALL_TRACKERS)})")
    parser.add_argument("--each", metavar="A,B,...",
                        help="instead: each of these trackers alone against none (mlflow-http: MLflow over HTTP)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.each:
        result = measure_each(args.steps, args.repeats, args.warmup, args.seed, tuple(args.each.split(",")))
        if args.json:
            print(json.dumps(result))
            return
        print(f" none: {result['none_tokens_per_s']:>10,.0f} tokens/s")
        for name in result["trackers"]:
            low, high = result[f"{name}_over_none_quartiles"]
            print(f"{name + '/none:':<18} {result[f'{name}_over_none']:.3f} (target >= 0.97; half the rounds "
                  f"{low:.3f}-{high:.3f})")
        return
    result = measure(args.steps, args.repeats, args.warmup, args.seed, tuple(args.trackers.split(",")))
    if args.json:
        print(json.dumps(result))
        return
    for name in ("bare", "none", "all"):
        print(f"{name:>5}: {result[f'{name}_tokens_per_s']:>10,.0f} tokens/s")
    for a, b in (("none", "bare"), ("all", "none")):
        low, high = result[f"{a}_over_{b}_quartiles"]
        print(f"{a + '/' + b + ':':<10} {result[f'{a}_over_{b}']:.3f} (target >= 0.97; half the rounds "
              f"{low:.3f}-{high:.3f})")
    print(f"trackers of all: {', '.join(result['trackers'])}; {result['rounds']} rounds of "
          f"{result['steps_per_round']} steps")


if __name__ == "__main__":
    main()
