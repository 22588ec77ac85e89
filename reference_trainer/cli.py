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
from collections.abc import Callable
from dataclasses import Field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from trackkit.options import Tracking, tracker_options

from . import checkpoint as ckpt
from . import distributed
from .config import (
    GROUPS,
    TrainConfig,
    default_output_dir,
    default_text,
    option_fields,
    spec,
    spellings,
    value_type,
)
from .errors import InputError
from .lines import line
from .sample import generate_text
from .train import train

# --help's groups: every TrainConfig field's own (config.py); any other option is a tracker's.
SECTION_OF = {**{f.name: spec(f).group for f in option_fields()}, "config": "Other", "help": "Other"}


class OneLineUsageErrors(click.Command):
    """A mistake on the command line (an unknown option, a value that is not a number) in one line, exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise InputError(exc.format_message()) from None


class GroupedHelp(OneLineUsageErrors, click.Group):
    """A group whose --help lists its own options under their groups (SECTION_OF)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {title: [] for title in (*GROUPS, "Other")}
        help_option = self.get_help_option(ctx)
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                name = "help" if param is help_option else param.name
                rows[SECTION_OF.get(name or "", "Tracking")].append(record)
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


def training_option(f: Field) -> Callable[[Callable], Callable]:
    """The click option of a TrainConfig field, from its Spec: spellings, type, default, help."""
    s, kind = spec(f), value_type(TrainConfig, f.name)
    attrs: dict[str, Any] = {"metavar": s.metavar}
    decls = spellings(f.name)
    if kind is bool and f.default is None:  # a switch whose default is the preset's: --bias/--no-bias
        decls = [f"{decls[0]}/--no-{f.name.replace('_', '-')}"]
    elif kind is bool:
        attrs["is_flag"] = True
    elif s.flag_value is not None:
        attrs.update(is_flag=False, flag_value=s.flag_value)
    else:
        attrs["type"] = click.Choice(s.choices) if s.choices else kind
    bounds = f"; {s.range.phrase()}" if s.range else ""
    default = None if s.default_text is not None else f.default
    return click.option(*decls, f.name, default=default, help=f"{s.help}  [default: {default_text(f)}{bounds}]",
                        **attrs)


def _training_options(f: Callable) -> Callable:
    options = [
        *map(training_option, option_fields()),
        # Launchers pass --local_rank (DeepSpeed) or --local-rank (torch.distributed.launch); LOCAL_RANK says the same.
        click.option("--local_rank", "--local-rank", type=int, hidden=True, expose_value=False),
        click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                     callback=_load_config_file, help="TOML, YAML or JSON file of option values; flags override it."),
    ]
    for option in reversed(options):
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
    cfg = resolve_config(ctx, options)
    final = train(cfg, tracking, given=tracking.given)  # on --resume, tracking not given again is the checkpoint's
    learned = final["unigram_entropy"] - final["val_loss"]
    if distributed.is_main():  # every process of a multi-process run ends here; one says it
        click.echo(line("learned", val=final["val_loss"], entropy=final["unigram_entropy"], learned=learned))


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave option ``name``, on the command line or in the --config file."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def resolve_config(ctx: click.Context, options: dict[str, Any]) -> TrainConfig:
    """The run's config: defaults < the checkpoint's settings when resuming < --config file < flags."""
    given = {name for name in options if _given(ctx, name)}
    values = dict(options)
    resume = options["resume"]
    if options["output_dir"] is None:
        found_at = ckpt.read(Path(resume)).run_dir if resume not in (None, "auto") else None
        values["output_dir"] = str(found_at or default_output_dir())
    checkpoint = ckpt.find(resume, values["output_dir"])
    if checkpoint is not None:
        saved = TrainConfig.from_dict(checkpoint.meta["config"]).to_dict()
        values.update({f.name: saved[f.name] for f in option_fields() if spec(f).setting and f.name not in given})
    return TrainConfig(**values)


@main.command(cls=OneLineUsageErrors)
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
