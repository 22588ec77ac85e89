"""Tracker selection for any click command.

    @click.command()
    @tracker_options()
    def train(tracking: Tracking, ...):
        run = tracking.start(output_dir=..., config=...)

adds ``--tracker`` (repeatable or comma-separated; ``none``; ``package.module:Class``; default
from ``TRACKKIT_TRACKERS``), ``--offline`` (every backend; also ``TRACKKIT_OFFLINE=1``),
``--use_wandb`` (the guide's spelling of ``--tracker wandb``), ``--system-metrics``,
``--console-lang``, ``--backend-timeout``, and the options every installed tracker declares in its ``options`` class
attribute (a list of ``click.Option``), each also with its ``--a_b`` spelling.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import click
from click.core import ParameterSource

from . import messages
from .dispatch import Limits
from .errors import TrackkitError
from .plugins import TrackerSource, discovered, parse_names
from .report import report
from .run import Run, start

ENV_TRACKERS = "TRACKKIT_TRACKERS"
ENV_OFFLINE = "TRACKKIT_OFFLINE"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class OneLineError(click.ClickException):
    """A usage mistake shown as a single ``Error: ...`` line, exit code 2."""

    exit_code = 2


@dataclass
class Tracking:
    """What the user chose on the command line: tracker names and every tracker option."""

    trackers: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    system_metrics: float | None = None  # seconds between samples of system/ metrics
    buffer_size: int = Limits.buffer_size  # records a failing tracker keeps in memory
    # The options the user gave (command line, a config file's defaults, TRACKKIT_TRACKERS), by name;
    # None where nobody knows (a Tracking made in Python): a resumed run keeps its recorded ones.
    given: set[str] | None = None

    def start(self, options: dict[str, Any] | None = None, limits: Limits | None = None, **kwargs: Any) -> Run:
        """``trackkit.start`` with these trackers and options (``options`` given here win); kwargs as
        ``trackkit.start``."""
        limits = dataclasses.replace(limits or Limits(), buffer_size=self.buffer_size)
        try:
            return start(self.trackers, options={**self.options, **(options or {})}, limits=limits,
                         system_metrics=self.system_metrics, **kwargs)
        except TrackkitError as exc:
            raise OneLineError(str(exc)) from None


def layer_options(default: tuple[str, ...]) -> list[click.Option]:
    """The options trackkit itself adds to a command."""
    return [
        click.Option(
            ["--tracker", "trackers"], multiple=True, metavar="NAME",
            help=f"Tracker to use, repeatable or comma-separated; 'none' for no tracking "
            f"(default: ${ENV_TRACKERS} or {','.join(default)}). See `trackkit plugins`.",
        ),
        click.Option(["--offline"], is_flag=True, default=None,
                     help=f"Keep every backend off the network (also ${ENV_OFFLINE}=1; "
                          "WANDB_MODE=offline is wandb's alone)."),
        click.Option(["--use_wandb", "--use-wandb", "use_wandb"], is_flag=True, help="Same as adding --tracker wandb."),
        click.Option(
            ["--system-metrics", "--system_metrics", "system_metrics"], type=click.FloatRange(min=0, min_open=True),
            metavar="SECONDS", help="Sample CPU, memory, disk, network and GPU every SECONDS into system/ metrics.",
        ),
        click.Option(
            ["--tracker-buffer", "--tracker_buffer", "tracker_buffer"], type=click.IntRange(min=1),
            default=Limits.buffer_size, show_default=True, metavar="RECORDS",
            help="Records a tracker whose backend is down keeps in memory until it catches up; older ones "
                 "are read back from the local record (jsonl tracker), or lost without one.",
        ),
        click.Option(
            ["--console-lang", "--console_lang", "console_lang"], type=click.Choice(messages.LANGUAGES), default=None,
            help=f"Language of everything trackkit prints (default: ${messages.ENV_LANG}, else the locale).",
        ),
        click.Option(
            ["--backend-timeout", "--backend_timeout", "backend_timeout"], type=click.FloatRange(min=0.1, max=3600),
            default=10.0, show_default=True, metavar="SECONDS",
            help="The longest one call to a backend may block its tracker: a backend that is down counts as "
                 "failed after this, and the tracker catches up when it answers again.",
        ),
    ]


def contributed_options(taken: Collection[str] = ()) -> tuple[list[click.Option], list[str]]:
    """Options declared by installed trackers, with ``--a_b`` spellings; and one line per clash.

    Two trackers declaring one option name (or a name trackkit uses) clash: the first keeps it,
    and the command refuses to run until one of them is uninstalled.
    """
    owners: dict[str, TrackerSource | None] = dict.fromkeys(taken)
    found, clashes = [], []
    for source in discovered().values():
        try:
            cls = source.load()
        except TrackkitError as exc:
            report("skipped", error=exc)
            continue
        for option in getattr(cls, "options", ()):
            if option.name in owners:
                other = owners[option.name]
                first = f"tracker {other.name!r} ({other.distribution})" if other else "trackkit itself"
                clashes.append(f"option {option.opts[0]} ({option.name}) is declared by {first} and by tracker "
                               f"{source.name!r} ({source.distribution}); uninstall one of them")
                continue
            owners[option.name] = source
            found.append(with_underscore_spellings(option))
    return found, clashes


def with_underscore_spellings(option: click.Option) -> click.Option:
    """Add ``--a_b`` for every ``--a-b`` the option lacks it for (the guide's spelling of every flag)."""
    for opts in (option.opts, option.secondary_opts):
        for spelling in list(opts):
            alias = "--" + spelling[2:].replace("-", "_")
            if spelling.startswith("--") and alias not in opts:
                opts.append(alias)
    return option


def tracker_options(default: tuple[str, ...] = ("console", "jsonl")) -> Callable:
    """Decorate a click command: it receives ``tracking: Tracking`` instead of the options."""

    def decorate(command: Callable) -> Callable:
        own = layer_options(default)
        extra, clashes = contributed_options({p.name for p in own})
        names = {p.name for p in own + extra}

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if clashes:
                raise OneLineError(clashes[0])
            chosen = {name: kwargs.pop(name) for name in names if name in kwargs}
            kwargs["tracking"] = tracking = selection(chosen, default)
            tracking.given = given_options(names)
            return command(*args, **kwargs)

        params = getattr(command, "__click_params__", [])
        wrapper.__click_params__ = params + list(reversed(own + extra))  # type: ignore[attr-defined]
        return wrapper

    return decorate


def given_options(names: Collection[str]) -> set[str]:
    """Which of ``names`` the user gave: on the command line, or as a default a config file set."""
    ctx = click.get_current_context(silent=True)
    given = {n for n in names if ctx is not None and ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)}
    if os.environ.get(ENV_TRACKERS):
        given.add("trackers")
    return given


def selection(chosen: dict[str, Any], default: tuple[str, ...]) -> Tracking:
    given = list(chosen.pop("trackers", ()) or ())
    if not given:
        given = [os.environ[ENV_TRACKERS]] if os.environ.get(ENV_TRACKERS) else list(default)
    if chosen.pop("use_wandb", False):
        given = [n for n in given if n != "none"] + ["wandb"]
    if not chosen.get("offline"):
        chosen["offline"] = env_flag(ENV_OFFLINE) or None  # None: each backend's own setting (WANDB_MODE)
    try:
        names = parse_names(given)
    except TrackkitError as exc:
        raise OneLineError(str(exc)) from None
    system_metrics = chosen.pop("system_metrics", None)  # for start(), not for the trackers
    buffer_size = chosen.pop("tracker_buffer", None) or Limits.buffer_size
    return Tracking(names, chosen, system_metrics, buffer_size)


def env_flag(name: str) -> bool:
    """A yes/no environment variable: 1/0, true/false, yes/no, on/off in any case; else one error line."""
    value = os.environ.get(name, "").strip().lower()
    if value not in TRUE + FALSE:
        raise OneLineError(f"${name} must be true or false (1/0, yes/no), not {os.environ[name]!r}")
    return value in TRUE
