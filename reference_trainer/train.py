"""The training loop. Start reading at ``Trainer.loop``.

    final = train(TrainConfig(max_steps=200), Tracking(["console", "jsonl"]))

``train`` = ``Trainer.create`` (check every input, load data and any checkpoint, start the
trackkit run) + ``Trainer.loop`` (the optimizer steps) + ``Trainer.wrap_up`` (last evaluation,
last checkpoint, final/ metrics). Everything the run reports goes through trackkit, in the
namespaces the guide lists: train/ every --log-interval steps, eval/ every --eval-interval steps and
at each epoch's end, epoch/ at each epoch's end, final/ once.

Several processes (torchrun, DeepSpeed's launcher) run the same loop, each on its share of every
step's batch; losses are averaged across them before they are logged, and rank 0 alone talks to
the trackers (the other ranks' ``run`` does nothing) and writes the run's files.
"""
from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

import trackkit
from trackkit.options import Tracking
from trackkit.record import read_run_json, run_json_path

from . import checkpoint as ckpt
from . import deepspeed_config, distributed
from .config import TrainConfig
from .data import (
    BUILTIN_NAME,
    EpochBatches,
    Tokenizer,
    Windows,
    build_tokenizer,
    encode_corpus,
    read_corpus,
    split,
    tokenizer_from_json,
    unigram_entropy,
)
from .deepspeed_engine import DeepSpeedEngine
from .deepspeed_engine import init_distributed as init_deepspeed
from .engine import Engine, TorchEngine, pick_device
from .errors import InputError
from .faults import Diverged, Interrupted, StopSignals, say
from .model import GPT, GPTConfig
from .optim import Optimization
from .outputs import check_writable, clear, holds_run
from .tracking import TrackingChoices, on_resume, project_of, run_name

SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")  # what a checkpoint fixes


def train(cfg: TrainConfig, tracking: Tracking, *, given: Collection[str] | None = None) -> dict[str, Any]:
    """Train as ``trackkit-train`` does; returns the final/ metrics.

    ``given`` names the tracking choices the user made (tracking.py's ``on_resume``): on
    --resume the others come from the checkpoint. None: all of ``tracking`` was chosen.

    After SIGTERM or SIGINT it saves a checkpoint and raises Interrupted (exit 143 or 130); with
    --nan-policy stop a non-finite loss raises Diverged (exit 3). Either way the trackers are
    finished first, with status "interrupted" or "failed" (faults.py).
    """
    try:
        with StopSignals() as signals:  # from the start: a signal during the setup is honoured too
            trainer = Trainer.create(cfg, tracking, signals=signals, given=given)
            status = "failed"  # unless the run reaches one of the ends below
            try:
                trainer.loop()
                if trainer.stopped:
                    status = "interrupted"
                    trainer.save_for_resume(signals.name)
                    raise Interrupted(signals.exit_code)
                final = trainer.wrap_up()
                status = "success"
                return final
            except KeyboardInterrupt:  # no handlers outside the main thread: Python's own Ctrl-C
                status = "interrupted"
                raise
            finally:
                trainer.run.finish(status, timeout=cfg.tracker_timeout)
    finally:
        distributed.shutdown()


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress, from 0
    position: int = 0  # optimizer steps done within that epoch
    best_val_loss: float = math.inf
    skipped_steps: int = 0  # steps whose update --nan-policy skip-step left out

    @classmethod
    def of(cls, resume: ckpt.Checkpoint | None) -> Progress:
        if resume is None:
            return cls()
        meta = resume.meta
        return cls(meta["step"], meta["epoch"], meta["position"], _loss_from_json(meta.get("best_val_loss")),
                   meta.get("skipped_steps", 0))


@dataclass
class Data:
    """The corpus as the run sees it: tokenizer, model shape, training batches and validation windows."""

    tokenizer: Tokenizer
    model_cfg: GPTConfig
    batches: EpochBatches
    val: Windows
    train_tokens: int
    val_tokens: int
    unigram_entropy: float  # nats: the loss of a model that ignores context


