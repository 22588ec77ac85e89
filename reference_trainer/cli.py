"""``trackkit-train``: train the reference GPT; ``trackkit-train sample``: generate text from a checkpoint.

    trackkit-train                                   # tiny GPT on the built-in corpus, console + jsonl
    trackkit-train --data books/ --tokenizer bpe --max-steps 5000 --tracker wandb
    trackkit-train --config run.toml --learning-rate 3e-4   # flags override the file
    trackkit-train --output-dir runs/a --resume      # continue runs/a from checkpoints/last
    deepspeed --num_gpus 2 $(command -v trackkit-train) --deepspeed --zero-stage 2   # see README
    trackkit-train sample --checkpoint runs/a/checkpoints/best --prompt "The "
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from trackkit.options import Tracking, tracker_options

from . import checkpoint as ckpt
from .config import NAN_POLICIES, TrainConfig
from .data import TOKENIZERS
from .deepspeed_config import PRECISIONS
from .errors import InputError
from .model import PRESETS
from .sample import generate_text
from .train import train

DEFAULTS = TrainConfig()

# How --help groups the options; any option not listed (every tracker's) is a tracking option.
SECTIONS = {
    "Model": ("model", "n_layer", "n_head", "n_embd", "block_size", "dropout", "bias"),
    "Data": ("data", "tokenizer", "bpe_vocab_size", "val_fraction"),
    "Training": ("batch_size", "grad_accum", "learning_rate", "min_lr", "warmup_steps", "lr_decay_steps",
                 "weight_decay", "grad_clip", "num_epochs", "max_steps", "seed", "device", "compile",
                 "log_interval", "eval_interval", "eval_batches", "nan_policy"),
    "Checkpoints": ("output_dir", "checkpoint_interval", "resume"),
    "DeepSpeed": ("deepspeed", "deepspeed_config", "zero_stage", "precision"),
    "Tracking": (),
    "Other": ("config", "help"),
}


class GroupedHelp(click.Group):
    """A group whose --help lists its own options under the headings of SECTIONS."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        section_of = {name: title for title, names in SECTIONS.items() for name in names}
        rows: dict[str, list[tuple[str, str]]] = {title: [] for title in SECTIONS}
        help_option = self.get_help_option(ctx)
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                name = "help" if param is help_option else param.name
                rows[section_of.get(name, "Tracking")].append(record)
        for title, records in rows.items():
            if records:
                with formatter.section(f"{title} options"):
                    formatter.write_dl(records)
        self.format_commands(ctx, formatter)


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--config FILE: its values become the defaults of the options, so flags still override them."""
    if value is None:
        return
    values = read_config_file(Path(value))
    by_spelling = {}
    for p in ctx.command.params:
        for opt in p.opts:
            by_spelling[opt.lstrip("-").replace("-", "_")] = p
        by_spelling[p.name] = p
    defaults = {}
    for key, item in values.items():
        target = by_spelling.get(key.replace("-", "_"))
        if target is None or target.name == "config":
            raise InputError(f"config file {value}: unknown option {key!r}")
        if getattr(target, "multiple", False) and isinstance(item, str):
            item = [item]
        defaults[target.name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML, YAML or JSON file of option values; one level of tables (``[training]``) is flattened."""
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise InputError(f"config file {path}: TOML needs Python 3.11 or later; use YAML or JSON") from None
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise InputError(f"config file {path}: use .toml, .yaml, .yml or .json")
    except InputError:
        raise
    except Exception as exc:  # each format has its own error type; all mean "not valid"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"config file {path} is not valid: {reason}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a table of option = value")
    flat: dict[str, Any] = {}
    for key, item in data.items():
        flat.update(item if isinstance(item, dict) else {key: item})
    return flat


