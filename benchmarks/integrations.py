"""Each framework's own wandb + TensorBoard reporting against trackkit's integration with the same two backends.

    python benchmarks/integrations.py            # a table
    python benchmarks/integrations.py --json     # one JSON object: per framework, both contestants' figures

For the Hugging Face Trainer (a tiny GPT-2), Lightning and Accelerate (a small MLP over 8-byte
contexts of the built-in corpus), in one process, logging every step:

- own: the framework's wandb (offline) and TensorBoard reporting (``report_to=["wandb", "tensorboard"]``;
  ``WandbLogger`` and ``TensorBoardLogger``; ``Accelerator(log_with=["wandb", "tensorboard"])``);
- trackkit: ``TrackkitCallback``, ``TrackkitLogger``, ``TrackkitTracker`` with ``trackers=["wandb", "tensorboard"]``.

Each contestant trains ``--steps`` steps per round, the order alternating every round, each in a
fresh folder; start-up (imports, wandb's service) is outside the measurement and the first
``--warmup`` steps of a round are left out. Reported: the median step time of each (ms; a step
includes its logging), their ratio own/trackkit (targets: >= 1.0, trackkit never slower), and the
caller's cost of one log call (p50, us): HF's ``Trainer.log`` (its callbacks' ``on_log``),
Lightning's dispatch to its loggers, ``accelerator.log``; for Accelerate the target is
trackkit <= 1/50 of Accelerate's own. For Accelerate a third contestant, ``dispatch``, logs with
no tracker at all: what ``accelerator.log`` costs before it reaches any tracker.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import pydoc_data.topics
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

BACKENDS = ["wandb", "tensorboard"]
CONTEXT = 8
IDS = torch.tensor(list("\n\n".join(pydoc_data.topics.topics.values()).encode()[:200_000]))


class Timings:
    """Step starts and log-call durations of one contestant, over every round."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.calls = warmup, [], []
        self._starts: list[int] = []

    def step_started(self) -> None:
        self._starts.append(time.perf_counter_ns())

    def round_done(self) -> None:
        starts = self._starts[self.warmup:]
        self.steps += [b - a for a, b in zip(starts, starts[1:])]
        self._starts = []

    def timed(self, call: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter_ns()
            out = call(*args, **kwargs)
            self.calls.append(time.perf_counter_ns() - t0)
            return out
        return wrapper

    def figures(self) -> dict[str, float]:
        return {"step_ms": statistics.median(self.steps) / 1e6, "log_call_us_p50": statistics.median(self.calls) / 1e3,
                "steps_timed": len(self.steps)}


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(256, 32), torch.nn.Flatten(), torch.nn.Linear(CONTEXT * 32, 256),
                               torch.nn.GELU(), torch.nn.Linear(256, 256))


def batches(steps: int, size: int = 64):
    """(contexts, next bytes) of random windows of the corpus."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        at = torch.randint(len(IDS) - CONTEXT - 1, (size,), generator=generator)
        windows = IDS[at[:, None] + torch.arange(CONTEXT + 1)]
        yield windows[:, :CONTEXT], windows[:, CONTEXT]


def finish_wandb() -> None:
    """The frameworks' own wandb integrations leave their run open: close it before the next contestant."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


# -- Hugging Face Trainer ------------------------------------------------------------------------------
def hf_round(kind: str, folder: Path, steps: int, timings: Timings) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from trackkit.integrations.hf import TrackkitCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if tracking is not None:
                tracking.run.flush()  # its trackers have started (own reporting starts before training too)

        def on_step_begin(self, args, state, control, **kwargs):
            timings.step_started()

    class TimedTrainer(Trainer):
        log = timings.timed(Trainer.log)

    windows = [{"input_ids": w, "labels": w} for w in IDS[: 64 * 512].split(64)]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=2))
    args = TrainingArguments(output_dir=str(folder), report_to=BACKENDS if kind == "own" else "none", max_steps=steps,
                             per_device_train_batch_size=8, logging_steps=1, save_strategy="no", use_cpu=True,
                             disable_tqdm=True)
    tracking = TrackkitCallback(trackers=BACKENDS, options={"offline": True}) if kind == "trackkit" else None
    trainer = TimedTrainer(model=model, args=args, train_dataset=windows, callbacks=[tracking, Clock()][kind == "own":])
    trainer.remove_callback(PrinterCallback)  # the same for both; printing every log would dominate
    os.environ["WANDB_DIR"] = str(folder)
    trainer.train()
    finish_wandb()


# -- Lightning -----------------------------------------------------------------------------------------
def lightning_round(kind: str, folder: Path, steps: int, timings: Timings) -> None:
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    from trackkit.integrations.lightning import TrackkitLogger

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    class Clock(L.Callback):
        def on_train_start(self, trainer, pl_module):
            if kind == "trackkit":
                trainer.logger.experiment.flush()  # its trackers have started, as the own loggers have by now

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            timings.step_started()

    loggers = ([WandbLogger(save_dir=str(folder), offline=True, project="bench"), TensorBoardLogger(str(folder))]
               if kind == "own" else [TrackkitLogger(trackers=BACKENDS, output_dir=folder, options={"offline": True},
                                                     log_checkpoints=False)])
    trainer = L.Trainer(logger=loggers, max_steps=steps, log_every_n_steps=1, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[Clock()])
    connector = trainer._logger_connector
    connector.log_metrics = timings.timed(connector.log_metrics)  # Lightning's call into every logger
    xs, ys = zip(*batches(steps))
    trainer.fit(Model(), DataLoader(TensorDataset(torch.cat(xs), torch.cat(ys)), batch_size=len(ys[0])))
    finish_wandb()