class Trainer:
    def __init__(
        self, cfg: TrainConfig, engine: Engine, data: Data, run: trackkit.Run, progress: Progress,
        state: dict | None = None, *, signals: StopSignals | None = None, choices: TrackingChoices | None = None,
    ):
        self.cfg = cfg
        self.choices = choices  # the tracking choices, saved with every checkpoint for --resume
        self.engine = engine
        self.data = data
        self.batches = data.batches
        self.run = run
        self.progress = progress
        self.first_step = progress.step  # where this process started: 0, or the checkpoint's step
        self.signals = signals
        self.stopped = False  # whether the loop ended early for a stop signal
        self.writer = ckpt.Writer(cfg.output_dir)
        self.total_steps = total_steps(cfg, data.batches)
        self.tokens_per_step = tokens_per_step(cfg, data.model_cfg)
        device = engine.device
        # Training losses are summed on the device and read once per log interval (and once per
        # epoch): a .item() on every step would make the CPU wait for the GPU every step.
        self.loss_sum = torch.zeros((), device=device)
        self.loss_count = 0  # micro-batches in loss_sum
        self.epoch_loss_sum = torch.zeros((), device=device)
        self.epoch_loss_count = 0
        if state is not None:  # resuming mid-interval: the losses already summed are part of it
            self.loss_sum += state["loss_sum"].to(device)
            self.loss_count = state["loss_count"]
            self.epoch_loss_sum += state["epoch_loss_sum"].to(device)
            self.epoch_loss_count = state["epoch_loss_count"]
        self.last_eval: tuple[int, float] = (-1, math.nan)  # (step, validation loss) of the latest evaluation
        self.last_train_loss: float | None = None
        self.train_seconds = 0.0

    # -- setting up ------------------------------------------------------------------------
    @classmethod
    def create(
        cls, cfg: TrainConfig, tracking: Tracking, *, signals: StopSignals | None = None,
        given: Collection[str] | None = None,
    ) -> Trainer:
        """Check every input before anything is written, then start the trackkit run.

        What every process checks alike is checked before the processes first talk to each
        other; the trackkit run starts after that, so that it knows the world size.
        """
        cfg.validate()
        check_writable(cfg.output_dir)
        resume = _checked_resume(cfg)
        tracking, choices, change = on_resume(tracking, given, TrackingChoices.saved(resume.meta) if resume else None)
        device = distributed.local_device(pick_device(cfg.device))
        cfg, ds_config = _engine_config(cfg, device, resume)
        documents = read_corpus(cfg.data)
        if cfg.deepspeed:
            init_deepspeed(device.type)
        else:
            distributed.init(device)
        data = load_data(cfg, documents, resume)
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # the model's initial weights, then dropout
        engine = build_engine(cfg, data, device, ds_config)
        state = _restore(resume, engine) if resume is not None else None
        if change:
            say("tracking_changed", change=change)
        _overwrite(cfg)
        run = _start_run(cfg, tracking, choices, data, engine, resume, ds_config)
        _save_tokenizer(cfg, data.tokenizer, run)
        return cls(cfg, engine, data, run, Progress.of(resume), state, signals=signals, choices=choices)

    # -- the loop ----------------------------------------------------------------------------
    def loop(self, until: int | None = None) -> None:
        """Take optimizer steps until step ``until`` (default: the run's last step), or a stop signal."""
        cfg, engine, p = self.cfg, self.engine, self.progress
        until = self.total_steps if until is None else min(until, self.total_steps)
        engine.model.train()
        self._interval_start, self._interval_first_step, self._paused = time.perf_counter(), p.step, 0.0
        started = time.perf_counter()
        while p.step < until:
            if self._stop_requested():
                self.stopped = True
                break
            step_loss = torch.zeros((), device=engine.device)
            for x, y in self.batches.micro_batches(p.epoch, p.position):
                loss = engine.forward(x, y)
                engine.backward(loss)
                step_loss += loss.detach()  # on the device: no sync
            lr = engine.learning_rate  # the rate this step uses
            if cfg.nan_policy == "skip-step" and self._skip(step_loss):
                engine.skip_step()
                grad_norm = None
            else:
                self.loss_sum += step_loss
                self.epoch_loss_sum += step_loss
                self.loss_count += cfg.grad_accum
                self.epoch_loss_count += cfg.grad_accum
                grad_norm = engine.step()
            p.step += 1
            p.position += 1

            epoch_done = p.position == self.batches.steps_per_epoch
            if p.step % cfg.log_interval == 0:
                self._log_train(lr, grad_norm)
            improved = False
            if epoch_done or (cfg.eval_interval and p.step % cfg.eval_interval == 0):
                improved = self._evaluate()
            if epoch_done:
                self._end_epoch()
            links: tuple[str, ...] = ("best",) if improved else ()
            if cfg.checkpoint_interval and p.step % cfg.checkpoint_interval == 0:
                links += ("last",)
            if links:
                self._save(links)
        self.train_seconds += time.perf_counter() - started

    def _stop_requested(self) -> bool:
        """Whether a stop signal came (faults.py); every process answers alike."""
        if self.signals is None:
            return False
        received = self.signals.received is not None
        if distributed.world_size() == 1:
            return received
        # Processes may get the signal steps apart: they agree where they talk anyway, at log steps.
        if self.progress.step % self.cfg.log_interval:
            return False
        return distributed.total(torch.tensor(float(received), device=self.engine.device)).item() > 0

    def _skip(self, step_loss: torch.Tensor) -> bool:
        """--nan-policy skip-step: whether this step's loss is not finite (on any process).

        This policy costs a device read every step; the others read the loss only when they log
        it and before a checkpoint.
        """
        if distributed.total((~torch.isfinite(step_loss)).float()).item() == 0:
            return False
        p = self.progress
        loss = distributed.mean(step_loss).item()
        if p.skipped_steps == 0:
            say("skip_step", step=p.step + 1, loss=loss)
        p.skipped_steps += 1
        return True

    def _check_loss(self, loss: float) -> None:
        """--nan-policy stop: a non-finite training loss ends the run, before anything more is saved."""
        if self.cfg.nan_policy != "stop" or math.isfinite(loss):
            return
        last = ckpt.named(self.cfg.output_dir, "last")
        kept = f"checkpoints/last still holds step {last.step}, the last one saved before it" if last else \
            "no checkpoint was saved before it"
        raise Diverged(f"the training loss is {loss} at step {self.progress.step} (--nan-policy stop); {kept}")

    def _log_train(self, lr: float, grad_norm: torch.Tensor | float | None) -> None:
        p = self.progress
        loss = None
        if self.loss_count:  # 0 when --nan-policy skip-step left out every step of the interval
            loss = distributed.mean(self.loss_sum / self.loss_count).item()  # the one device read of the interval
        self.loss_sum.zero_()
        self.loss_count = 0
        now = time.perf_counter()
        steps = p.step - self._interval_first_step
        seconds = max(now - self._interval_start - self._paused, 1e-9)  # evaluation and saving excluded
        self._interval_start, self._interval_first_step, self._paused = now, p.step, 0.0
        metrics: dict[str, float | torch.Tensor] = {}
        if loss is not None:
            metrics.update(loss=loss, perplexity=trackkit.perplexity(loss))
        metrics.update({
            "learning_rate": lr,
            "epoch": p.epoch + 1,
            "batch": p.position,
            "step": p.step,
            "elapsed_time": seconds / steps if steps else 0.0,
            "tokens_per_second": steps * self.tokens_per_step / seconds,
        })
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm  # a 0-d device tensor: trackkit reads it off this thread
        self.run.log_train(metrics, step=p.step)  # recorded as it is, NaN too
        if loss is not None:
            self.last_train_loss = loss
            self._check_loss(loss)

    @torch.no_grad()
    def _evaluate(self) -> bool:
        """Validation loss over the first --eval-batches batches (of each process); True if it is the best so far."""
        started = time.perf_counter()
        p, model = self.progress, self.engine.model
        model.eval()  # no dropout: evaluation draws nothing from the random generators
        total, count = torch.zeros((), device=self.engine.device), 0
        world = distributed.world_size()
        batches = self.data.val.shard(self.cfg.batch_size, self.cfg.eval_batches * world, distributed.rank(), world)
        for x, y, counted in batches:
            loss = self.engine.forward(x, y).float()
            if counted:
                total += loss * len(x)
                count += len(x)
        model.train()
        summed = distributed.total(torch.stack([total, torch.tensor(float(count), device=total.device)])).tolist()
        val_loss = summed[0] / summed[1]
        improved = val_loss < p.best_val_loss
        p.best_val_loss = min(p.best_val_loss, val_loss)
        self.run.log_eval({
            "loss": val_loss, "perplexity": trackkit.perplexity(val_loss), "step": p.step,
            "best_perplexity": trackkit.perplexity(p.best_val_loss),
        }, step=p.step)
        self.last_eval = (p.step, val_loss)
        self._paused += time.perf_counter() - started
        return improved

    def _end_epoch(self) -> None:
        p = self.progress
        train_loss = distributed.mean(self.epoch_loss_sum / self.epoch_loss_count).item()
        val_loss = self.last_eval[1]
        self.run.log_epoch({
            "train_loss": train_loss, "train_perplexity": trackkit.perplexity(train_loss),
            "val_loss": val_loss, "val_perplexity": trackkit.perplexity(val_loss),
            "number": p.epoch + 1, "best_perplexity": trackkit.perplexity(p.best_val_loss),
        }, epoch=p.epoch + 1, step=p.step)
        p.epoch += 1
        p.position = 0
        self.epoch_loss_sum.zero_()
        self.epoch_loss_count = 0

    def _save(self, links: tuple[str, ...]) -> None:
        started = time.perf_counter()
        p = self.progress
        if self.cfg.nan_policy == "stop" and self.loss_count:  # the loss since the last log: never save NaN weights
            self._check_loss(distributed.mean(self.loss_sum / self.loss_count).item())
        # Everything logged up to this step reaches the trackers' files before the checkpoint
        # exists: a kill -9 after it must not take records that a resume will not log again.
        self.run.flush(timeout=self.cfg.tracker_timeout)
        meta = {
            **asdict(p), "best_val_loss": _loss_to_json(p.best_val_loss),
            "run_id": self.run.info.id if self.run.info else None,
            "run_name": self.run.info.name if self.run.info else None, "engine": self.engine.name,
            "world_size": distributed.world_size(), "zero_stage": getattr(self.engine, "zero_stage", None),
            "model": asdict(self.data.model_cfg), "config": self.cfg.to_dict(),
            "tracking": self.choices.to_meta() if self.choices else None,
        }
        state = {
            "rng": ckpt.rng_state(),
            "loss_sum": self.loss_sum.cpu(), "loss_count": self.loss_count,
            "epoch_loss_sum": self.epoch_loss_sum.cpu(), "epoch_loss_count": self.epoch_loss_count,
        }
        self.writer.save(p.step, links, self.engine, state, meta, self.data.tokenizer.to_json())
        if "best" in links:
            val_loss = self.last_eval[1]
            self.run.log_artifact(self.writer.root / "best", name="best", kind="model", metadata={
                "step": p.step, "val_loss": val_loss, "val_perplexity": trackkit.perplexity(val_loss),
            })
            self.run.flush(timeout=self.cfg.tracker_timeout)  # that record too: it exists only once the link does
        self._paused += time.perf_counter() - started

    def save_for_resume(self, signal_name: str) -> None:
        """After a stop signal: save ``last`` at this step (if this process trained any), and say so."""
        p = self.progress
        if p.step == self.first_step:
            say("stopped_before", signal=signal_name, step=p.step)
            return
        self._save(("last",))
        say("stopped_at", signal=signal_name, step=p.step, path=ckpt.checkpoints_dir(self.cfg.output_dir) / "last")

    # -- the end -------------------------------------------------------------------------------
    def wrap_up(self) -> dict[str, Any]:
        """Evaluate the final weights (unless just done), save ``last``, log the final/ metrics."""
        p = self.progress
        if self.last_eval[0] != p.step:
            if self._evaluate():
                self._save(("best",))
        self._save(("last",))
        val_loss = self.last_eval[1]
        final = {
            "best_perplexity": trackkit.perplexity(p.best_val_loss),
            "best_val_loss": p.best_val_loss,
            "val_loss": val_loss,
            "val_perplexity": trackkit.perplexity(val_loss),
            "unigram_entropy": self.data.unigram_entropy,
            "total_steps": p.step,
            "total_epochs": round(p.step / self.batches.steps_per_epoch, 2),
            "tokens_seen": p.step * self.tokens_per_step,
            "parameters": self.engine.num_parameters,
            "train_seconds": round(self.train_seconds, 1),
        }
        if self.last_train_loss is not None:
            final["train_loss"] = self.last_train_loss
        if self.cfg.nan_policy == "skip-step":
            final["skipped_steps"] = p.skipped_steps
        self.run.log_final(final)
        return final


