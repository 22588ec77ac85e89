"""Every hyperparameter of a training run, in one flat dataclass (one field per command-line flag)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .data import TOKENIZERS
from .errors import InputError
from .model import PRESETS, GPTConfig, preset

NAN_POLICIES = ("warn", "skip-step", "stop")  # what a non-finite training loss does (train.py)


@dataclass
class TrainConfig:
    # model: a preset, and any of its fields overridden (None keeps the preset's value)
    model: str = "tiny"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    bias: bool | None = None
    # data
    data: str | None = None  # None: the built-in corpus
    tokenizer: str = "char"
    bpe_vocab_size: int = 2048
    val_fraction: float = 0.1
    # training
    batch_size: int = 12
    grad_accum: int = 1
    learning_rate: float = 1e-3
    min_lr: float | None = None  # None: learning_rate / 10
    warmup_steps: int = 100
    lr_decay_steps: int | None = None  # None: the run's total steps
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 turns clipping off
    num_epochs: int = 4
    max_steps: int | None = None  # overrides num_epochs
    seed: int = 1337
    device: str = "auto"
    compile: bool = False
    log_interval: int = 10
    eval_interval: int = 250  # 0: evaluate only at the end of each epoch and of training
    eval_batches: int = 100  # validation batches per evaluation (fewer if the split is smaller)
    nan_policy: str = "warn"  # warn: record it and go on; skip-step: drop that update; stop: fail the run
    # checkpoints
    output_dir: str = "runs/default"
    checkpoint_interval: int = 500  # 0: only at the end (and `best` on every improvement)
    resume: str | None = None  # a checkpoint folder, or "auto": <output_dir>/checkpoints/last if it exists
    # tracking
    tracker_timeout: float = 30.0  # seconds training waits for a tracker that does not keep up, at most once
    # DeepSpeed (deepspeed_config.py): a config file, or one built from the flags
    deepspeed: bool = False
    deepspeed_config: str | None = None
    zero_stage: int | None = None  # None: the file's, else 0
    precision: str = "auto"  # auto: the file's, else bf16 where the GPU has it, else fp32

    def validate(self) -> None:
        """Raise InputError (one line, exit code 2) for a value no run could use."""
        positive = ("batch_size", "grad_accum", "num_epochs", "max_steps", "log_interval", "eval_batches",
                    "n_layer", "n_head", "n_embd", "block_size", "lr_decay_steps", "learning_rate", "tracker_timeout")
        not_negative = ("warmup_steps", "eval_interval", "checkpoint_interval", "weight_decay", "grad_clip", "min_lr")
        for name in positive:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"{flag(name)} must be positive, got {value}")
        for name in not_negative:
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InputError(f"{flag(name)} must not be negative, got {value}")
        if self.model not in PRESETS:
            raise InputError(f"unknown --model {self.model!r}; choose one of {', '.join(PRESETS)}")
        if self.nan_policy not in NAN_POLICIES:
            raise InputError(f"unknown --nan-policy {self.nan_policy!r}; choose one of {', '.join(NAN_POLICIES)}")
        if self.nan_policy == "skip-step" and self.deepspeed:
            # DeepSpeed counts micro-batches in its own step(): an update cannot be left out from outside.
            raise InputError("--nan-policy skip-step is not available with --deepspeed; use warn or stop")
        if self.tokenizer not in TOKENIZERS:
            raise InputError(f"unknown --tokenizer {self.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.min_lr is not None and self.min_lr > self.learning_rate:
            raise InputError(f"--min-lr ({self.min_lr}) is above --learning-rate ({self.learning_rate})")
        if self.tokenizer == "bpe" and self.bpe_vocab_size <= 256:
            raise InputError(f"--bpe-vocab-size must be above 256 (the byte alphabet), got {self.bpe_vocab_size}")
        if not self.deepspeed:
            given = [f for f in ("deepspeed_config", "zero_stage") if getattr(self, f) is not None]
            given += ["precision"] if self.precision != "auto" else []
            if given:
                raise InputError(f"{flag(given[0])} is a DeepSpeed option; add --deepspeed")
        elif self.compile:
            raise InputError("--compile is not available with --deepspeed (use DeepSpeed's own compile settings)")
        self.model_config(vocab_size=256)  # shape errors (n_embd not divisible by n_head) surface now

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The model's shape: the preset, this config's overrides, the tokenizer's vocabulary."""
        try:
            return preset(self.model, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                          block_size=self.block_size, dropout=self.dropout, bias=self.bias, vocab_size=vocab_size)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from saved values; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def flag(name: str) -> str:
    """The command-line spelling of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")
