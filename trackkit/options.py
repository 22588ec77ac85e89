"""Tracker selection for any click command.

    @click.command()
    @tracker_options()
    def train(tracking: Tracking, ...):
        run = tracking.start(output_dir=..., config=...)

adds ``--tracker`` (repeatable or comma-separated; ``none``; ``package.module:Class``; default
from ``TRACKKIT_TRACKERS``), ``--offline``, ``--use_wandb`` (the seed's spelling of
``--tracker wandb``), and the options every installed tracker declares in its ``options``
class attribute (a list of ``click.Option``).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from .errors import TrackkitError
from .plugins import discovered, parse_names
from .report import report
from .run import Run, start

ENV_TRACKERS = "TRACKKIT_TRACKERS"


class OneLineError(click.ClickException):
    """A usage mistake shown as a single ``Error: ...`` line, exit code 2."""

    exit_code = 2


@dataclass
class Tracking:
    """What the user chose on the command line: tracker names and every tracker option."""

    trackers: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    system_metrics: float | None = None  # seconds between samples of system/ metrics

    def start(self, **kwargs: Any) -> Run:
        """``trackkit.start`` with these trackers and options; kwargs as ``trackkit.start``."""
        try:
            return start(self.trackers, options=self.options, system_metrics=self.system_metrics, **kwargs)
        except TrackkitError as exc:
            raise OneLineError(str(exc)) from None


def contributed_options() -> list[click.Option]:
    """Options declared by installed trackers, first declaration of a name wins."""
    seen: set[str] = set()
    found = []
    for source in discovered().values():
        try:
            cls = source.load()
        except TrackkitError as exc:
            report(f"{exc} (skipped)")
            continue
        for option in getattr(cls, "options", ()):
            if option.name not in seen:
                seen.add(option.name)
                found.append(option)
    return found


def tracker_options(default: tuple[str, ...] = ("console", "jsonl")) -> Callable:
    """Decorate a click command: it receives ``tracking: Tracking`` instead of the options."""

    def decorate(command: Callable) -> Callable:
        extra = contributed_options()
        own = [
            click.Option(
                ["--tracker", "trackers"], multiple=True, metavar="NAME",
                help=f"Tracker to use, repeatable or comma-separated; 'none' for no tracking "
                f"(default: ${ENV_TRACKERS} or {','.join(default)}). See `trackkit plugins`.",
            ),
            click.Option(["--offline"], is_flag=True, default=None, help="Keep backends offline (wandb offline mode)."),
            click.Option(["--use_wandb", "--use-wandb", "use_wandb"], is_flag=True, help="Same as adding --tracker wandb."),
            click.Option(
                ["--system-metrics", "system_metrics"], type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                help="Sample CPU, memory and GPU every SECONDS into system/ metrics (default: off).",
            ),
        ]
        names = {p.name for p in own + extra}

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            chosen = {name: kwargs.pop(name) for name in names if name in kwargs}
            kwargs["tracking"] = selection(chosen, default)
            return command(*args, **kwargs)

        params = getattr(command, "__click_params__", [])
        wrapper.__click_params__ = params + list(reversed(own + extra))
        return wrapper

    return decorate


def selection(chosen: dict[str, Any], default: tuple[str, ...]) -> Tracking:
    given = list(chosen.pop("trackers", ()) or ())
    if not given:
        given = [os.environ[ENV_TRACKERS]] if os.environ.get(ENV_TRACKERS) else list(default)
    if chosen.pop("use_wandb", False):
        given = [n for n in given if n != "none"] + ["wandb"]
    if chosen.get("offline") is None:
        chosen["offline"] = os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun")
    try:
        names = parse_names(given)
    except TrackkitError as exc:
        raise OneLineError(str(exc)) from None
    system_metrics = chosen.pop("system_metrics", None)  # for start(), not for the trackers
    return Tracking(names, chosen, system_metrics)