# -- Accelerate ----------------------------------------------------------------------------------------
def accelerate_round(kind: str, folder: Path, steps: int, timings: Timings) -> None:
    from accelerate import Accelerator

    from trackkit.integrations.accelerate import TrackkitTracker

    if kind == "own":
        accelerator = Accelerator(cpu=True, log_with=BACKENDS, project_dir=str(folder))
        accelerator.init_trackers("bench", config={"lr": 1e-3},
                                  init_kwargs={"wandb": {"mode": "offline", "dir": str(folder)}})
    elif kind == "dispatch":  # no tracker at all: what accelerator.log costs before any tracker's log
        accelerator = Accelerator(cpu=True)
        accelerator.init_trackers("bench")
    else:
        tracker = TrackkitTracker("bench", trackers=BACKENDS, output_dir=folder, options={"offline": True})
        accelerator = Accelerator(cpu=True, log_with=[tracker])
        accelerator.init_trackers("bench", config={"lr": 1e-3})
        tracker.tracker.flush()  # its trackers have started, as Accelerate's own have after init_trackers
    model = mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    log = timings.timed(accelerator.log)
    for step, (x, y) in enumerate(batches(steps), 1):
        timings.step_started()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        log({"train/loss": loss.item(), "learning_rate": 1e-3}, step=step)  # .item(): Accelerate's own need numbers
    timings.step_started()
    accelerator.end_training()


ROUNDS = {"hf": hf_round, "lightning": lightning_round, "accelerate": accelerate_round}
KINDS = {"hf": ("own", "trackkit"), "lightning": ("own", "trackkit"), "accelerate": ("own", "trackkit", "dispatch")}


def measure(frameworks: list[str], steps: int, repeats: int, warmup: int, workdir: Path) -> dict[str, dict]:
    results = {}
    for framework in frameworks:
        kinds = KINDS[framework]
        timings = {kind: Timings(warmup) for kind in kinds}
        for round_ in range(repeats):
            shift = round_ % len(kinds)  # the order rotates, so that load from elsewhere hits each alike
            for kind in kinds[shift:] + kinds[:shift]:
                with quiet():
                    ROUNDS[framework](kind, workdir / f"{framework}-{kind}-{round_}", steps, timings[kind])
                timings[kind].round_done()
        figures = {kind: timings[kind].figures() for kind in kinds}
        own, ours = figures["own"], figures["trackkit"]
        results[framework] = {**figures, "step_ratio_own_over_trackkit": own["step_ms"] / ours["step_ms"],
                              "log_call_ratio_own_over_trackkit": own["log_call_us_p50"] / ours["log_call_us_p50"]}
    return results


@contextlib.contextmanager
def quiet():
    """The frameworks' and backends' chatter goes nowhere; the figures go to stdout after."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="steps per contestant and round (default 60)")
    parser.add_argument("--repeats", type=int, default=4, help="rounds, each contestant once per round (default 4)")
    parser.add_argument("--warmup", type=int, default=5, help="steps of each round left out (default 5)")
    parser.add_argument("--frameworks", default=",".join(ROUNDS), help="comma-separated: hf, lightning, accelerate")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    options = parser.parse_args()
    frameworks = [f for f in options.frameworks.split(",") if f]
    unknown = [f for f in frameworks if f not in ROUNDS]
    if unknown or options.steps <= options.warmup + 1:
        sys.exit(f"error: unknown framework {unknown[0]!r}" if unknown else "error: --steps must exceed --warmup + 1")
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory(prefix="trackkit-integrations-") as workdir:
        os.environ.setdefault("WANDB_CONFIG_DIR", workdir)
        results = measure(frameworks, options.steps, options.repeats, options.warmup, Path(workdir))
    if options.json:
        print(json.dumps(results))
        return
    print(f"{'framework':<11} {'own step ms':>11} {'trackkit step ms':>16} {'own/trackkit':>12} "
          f"{'own log us':>10} {'trackkit log us':>15} {'own/trackkit':>12}")
    for framework, r in results.items():
        print(f"{framework:<11} {r['own']['step_ms']:>11.2f} {r['trackkit']['step_ms']:>16.2f} "
              f"{r['step_ratio_own_over_trackkit']:>12.2f} {r['own']['log_call_us_p50']:>10.1f} "
              f"{r['trackkit']['log_call_us_p50']:>15.1f} {r['log_call_ratio_own_over_trackkit']:>12.1f}")
    if "accelerate" in results:
        print(f"accelerator.log with no tracker at all (Accelerate's own dispatch): "
              f"{results['accelerate']['dispatch']['log_call_us_p50']:.1f} us")


if __name__ == "__main__":
    main()