# -- setting up, step by step (Trainer.create) ----------------------------------------------
def _checked_resume(cfg: TrainConfig) -> ckpt.Checkpoint | None:
    """The checkpoint --resume continues, if any, once it is known to belong in --output-dir.

    Without --resume, a folder that holds a run is trained into only with --overwrite-output-dir.
    """
    if cfg.overwrite_output_dir:
        if cfg.resume is not None:
            raise InputError("--overwrite-output-dir starts a new run and --resume continues one; give one of them")
        return None
    resume = ckpt.find(cfg.resume, cfg.output_dir)
    if resume is not None:
        _check_same_run(resume, cfg.output_dir)
        if resume.note:
            say("resume_fallback", why=resume.note, name=resume.path.name, step=resume.step)
    elif cfg.resume is None and holds_run(cfg.output_dir):
        what = "checkpoints" if ckpt.holds_checkpoints(cfg.output_dir) else "a run"
        raise InputError(f"{cfg.output_dir} already holds {what}; continue with --resume, start over with "
                         "--overwrite-output-dir (deletes them), or choose another --output-dir")
    return resume


def _overwrite(cfg: TrainConfig) -> None:
    """--overwrite-output-dir: the old run's files go (rank 0 deletes them) before the new run writes any."""
    if cfg.overwrite_output_dir and distributed.is_main():
        deleted = clear(cfg.output_dir)
        if deleted:
            say("overwrite", names=", ".join(deleted), dir=cfg.output_dir)
    distributed.barrier()


