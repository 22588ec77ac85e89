"""Every hyperparameter of a training run, in one flat dataclass: one field per command-line option.

Each field carries what the rest of the trainer needs to know about it (``Spec``): its help
text, its ``--help`` group, its range or choices. From that one source come the click options
with both spellings (``--batch-size`` and ``--batch_size``, cli.py), the grouped ``--help``,
``TrainConfig.validate`` (every check of a single value) and the README's options table
(``options_table``; a test fails when the README drifts from it).
"""
from __future__ import annotations

import math
import time
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from functools import cache
from typing import Any, get_args, get_type_hints

from .data import TOKENIZERS
from .deepspeed_config import PRECISIONS, ZERO_STAGES
from .errors import InputError
from .model import PRESETS, GPTConfig, preset

NAN_POLICIES = ("warn", "skip-step", "stop")  # what a non-finite training loss does (train.py)
GROUPS = ("Model", "Data", "Training", "Checkpoints", "DeepSpeed", "Tracking")  # --help's order


@dataclass(frozen=True)
class Range:
    """The values a number may take: ``low`` and ``high`` (None: unbounded), each closed unless ``*_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str | None = None  # said after the error, when the bound needs a reason

    def allows(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def phrase(self) -> str:
        """What a value must be, in words: ``positive``, ``at least 1``, ``in [0, 1)``."""
        low, high = self.low, self.high
        if high is None and low == 0:
            return "positive" if self.low_open else "not negative"
        if high is None:
            return f"above {low}" if self.low_open else f"at least {low}"
        if low is None:
            return f"below {high}" if self.high_open else f"at most {high}"
        if self.low_open and self.high_open:
            return f"between {low} and {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"

    def error(self, flag: str, value: float) -> str:
        verb = "must not be" if self.phrase() == "not negative" else "must be"
        text = f"{flag} {verb} {self.phrase().removeprefix('not ')}, got {value}"
        return f"{text}: {self.why}" if self.why else text


POSITIVE = Range(0, low_open=True)
NOT_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1, high_open=True)  # dropout, Adam's betas


@dataclass(frozen=True)
class Spec:
    """What a TrainConfig field is as an option (dataclass field metadata, see ``option``)."""

    group: str
    help: str
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    default_text: str | None = None  # the default in words, where the field's default is None
    flag_value: str | None = None  # the value of the option given without one (--resume alone)
    setting: bool = True  # False: what this invocation does, never taken from a checkpoint (--resume)


def option(default: Any, group: str, help: str, range: Range | None = None, **spec: Any) -> Any:
    """A dataclass field that is also a command-line option."""
    return field(default=default, metadata={"option": Spec(group, help, range, **spec)})


@dataclass
class TrainConfig:
    # -- model: a preset, and any of its fields overridden (None keeps the preset's value)
    model: str = option("tiny", "Model", "Size preset; the flags below override its fields.", choices=tuple(PRESETS))
    n_layer: int | None = option(None, "Model", "Transformer blocks (tiny: 4, gpt2-124m: 12).", POSITIVE,
                                 default_text="the preset's")
    n_head: int | None = option(None, "Model", "Attention heads (tiny: 4, gpt2-124m: 12).", POSITIVE,
                                default_text="the preset's")
    n_embd: int | None = option(None, "Model", "Embedding width (tiny: 128, gpt2-124m: 768).", POSITIVE,
                                default_text="the preset's")
    block_size: int | None = option(None, "Model", "Context length in tokens (tiny: 64, gpt2-124m: 1024).", POSITIVE,
                                    default_text="the preset's")
    dropout: float | None = option(None, "Model", "Dropout probability.", PROBABILITY, default_text="the preset's: 0")
    bias: bool | None = option(None, "Model", "Biases in Linear and LayerNorm (--no-bias: none).",
                               default_text="the preset's: tiny no, gpt2-124m yes")
    # -- data
    data: str | None = option(None, "Data", "A .txt file, a folder of .txt/.jsonl files ('text' field), or a glob.",
                              metavar="PATH|GLOB", default_text="the built-in corpus, Python's pydoc_data.topics")
    tokenizer: str = option("char", "Data", "byte: UTF-8 bytes (256); char: the corpus's characters; bpe: trained "
                            "on the corpus.", choices=TOKENIZERS)
    bpe_vocab_size: int = option(2048, "Data", "Vocabulary size of the bpe tokenizer.",
                                 Range(256, low_open=True, why="the byte alphabet has 256"))
    val_fraction: float = option(0.1, "Data", "Share of the corpus (its end) held out for validation.",
                                 Range(0, 1, low_open=True, high_open=True))
    # -- training
    batch_size: int = option(12, "Training", "Sequences per micro-batch.", POSITIVE)
    grad_accum: int = option(1, "Training", "Micro-batches per optimizer step.", POSITIVE)
    learning_rate: float = option(1e-3, "Training", "Peak learning rate (after warmup).", POSITIVE)
    min_lr: float | None = option(None, "Training", "Learning rate at the end of the cosine decay.", NOT_NEGATIVE,
                                  default_text="learning rate / 10")
    warmup_steps: int = option(100, "Training", "Steps of linear warmup.", NOT_NEGATIVE)
    lr_decay_steps: int | None = option(None, "Training", "Step at which the cosine decay reaches --min-lr.", POSITIVE,
                                        default_text="the run's last step")
    weight_decay: float = option(0.1, "Training", "AdamW weight decay (weight matrices only).", NOT_NEGATIVE)
    # beta2 0.95 rather than torch's 0.999: the second-moment estimate adapts faster, which keeps
    # transformer training stable when gradient scales shift.
    beta1: float = option(0.9, "Training", "AdamW's beta1 (decay of the gradient's running mean).", PROBABILITY)
    beta2: float = option(0.95, "Training", "AdamW's beta2 (decay of the squared gradient's running mean).",
                          PROBABILITY)
    adam_eps: float = option(1e-8, "Training", "AdamW's epsilon (added to the denominator).", POSITIVE)
    grad_clip: float = option(1.0, "Training", "Clip the gradient norm to this; 0 turns clipping off.", NOT_NEGATIVE)
    num_epochs: int = option(4, "Training", "Passes over the training split.", POSITIVE)
    max_steps: int | None = option(None, "Training", "Stop after this many optimizer steps (overrides --num-epochs).",
                                   POSITIVE, default_text="--num-epochs whole epochs")
    seed: int = option(1337, "Training", "Seeds the weights, dropout and the data order.",
                       Range(0, 2**32 - 1))
    device: str = option("auto", "Training", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps.")
    compile: bool = option(False, "Training", "torch.compile the model.")
    log_interval: int = option(10, "Training", "Log train/ metrics every N steps.", POSITIVE)
    eval_interval: int = option(250, "Training", "Evaluate every N steps (and at each epoch's end); 0: epoch ends "
                                "only.", NOT_NEGATIVE)
    eval_batches: int = option(100, "Training", "Validation batches per evaluation (of each process).", POSITIVE)
    nan_policy: str = option("warn", "Training", "A non-finite training loss: warn (record it, go on), skip-step "
                             "(leave that step's update out; checks every step) or stop (keep the last good "
                             "checkpoint, exit 3).", choices=NAN_POLICIES)
    # -- checkpoints
    output_dir: str = field(default_factory=lambda: default_output_dir(), metadata={
        "option": Spec("Checkpoints", "The run's folder.", metavar="DIR", setting=False,
                       default_text="runs/YYYYmmdd-HHMMSS; the checkpoint's run when resuming")})
    overwrite_output_dir: bool = option(False, "Checkpoints", "Start a new run in an --output-dir that holds one: "
                                        "its checkpoints, record and tracker folders are deleted first.",
                                        setting=False)
    checkpoint_interval: int = option(500, "Checkpoints", "Save checkpoints/last every N steps (and at the end); "
                                      "0: at the end only.", NOT_NEGATIVE)
    resume: str | None = option(None, "Checkpoints", "Continue from a checkpoint folder; alone (or 'auto'): from "
                                "the latest checkpoint of --output-dir if there is one, else start fresh. Options "
                                "given override the checkpoint's.", metavar="[PATH]", flag_value="auto",
                                setting=False, default_text="a new run")
    # -- DeepSpeed (deepspeed_config.py): a config file, or one built from the flags
    deepspeed: bool = option(False, "DeepSpeed", "Train with DeepSpeed (start several processes with DeepSpeed's "
                             "launcher; see README).")
    deepspeed_config: str | None = option(None, "DeepSpeed", "DeepSpeed JSON config (configs/deepspeed/zero*.json); "
                                          "its batch sizes and gradient_clipping win over the flags.",
                                          metavar="PATH", default_text="built from the flags")
    zero_stage: int | None = option(None, "DeepSpeed", "ZeRO stage.",
                                    Range(min(ZERO_STAGES), max(ZERO_STAGES), why="ZeRO has stages 0, 1, 2 and 3"),
                                    default_text="the config file's, else 0")
    precision: str = option("auto", "DeepSpeed", "DeepSpeed's precision; auto: the config file's, else bf16 on a "
                            "GPU that has it, else fp32.", choices=PRECISIONS)
    # -- tracking (trackkit adds --tracker and every tracker's options)
    tracker_timeout: float = option(30.0, "Tracking", "Seconds training waits for a tracker that does not keep up: "
                                    "on a full queue, at a checkpoint's flush, at the end. A hung tracker delays "
                                    "training at most once by this.", POSITIVE, metavar="SECONDS")

    def validate(self) -> None:
        """Raise InputError (one line, exit code 2) for a value no run could use."""
        for f in option_fields(type(self)):
            check_value(type(self), f, getattr(self, f.name))
        if self.nan_policy == "skip-step" and self.deepspeed:
            # DeepSpeed counts micro-batches in its own step(): an update cannot be left out from outside.
            raise InputError("--nan-policy skip-step is not available with --deepspeed; use warn or stop")
        if self.min_lr is not None and self.min_lr > self.learning_rate:
            raise InputError(f"--min-lr ({self.min_lr}) is above --learning-rate ({self.learning_rate})")
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


def default_output_dir() -> str:
    """``runs/<date>-<time>``: a new folder for every run started without --output-dir."""
    return time.strftime("runs/%Y%m%d-%H%M%S")


def flag(name: str) -> str:
    """The command-line spelling of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def spellings(name: str) -> list[str]:
    """Every spelling of a field's option: ``--batch-size`` and the guide's ``--batch_size``."""
    return sorted({flag(name), "--" + name}, key=lambda s: "_" in s)