D = DEFAULTS
TRAINING_OPTIONS = [
    # model
    click.option("--model", type=click.Choice(list(PRESETS)), default=D.model, show_default=True,
                 help="Size preset; the flags below override its fields."),
    click.option("--n-layer", "--n_layer", "n_layer", type=int, help="Transformer blocks (tiny: 4, gpt2-124m: 12)."),
    click.option("--n-head", "--n_head", "n_head", type=int, help="Attention heads (tiny: 4, gpt2-124m: 12)."),
    click.option("--n-embd", "--n_embd", "n_embd", type=int, help="Embedding width (tiny: 128, gpt2-124m: 768)."),
    click.option("--block-size", "--block_size", "block_size", type=int,
                 help="Context length in tokens (tiny: 64, gpt2-124m: 1024)."),
    click.option("--dropout", type=float, help="Dropout probability (presets: 0)."),
    click.option("--bias/--no-bias", default=None, help="Biases in Linear and LayerNorm (tiny: no, gpt2-124m: yes)."),
    # data
    click.option("--data", metavar="PATH|GLOB",
                 help="A .txt file, a folder of .txt/.jsonl files ('text' field), or a glob "
                      "[default: the built-in corpus, Python's pydoc_data.topics]."),
    click.option("--tokenizer", type=click.Choice(TOKENIZERS), default=D.tokenizer, show_default=True,
                 help="byte: UTF-8 bytes (256); char: the corpus's characters; bpe: trained on the corpus."),
    click.option("--bpe-vocab-size", "--bpe_vocab_size", "bpe_vocab_size", type=int, default=D.bpe_vocab_size,
                 show_default=True, help="Vocabulary size of the bpe tokenizer."),
    click.option("--val-fraction", "--val_fraction", "val_fraction", type=float, default=D.val_fraction,
                 show_default=True, help="Share of the corpus (its end) held out for validation."),
    # training
    click.option("--batch-size", "--batch_size", "batch_size", type=int, default=D.batch_size, show_default=True,
                 help="Sequences per micro-batch."),
    click.option("--grad-accum", "--grad_accum", "grad_accum", type=int, default=D.grad_accum, show_default=True,
                 help="Micro-batches per optimizer step."),
    click.option("--learning-rate", "--learning_rate", "learning_rate", type=float, default=D.learning_rate,
                 show_default=True, help="Peak learning rate (after warmup)."),
    click.option("--min-lr", "--min_lr", "min_lr", type=float, help="Learning rate at the end of the cosine "
                 "decay [default: learning rate / 10]."),
    click.option("--warmup-steps", "--warmup_steps", "warmup_steps", type=int, default=D.warmup_steps,
                 show_default=True, help="Steps of linear warmup."),
    click.option("--lr-decay-steps", "--lr_decay_steps", "lr_decay_steps", type=int,
                 help="Step at which the cosine decay reaches --min-lr [default: the run's last step]."),
    click.option("--weight-decay", "--weight_decay", "weight_decay", type=float, default=D.weight_decay,
                 show_default=True, help="AdamW weight decay (weight matrices only)."),
    click.option("--grad-clip", "--grad_clip", "grad_clip", type=float, default=D.grad_clip, show_default=True,
                 help="Clip the gradient norm to this; 0 turns clipping off."),
    click.option("--num-epochs", "--num_epochs", "num_epochs", type=int, default=D.num_epochs, show_default=True,
                 help="Passes over the training split."),
    click.option("--max-steps", "--max_steps", "max_steps", type=int,
                 help="Stop after this many optimizer steps (overrides --num-epochs)."),
    click.option("--seed", type=int, default=D.seed, show_default=True,
                 help="Seeds the weights, dropout and the data order."),
    click.option("--device", default=D.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
    click.option("--compile", is_flag=True, default=D.compile, help="torch.compile the model."),
    click.option("--log-interval", "--log_interval", "log_interval", type=int, default=D.log_interval,
                 show_default=True, help="Log train/ metrics every N steps."),
    click.option("--eval-interval", "--eval_interval", "eval_interval", type=int, default=D.eval_interval,
                 show_default=True, help="Evaluate every N steps (and at each epoch's end); 0: epoch ends only."),
    click.option("--eval-batches", "--eval_batches", "eval_batches", type=int, default=D.eval_batches,
                 show_default=True, help="Validation batches per evaluation."),
    click.option("--nan-policy", "--nan_policy", "nan_policy", type=click.Choice(NAN_POLICIES), default=D.nan_policy,
                 show_default=True, help="A non-finite training loss: warn (record it, go on), skip-step (leave "
                 "that step's update out; checks every step) or stop (keep the last good checkpoint, exit 3)."),
    # A test hook: multiplies the loss of optimizer step N by NaN, so that the real code paths run.
    click.option("--inject-nan-at", "inject_nan_at", type=int, hidden=True),
    # checkpoints
    click.option("--output-dir", "--output_dir", "output_dir",
                 help="The run's folder [default: runs/<date>-<time>; the checkpoint's run when resuming]."),
    click.option("--checkpoint-interval", "--checkpoint_interval", "checkpoint_interval", type=int,
                 default=D.checkpoint_interval, show_default=True,
                 help="Save checkpoints/last every N steps (and at the end); 0: at the end only."),
    click.option("--resume", is_flag=False, flag_value="auto", metavar="[PATH]",
                 help="Continue from a checkpoint folder; alone (or 'auto'): from <output-dir>/checkpoints/last "
                      "if there is one, else start fresh. Flags given override the checkpoint's settings."),
    # DeepSpeed
    click.option("--deepspeed", is_flag=True, default=D.deepspeed,
                 help="Train with DeepSpeed (start several processes with DeepSpeed's launcher; see README)."),
    click.option("--deepspeed-config", "--deepspeed_config", "deepspeed_config", metavar="PATH",
                 help="DeepSpeed JSON config (configs/deepspeed/zero*.json); its batch sizes and gradient_clipping "
                      "win over the flags [default: built from the flags]."),
    click.option("--zero-stage", "--zero_stage", "zero_stage", type=int,
                 help="ZeRO stage 0-3 [default: the config file's, else 0]."),
    click.option("--precision", type=click.Choice(PRECISIONS), default=D.precision, show_default=True,
                 help="DeepSpeed's precision; auto: the config file's, else bf16 on a GPU that has it, else fp32."),
    # Launchers pass --local_rank (DeepSpeed) or --local-rank (torch.distributed.launch); LOCAL_RANK says the same.
    click.option("--local_rank", "--local-rank", type=int, hidden=True, expose_value=False),
    # tracking (the section of every option not named in SECTIONS)
    click.option("--tracker-timeout", "--tracker_timeout", "tracker_timeout", type=float, default=D.tracker_timeout,
                 show_default=True, metavar="SECONDS",
                 help="How long training waits for a tracker that does not keep up: on a full queue, at a "
                      "checkpoint's flush, at the end. A hung tracker delays training at most once by this."),
    # other
    click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                 callback=_load_config_file, help="TOML, YAML or JSON file of option values; flags override it."),
]