def _engine_config(
    cfg: TrainConfig, device: torch.device, resume: ckpt.Checkpoint | None
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """DeepSpeed's config (None for the plain engine), and cfg with the batch sizes it decides."""
    ds_config = None
    if cfg.deepspeed:
        ds_config = deepspeed_config.for_run(cfg, device.type, distributed.world_size())
        # A config file's batch sizes and clipping are the run's: the data and the record follow them.
        cfg = replace(cfg, batch_size=ds_config["train_micro_batch_size_per_gpu"],
                      grad_accum=ds_config["gradient_accumulation_steps"], grad_clip=ds_config["gradient_clipping"])
    if resume is not None:
        _check_engine(resume, cfg, ds_config, distributed.world_size())
    return cfg, ds_config


def load_data(cfg: TrainConfig, documents: list[str], resume: ckpt.Checkpoint | None) -> Data:
    """Tokenize the corpus (with the checkpoint's tokenizer when resuming), split it, batch it."""
    if resume is not None:  # the very tokenizer the checkpoint was trained with
        tokenizer = tokenizer_from_json(resume.meta["tokenizer"])
    else:
        # Rank 0's: `tokenizers` may train two different BPE vocabularies on the same text (hash-map order).
        built = build_tokenizer(cfg.tokenizer, documents, cfg.bpe_vocab_size) if distributed.is_main() else None
        tokenizer = tokenizer_from_json(distributed.broadcast(built.to_json() if built else None))
    model_cfg = cfg.model_config(tokenizer.vocab_size)
    if resume is not None:
        _check_shape(resume, model_cfg)
    train_tokens, val_tokens = split(encode_corpus(tokenizer, documents), cfg.val_fraction, model_cfg.block_size)
    batches = EpochBatches(Windows(train_tokens, model_cfg.block_size), cfg.batch_size, cfg.grad_accum, cfg.seed,
                           distributed.rank(), distributed.world_size())
    return Data(tokenizer, model_cfg, batches, Windows(val_tokens, model_cfg.block_size), len(train_tokens),
                len(val_tokens), unigram_entropy(train_tokens))


def build_engine(cfg: TrainConfig, data: Data, device: torch.device, ds_config: dict[str, Any] | None) -> Engine:
    """A fresh model on the engine the config asks for, with its optimizer and schedule."""
    optimization = Optimization(
        learning_rate=cfg.learning_rate, min_lr=cfg.final_lr, warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.lr_decay_steps or total_steps(cfg, data.batches), weight_decay=cfg.weight_decay,
        betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    if ds_config is not None:
        return DeepSpeedEngine(GPT(data.model_cfg), ds_config, device.type, optimization)
    return TorchEngine(GPT(data.model_cfg), device, optimization, grad_clip=cfg.grad_clip, grad_accum=cfg.grad_accum,
                       compile=cfg.compile)


def _start_run(
    cfg: TrainConfig, tracking: Tracking, choices: TrackingChoices, data: Data, engine: Engine,
    resume: ckpt.Checkpoint | None, ds_config: dict[str, Any] | None,
) -> trackkit.Run:
    """The trackkit run (on ranks other than 0, a run that does nothing): new, or the checkpoint's continued."""
    # --resume where a run was killed before its first checkpoint: the same run, again from step 0.
    restart = resume is None and cfg.resume == "auto" and run_json_path(cfg.output_dir).exists()
    config = _tracked_config(cfg, data, engine, ds_config)
    tracked = choices.config()
    if "wandb" in choices.trackers:
        tracked.setdefault("wandb_project", project_of(tracking))
    config.update({k: v for k, v in tracked.items() if k not in config})  # a training setting keeps its name
    return tracking.start(
        output_dir=cfg.output_dir,
        options=console_line(cfg, data.batches),
        name=run_name(cfg, tracking, resume.meta.get("run_name") if resume else None),
        project=project_of(tracking),  # one project name for every backend: the wandb project's
        config=config,
        resume_from_step=resume.step if resume else (0 if restart else None),
        run_id=resume.meta.get("run_id") if resume else None,
        handle_signals=False,  # the trainer's own (faults.py) stop after the step, with a checkpoint
        limits=trackkit.Limits(stall_timeout=cfg.tracker_timeout),
    )


def _save_tokenizer(cfg: TrainConfig, tokenizer: Tokenizer, run: trackkit.Run) -> None:
    """Saved with the run (and in every checkpoint) so that sampling and resuming use this one."""
    try:
        if distributed.is_main():
            Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
            Path(cfg.output_dir, "tokenizer.json").write_text(json.dumps(tokenizer.to_json()) + "\n", encoding="utf-8")
    except OSError as exc:
        run.finish("failed")
        raise InputError(f"cannot write to --output-dir {cfg.output_dir}: {exc.strerror}") from None


# -- helpers -------------------------------------------------------------------------------
def console_line(cfg: TrainConfig, batches: EpochBatches) -> dict[str, Any]:
    """The guide's console line: epoch and batch out of their totals, loss, perplexity, lr, time per step."""
    return {"console_fields": ["epoch", "batch", "loss", "perplexity", "learning_rate", "elapsed_time"],
            "console_totals": {"epoch": math.ceil(total_steps(cfg, batches) / batches.steps_per_epoch),
                               "batch": batches.steps_per_epoch}}


def total_steps(cfg: TrainConfig, batches: EpochBatches) -> int:
    """The run's last step: --max-steps, else --num-epochs whole epochs."""
    return cfg.max_steps or cfg.num_epochs * batches.steps_per_epoch


def _check_same_run(resume: ckpt.Checkpoint, output_dir: str) -> None:
    """A checkpoint resumes only into its own run's folder: two runs' records must not mix."""
    try:
        record = read_run_json(output_dir)
    except trackkit.TrackkitError as exc:
        raise InputError(str(exc)) from None
    saved = resume.meta.get("run_id")
    if record is not None and saved is not None and record["id"] != saved:
        raise InputError(f"checkpoint {str(resume.path)!r} belongs to run {saved}, but {output_dir} holds run "
                         f"{record['id']}; resume a run in its own folder, "
                         "or start a new one with another --output-dir")


def _check_shape(resume: ckpt.Checkpoint, model_cfg: GPTConfig) -> None:
    saved, wanted = resume.meta["model"], asdict(model_cfg)
    differ = [f for f in SHAPE_FIELDS if saved.get(f) != wanted[f]]
    if differ:
        have = ", ".join(f"{f}={saved.get(f)}" for f in differ)
        asked = ", ".join(f"{f}={wanted[f]}" for f in differ)
        raise InputError(f"checkpoint {str(resume.path)!r} holds a model with {have}, this run asks for {asked}; "
                         "a resumed run keeps its model's shape")


def tokens_per_step(cfg: TrainConfig, model_cfg: GPTConfig) -> int:
    """Tokens one optimizer step trains on, all processes together."""
    return cfg.batch_size * cfg.grad_accum * distributed.world_size() * model_cfg.block_size


def _check_engine(
    resume: ckpt.Checkpoint, cfg: TrainConfig, ds_config: dict[str, Any] | None, world_size: int
) -> None:
    """A checkpoint resumes only with the engine that wrote it, and ZeRO's shards only at their stage and world size."""
    saved = resume.meta.get("engine", "torch")
    if saved != ("deepspeed" if cfg.deepspeed else "torch"):
        how = "with --deepspeed" if saved == "deepspeed" else "without --deepspeed"
        raise InputError(f"checkpoint {str(resume.path)!r} was written by the {saved} engine; resume it {how}")
    if ds_config is None:
        return
    stage, saved_stage = ds_config["zero_optimization"]["stage"], resume.meta.get("zero_stage")
    saved_world = resume.meta.get("world_size", 1)
    if stage != saved_stage or (stage > 0 and world_size != saved_world):
        raise InputError(f"checkpoint {str(resume.path)!r} holds ZeRO stage {saved_stage} state of {saved_world} "
                         f"process(es); resume it at that stage with as many (this run: stage {stage}, {world_size})")


def _restore(resume: ckpt.Checkpoint, engine: Engine) -> dict[str, Any]:
    """Load the engine's and the loop's state; returns the loop's (loss sums) for the Trainer."""
    try:
        state = engine.load(resume.path)
    except InputError:
        raise
    except Exception as exc:  # a truncated file or mismatched tensors: torch raises several kinds
        raise InputError(f"checkpoint {str(resume.path)!r} cannot be loaded: {ckpt.describe(exc)}") from None
    ckpt.set_rng_state(state["rng"])  # last: building the engine above drew from the generators
    return state


def _tracked_config(cfg: TrainConfig, data: Data, engine: Engine, ds_config: dict[str, Any] | None) -> dict[str, Any]:
    """The flat hyperparameter dict every tracker gets: flags as resolved, plus the run's sizes."""
    steps = total_steps(cfg, data.batches)
    config = cfg.to_dict()
    config.update(asdict(data.model_cfg))  # the preset's values where no flag overrode them
    config.update(
        data=cfg.data or BUILTIN_NAME,
        min_lr=cfg.final_lr,
        lr_decay_steps=cfg.lr_decay_steps or steps,
        num_epochs=math.ceil(steps / data.batches.steps_per_epoch),  # what --max-steps amounts to
        batches_per_epoch=data.batches.steps_per_epoch,
        total_steps=steps,
        tokens_per_step=tokens_per_step(cfg, data.model_cfg),
        train_tokens=data.train_tokens,
        val_tokens=data.val_tokens,
        parameters=engine.num_parameters,
        device=str(engine.device),
        engine=engine.name,
        world_size=distributed.world_size(),
    )
    if ds_config is not None:
        config.update(deepspeed_config.summary(ds_config))
    return config


def _loss_to_json(loss: float) -> float | None:
    return None if math.isinf(loss) else loss


def _loss_from_json(loss: float | None) -> float:
    return math.inf if loss is None else loss