def option_fields(cls: type = TrainConfig) -> list[Field]:
    """The fields of ``cls`` that are options, in declaration order."""
    return [f for f in fields(cls) if "option" in f.metadata]


def spec(f: Field) -> Spec:
    return f.metadata["option"]


@cache
def value_type(cls: type, name: str) -> type:
    """The type a field's value has when it is set: ``int`` for ``int | None``."""
    hint = get_type_hints(cls)[name]
    return next((t for t in get_args(hint) if t is not type(None)), hint)


KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def check_value(cls: type, f: Field, value: Any) -> None:
    """InputError unless ``value`` has the field's type, is finite, and is among its choices or in its range."""
    name, s, kind = flag(f.name), spec(f), value_type(cls, f.name)
    if value is None and f.default is None:
        return
    fits = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool), str: isinstance(value, str)}[kind]
    if not fits:
        raise InputError(f"{name} must be {KIND_WORDS[kind]}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    if s.choices is not None and value not in s.choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(s.choices)}")
    if s.range is not None and not s.range.allows(value):
        raise InputError(s.range.error(name, value))


# -- the README's table ----------------------------------------------------------------------------
def default_text(f: Field) -> str:
    s = spec(f)
    if s.default_text is not None:
        return s.default_text
    if f.default is False:
        return "off"
    return "" if f.default is MISSING else str(f.default)


def values_text(f: Field) -> str:
    s = spec(f)
    if s.choices is not None:
        return ", ".join(s.choices)
    if s.range is not None:
        return s.range.phrase()
    kind = value_type(TrainConfig, f.name)
    return "flag" if kind is bool else (s.metavar or {int: "integer", float: "number", str: "text"}[kind])


def option_names(f: Field) -> str:
    """``--batch-size``; ``--bias/--no-bias`` for a switch whose default is the preset's."""
    if value_type(TrainConfig, f.name) is bool and f.default is None:
        return f"{flag(f.name)}/--no-{f.name}"
    return flag(f.name)


def options_table() -> str:
    """The README's table of every TrainConfig option, by group (tests/test_trainer_options.py compares)."""
    rows = ["| option | default | values | what it does |", "| --- | --- | --- | --- |"]
    for group in GROUPS:
        rows.append(f"| **{group}** | | | |")
        rows += ["| " + " | ".join(cell.replace("|", "\\|") for cell in (
            f"`{option_names(f)}`", default_text(f), values_text(f), spec(f).help)) + " |"
            for f in option_fields() if spec(f).group == group]
    return "\n".join(rows) + "\n"