def _training_options(f):
    for option in reversed(TRAINING_OPTIONS):
        f = option(f)
    return f


@click.group(cls=GroupedHelp, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@tracker_options()
@click.pass_context
@_training_options
def main(ctx: click.Context, tracking: Tracking, **options: Any) -> None:
    """Train the reference GPT on text and report every metric through trackkit.

    With no options: the tiny model on the built-in corpus (a few minutes on a CPU), tracked by
    console and jsonl into runs/<date>-<time>.
    """
    if ctx.invoked_subcommand is not None:
        return
    inject_nan_at = options.pop("inject_nan_at")  # not a setting: never saved with a checkpoint
    cfg = resolve_config(ctx, options)
    final = train(cfg, tracking, inject_nan_at=inject_nan_at)
    learned = final["unigram_entropy"] - final["val_loss"]
    click.echo(
        f"validation loss {final['val_loss']:.4f} nats vs unigram entropy {final['unigram_entropy']:.4f} nats "
        f"(a model that ignores context): {learned:+.4f} nats learned from context"
    )


def resolve_config(ctx: click.Context, options: dict[str, Any]) -> TrainConfig:
    """The run's config: defaults < the checkpoint's settings when resuming < --config file < flags."""
    given = {name for name in options if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)}
    values = dict(options)
    resume = options["resume"]
    if options["output_dir"] is None:
        found_at = ckpt.read(Path(resume)).run_dir if resume not in (None, "auto") else None
        values["output_dir"] = str(found_at or Path("runs", time.strftime("%Y%m%d-%H%M%S")))
    checkpoint = ckpt.find(resume, values["output_dir"])
    if checkpoint is not None:
        saved = TrainConfig.from_dict(checkpoint.meta["config"]).to_dict()
        values = {**saved, **{name: values[name] for name in given}, "output_dir": values["output_dir"], "resume": resume}
    return TrainConfig(**values)


@main.command()
@click.option("--checkpoint", "path", required=True, metavar="PATH",
              help="A checkpoint folder (runs/x/checkpoints/best), or a run folder (uses its best).")
@click.option("--prompt", default="", help="Text to continue [default: a new paragraph].")
@click.option("--max-new-tokens", "--max_new_tokens", "max_new_tokens", type=int, default=300, show_default=True)
@click.option("--temperature", type=float, default=0.8, show_default=True, help="0: always the likeliest token.")
@click.option("--top-k", "--top_k", "top_k", type=int, default=40, show_default=True,
              help="Sample among the k likeliest tokens; 0: all.")
@click.option("--num-samples", "--num_samples", "num_samples", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--device", default="auto", show_default=True)
def sample(path: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int, num_samples: int,
           seed: int, device: str) -> None:
    """Print text generated by a trained checkpoint."""

    folder = Path(path)
    if ckpt.checkpoints_dir(folder).is_dir():  # a run folder: its best checkpoint, else its latest
        found = ckpt.named(folder, "best") or ckpt.latest(folder)
        folder = found.path if found else folder
    texts = generate_text(folder, prompt, max_new_tokens, temperature, top_k, num_samples, seed, device)
    for i, text in enumerate(texts):
        if i:
            click.echo("-" * 40)
        click.echo(text)
