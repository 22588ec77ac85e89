"""The training loop. Start reading at ``Trainer.loop``.

    final = train(TrainConfig(max_steps=200), Tracking(["console", "jsonl"]))

``train`` = ``Trainer.create`` (check every input, load data and any checkpoint, start the
trackkit run) + ``Trainer.loop`` (the optimizer steps) + ``Trainer.wrap_up`` (last evaluation,
last checkpoint, final/ metrics). Everything the run reports goes through trackkit, in the
namespaces of DESIGN.md: train/ every --log-interval steps, eval/ every --eval-interval steps and
at each epoch's end, epoch/ at each epoch's end, final/ once.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import trackkit
from trackkit.options import Tracking

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import (
    BUILTIN_NAME, EpochBatches, Tokenizer, Windows, build_tokenizer, encode_corpus, read_corpus, split,
    tokenizer_from_json, unigram_entropy,
)
from .engine import TorchEngine, pick_device
from .errors import InputError
from .model import GPT, GPTConfig

SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")  # what a checkpoint fixes


def train(cfg: TrainConfig, tracking: Tracking) -> dict[str, Any]:
    """Train as ``trackkit-train`` does; returns the final/ metrics."""
    trainer = Trainer.create(cfg, tracking)
    with trainer.run:  # finishes the run: success, failed (exception) or interrupted (Ctrl-C, SIGTERM)
        trainer.loop()
        return trainer.wrap_up()


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress, from 0
    position: int = 0  # optimizer steps done within that epoch
    best_val_loss: float = math.inf


class Trainer:
    def __init__(
        self, cfg: TrainConfig, engine: TorchEngine, batches: EpochBatches, val: Windows, tokenizer: Tokenizer,
        model_cfg: GPTConfig, unigram: float, run: trackkit.Run, progress: Progress, state: dict | None = None,
    ):
        self.cfg = cfg
        self.engine = engine
        self.batches = batches
        self.val = val
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.unigram_entropy = unigram
        self.run = run
        self.progress = progress
        self.writer = ckpt.Writer(cfg.output_dir)
        self.total_steps = total_steps(cfg, batches)
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * model_cfg.block_size
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
        self.last_eval: tuple[int, float] | None = None  # (step, validation loss)
        self.last_train_loss: float | None = None
        self.train_seconds = 0.0

    # -- setting up ------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: TrainConfig, tracking: Tracking) -> "Trainer":
        """Check every input before anything is written, then start the trackkit run."""
        cfg.validate()
        resume = ckpt.find(cfg.resume, cfg.output_dir)
        if resume is None and (ckpt.checkpoints_dir(cfg.output_dir) / "last").exists():
            raise InputError(
                f"{cfg.output_dir} already holds checkpoints; resume them (--resume) or choose another --output-dir"
            )

        documents = read_corpus(cfg.data)
        if resume is not None:  # the very tokenizer the checkpoint was trained with
            tokenizer = tokenizer_from_json(resume.meta["tokenizer"])
        else:
            tokenizer = build_tokenizer(cfg.tokenizer, documents, cfg.bpe_vocab_size)
        model_cfg = cfg.model_config(tokenizer.vocab_size)
        if resume is not None:
            _check_shape(resume, model_cfg)
        train_tokens, val_tokens = split(encode_corpus(tokenizer, documents), cfg.val_fraction, model_cfg.block_size)
        batches = EpochBatches(Windows(train_tokens, model_cfg.block_size), cfg.batch_size, cfg.grad_accum, cfg.seed)

        device = pick_device(cfg.device)
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # the model's initial weights, then dropout
        engine = TorchEngine(
            GPT(model_cfg), device, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps, decay_steps=cfg.lr_decay_steps or total_steps(cfg, batches),
            min_lr=cfg.final_lr, grad_clip=cfg.grad_clip, grad_accum=cfg.grad_accum, compile=cfg.compile,
        )
        progress, state = Progress(), None
        if resume is not None:
            state = _restore(resume, engine)
            progress = Progress(resume.meta["step"], resume.meta["epoch"], resume.meta["position"],
                                _loss_from_json(resume.meta.get("best_val_loss")))

        run = tracking.start(
            output_dir=cfg.output_dir,
            config=_tracked_config(cfg, model_cfg, engine, batches, len(train_tokens), len(val_tokens)),
            resume_from_step=resume.step if resume else None,
            run_id=resume.meta.get("run_id") if resume else None,
        )
        # Saved with the run (and in every checkpoint) so that sampling and resuming use this one.
        try:
            Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
            Path(cfg.output_dir, "tokenizer.json").write_text(json.dumps(tokenizer.to_json()) + "\n", encoding="utf-8")
        except OSError as exc:
            run.finish("failed")
            raise InputError(f"cannot write to --output-dir {cfg.output_dir}: {exc.strerror}") from None
        return cls(cfg, engine, batches, Windows(val_tokens, model_cfg.block_size), tokenizer, model_cfg,
                   unigram_entropy(train_tokens), run, progress, state)

    # -- the loop ----------------------------------------------------------------------------
    def loop(self, until: int | None = None) -> None:
        """Take optimizer steps until step ``until`` (default: the run's last step)."""
        cfg, engine, p = self.cfg, self.engine, self.progress
        until = self.total_steps if until is None else min(until, self.total_steps)
        engine.model.train()
        self._interval_start, self._interval_first_step, self._paused = time.perf_counter(), p.step, 0.0
        started = time.perf_counter()
        while p.step < until:
            for x, y in self.batches.micro_batches(p.epoch, p.position):
                loss = engine.forward(x, y)
                engine.backward(loss)
                loss = loss.detach()
                self.loss_sum += loss  # on the device: no sync
                self.epoch_loss_sum += loss
            self.loss_count += cfg.grad_accum
            self.epoch_loss_count += cfg.grad_accum
            lr = engine.learning_rate  # the rate this step uses
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
            links = ("best",) if improved else ()
            if cfg.checkpoint_interval and p.step % cfg.checkpoint_interval == 0:
                links += ("last",)
            if links:
                self._save(links)
        self.train_seconds += time.perf_counter() - started

    def _log_train(self, lr: float, grad_norm: torch.Tensor | None) -> None:
        p = self.progress
        loss = (self.loss_sum / self.loss_count).item()  # the one device read of the interval
        self.loss_sum.zero_()
        self.loss_count = 0
        now = time.perf_counter()
        steps = p.step - self._interval_first_step
        seconds = max(now - self._interval_start - self._paused, 1e-9)  # evaluation and saving excluded
        self._interval_start, self._interval_first_step, self._paused = now, p.step, 0.0
        metrics = {
            "loss": loss,
            "perplexity": trackkit.perplexity(loss),
            "learning_rate": lr,
            "epoch": p.epoch + 1,
            "batch": p.position,
            "step": p.step,
            "elapsed_time": seconds / steps if steps else 0.0,
            "tokens_per_second": steps * self.tokens_per_step / seconds,
        }
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm  # a 0-d device tensor: trackkit reads it off this thread
        self.run.log_train(metrics, step=p.step)
        self.last_train_loss = loss

    @torch.no_grad()
    def _evaluate(self) -> bool:
        """Validation loss over the first --eval-batches batches; True if it is the best so far."""
        started = time.perf_counter()
        p, model = self.progress, self.engine.model
        model.eval()  # no dropout: evaluation draws nothing from the random generators
        total, count = torch.zeros((), device=self.engine.device), 0
        for x, y in self.val.in_order(self.cfg.batch_size, self.cfg.eval_batches):
            total += self.engine.forward(x, y).float() * len(x)
            count += len(x)
        model.train()
        val_loss = (total / count).item()
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
        train_loss = (self.epoch_loss_sum / self.epoch_loss_count).item()
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
        meta = {
            **asdict(p), "best_val_loss": _loss_to_json(p.best_val_loss),
            "run_id": self.run.info.id if self.run.info else None, "engine": self.engine.name,
            "model": asdict(self.model_cfg), "config": self.cfg.to_dict(),
        }
        state = {
            "rng": ckpt.rng_state(),
            "loss_sum": self.loss_sum.cpu(), "loss_count": self.loss_count,
            "epoch_loss_sum": self.epoch_loss_sum.cpu(), "epoch_loss_count": self.epoch_loss_count,
        }
        self.writer.save(p.step, links, self.engine, state, meta, self.tokenizer.to_json())
        if "best" in links:
            val_loss = self.last_eval[1]
            self.run.log_artifact(self.writer.root / "best", name="best", kind="model", metadata={
                "step": p.step, "val_loss": val_loss, "val_perplexity": trackkit.perplexity(val_loss),
            })
        self._paused += time.perf_counter() - started

    # -- the end -------------------------------------------------------------------------------
    def wrap_up(self) -> dict[str, Any]:
        """Evaluate the final weights (unless just done), save ``last``, log the final/ metrics."""
        p = self.progress
        if self.last_eval is None or self.last_eval[0] != p.step:
            if self._evaluate():
                self._save(("best",))
        self._save(("last",))
        val_loss = self.last_eval[1]
        final = {
            "best_perplexity": trackkit.perplexity(p.best_val_loss),
            "best_val_loss": p.best_val_loss,
            "val_loss": val_loss,
            "val_perplexity": trackkit.perplexity(val_loss),
            "unigram_entropy": self.unigram_entropy,
            "total_steps": p.step,
            "total_epochs": round(p.step / self.batches.steps_per_epoch, 2),
            "tokens_seen": p.step * self.tokens_per_step,
            "parameters": self.engine.model.num_parameters(),
            "train_seconds": round(self.train_seconds, 1),
        }
        if self.last_train_loss is not None:
            final["train_loss"] = self.last_train_loss
        self.run.log_final(final)
        return final


# -- helpers -------------------------------------------------------------------------------
def total_steps(cfg: TrainConfig, batches: EpochBatches) -> int:
    """The run's last step: --max-steps, else --num-epochs whole epochs."""
    return cfg.max_steps or cfg.num_epochs * batches.steps_per_epoch


def _check_shape(resume: ckpt.Checkpoint, model_cfg: GPTConfig) -> None:
    saved, wanted = resume.meta["model"], asdict(model_cfg)
    differ = [f for f in SHAPE_FIELDS if saved.get(f) != wanted[f]]
    if differ:
        have = ", ".join(f"{f}={saved.get(f)}" for f in differ)
        asked = ", ".join(f"{f}={wanted[f]}" for f in differ)
        raise InputError(f"checkpoint {str(resume.path)!r} holds a model with {have}, this run asks for {asked}; "
                         "a resumed run keeps its model's shape")


def _restore(resume: ckpt.Checkpoint, engine: TorchEngine) -> dict[str, Any]:
    """Load the engine's and the loop's state; returns the loop's (loss sums) for the Trainer."""
    state = resume.trainer_state(engine.device)
    try:
        engine.load(resume.path)
    except Exception as exc:  # a truncated file or mismatched tensors: torch raises several kinds
        raise InputError(f"checkpoint {str(resume.path)!r} cannot be loaded: {ckpt.describe(exc)}") from None
    ckpt.set_rng_state(state["rng"])  # last: building the engine above drew from the generators
    return state


def _tracked_config(cfg, model_cfg, engine, batches, train_tokens, val_tokens) -> dict[str, Any]:
    """The flat hyperparameter dict every tracker gets: flags as resolved, plus the run's sizes."""
    steps = total_steps(cfg, batches)
    config = cfg.to_dict()
    config.update(asdict(model_cfg))  # the preset's values where no flag overrode them
    config.update(
        data=cfg.data or BUILTIN_NAME,
        min_lr=cfg.final_lr,
        lr_decay_steps=cfg.lr_decay_steps or steps,
        num_epochs=math.ceil(steps / batches.steps_per_epoch),  # what --max-steps amounts to
        batches_per_epoch=batches.steps_per_epoch,
        total_steps=steps,
        tokens_per_step=cfg.batch_size * cfg.grad_accum * model_cfg.block_size,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        parameters=engine.model.num_parameters(),
        device=str(engine.device),
        engine=engine.name,
    )
    return config


def _loss_to_json(loss: float) -> float | None:
    return None if math.isinf(loss) else loss


def _loss_from_json(loss: float | None) -> float:
    return math.inf if loss is None else loss


