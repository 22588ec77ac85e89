"""The ``trackkit`` command: inspect installed trackers and the runs they recorded."""
from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import runs as records
from .errors import TrackkitError
from .options import OneLineError, contributed_options
from .plugins import discovered
from .replay import replay
from .report import report


@click.group()
@click.version_option(package_name="trackkit")
def main() -> None:
    """Pluggable experiment tracking for PyTorch training loops."""


@main.command()
def plugins() -> None:
    """List the discovered trackers, where each comes from, and whether its backend imports."""
    rows = [("NAME", "DISTRIBUTION", "CLASS", "BACKEND")]
    for source in discovered().values():
        available = source.backend_available()
        rows.append((source.name, source.distribution, source.target, "ok" if available else "missing"))
    _echo_lines(records.table(rows))


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _one_line_errors(command: Callable) -> Callable:
    """A TrackkitError (not a run, a newer format, a corrupt record) becomes ``Error: ...``, exit 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TrackkitError as exc:
            raise OneLineError(str(exc)) from None

    return wrapper


def _checkpoint(path: Path | None) -> str | None:
    return None if path is None else f"{path}{'' if path.exists() else ' (gone)'}"


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


# -- trackkit runs ...: the local record, without any backend ---------------------------------------
@main.group()
def runs() -> None:
    """List, show, compare, plot and export runs from their local record (<run>/trackkit/)."""


@runs.command("list")
@click.argument("directory", default=".", required=False)
@_one_line_errors
def list_runs(directory: str) -> None:
    """The runs under DIRECTORY (default: here), oldest first: one line each."""
    found = []
    for path in records.find_runs(directory):
        try:
            found.append(records.load_run(path))
        except TrackkitError as exc:
            report("skipped_run", error=exc)
    if not found:
        raise OneLineError(f"no readable trackkit runs under {directory} (a run is a folder with trackkit/run.json)")
    found.sort(key=lambda run: run.info.get("started_at") or 0)
    rows: list[tuple[Any, ...]] = [("NAME", "STATUS", "STEPS", "BEST_EVAL_PPL", "TRACKERS", "STARTED", "DIR")]
    for run in found:
        rows.append((
            run.name, run.info.get("status"), records.last_step(run), records.best_perplexity(run),
            ",".join(run.info.get("trackers", [])), _when(run.info.get("started_at")), run.dir,
        ))
    _echo_lines(records.table(rows))


@runs.command()
@click.argument("run_dir", metavar="RUN")
@_one_line_errors
def show(run_dir: str) -> None:
    """One run: identity, config, final metrics, the last value of every metric, the best checkpoint."""
    run = records.load_run(run_dir)
    health = run.info.get("tracker_health", {})
    trackers = [
        f"{name} ({health[name]['state']}, {health[name]['delivered']} delivered, {health[name]['lost']} lost)"
        if name in health else name
        for name in run.info.get("trackers", [])
    ]
    _echo_lines(records.table([
        ("name", run.name), ("id", run.info["id"]), ("project", run.info.get("project")),
        ("status", run.info.get("status")), ("dir", run.dir), ("trackers", ", ".join(trackers) or "-"),
        ("started", _when(run.info.get("started_at"))), ("updated", _when(run.info.get("updated_at"))),
        ("steps", records.last_step(run)), ("best eval perplexity", records.best_perplexity(run)),
        ("best checkpoint", _checkpoint(records.best_checkpoint(run))),
    ]))
    for title, rows in (
        ("config", sorted(run.config.items())),
        ("final", sorted(records.final_metrics(run).items())),
        ("last metrics", [(k, "" if step is None else f"step {step}", v) for k, (step, v) in records.last_metrics(run).items()]),
    ):
        click.echo(f"\n{title}:")
        _echo_lines(["  " + line for line in records.table(rows)] if rows else ["  (none)"])


@runs.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True)
@click.option("--sort", "sort_key", metavar="KEY", help="Order by best_perplexity or a final metric, e.g. final/best_perplexity.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@_one_line_errors
def compare(run_dirs: tuple[str, ...], sort_key: str | None, as_json: bool) -> None:
    """The hyperparameters that differ between runs, their best eval perplexity and final metrics."""
    rows = records.comparison([records.load_run(d) for d in run_dirs], sort_key)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    params = list(rows[0]["config"])
    finals = sorted({k for row in rows for k in row["final"]})
    lines = [("RUN", *params, records.BEST_PERPLEXITY, *finals)]
    for row in rows:
        lines.append((row["name"], *row["config"].values(), row[records.BEST_PERPLEXITY], *(row["final"].get(k) for k in finals)))
    _echo_lines(records.table(lines))


def _size(value: str) -> tuple[int, int]:
    width, _, height = value.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) >= 200 and int(height) >= 150):
        raise OneLineError(f"--size must look like 1500x900 (at least 200x150 pixels), not {value!r}")
    return int(width), int(height)


@runs.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True)
@click.option("-o", "--output", default="curves.png", show_default=True, help="The PNG to write.")
@click.option("--size", default="1500x900", show_default=True, help="WIDTHxHEIGHT in pixels.")
@_one_line_errors
def plot(run_dirs: tuple[str, ...], output: str, size: str) -> None:
    """Train and eval loss and perplexity and the learning rate against step, a line per run."""
    from .plot import plot_runs  # matplotlib only for this command

    width, height = _size(size)
    loaded = [records.load_run(d) for d in run_dirs]
    plot_runs(loaded, output, width, height)
    click.echo(f"wrote {output} ({width}x{height}): {', '.join(records.labels(loaded))}")


@runs.command()
@click.argument("run_dir", metavar="RUN")
@click.option("--format", "fmt", type=click.Choice(["csv"]), default="csv", show_default=True)
@click.option("-o", "--output", metavar="DIR", help="Folder for the files (default: RUN/export).")
@_one_line_errors
def export(run_dir: str, fmt: str, output: str | None) -> None:
    """One CSV per namespace (train.csv, eval.csv, epoch.csv, final.csv, system.csv, ...).

    Columns: step (and epoch), time, then the namespace's metrics; an empty cell where an event
    did not log that metric.
    """
    run = records.load_run(run_dir)
    if not any("metrics" in event for event in run.events):
        raise OneLineError(f"{run.dir} has no recorded metrics to export")
    for path in records.export_csv(run, Path(output) if output else run.dir / "export"):
        click.echo(str(path))


# -- trackkit sync -----------------------------------------------------------------------------------
def _sync_options(command: Callable) -> Callable:
    """Every installed tracker's options, for ``sync --to`` (the run's recorded ones are the defaults)."""
    extra, _ = contributed_options({"offline"})
    copies = []
    for option in extra:
        option = copy.copy(option)
        option.default, option.show_default = None, False  # unset: the recorded value applies
        copies.append(option)
    command.__click_params__ = [*getattr(command, "__click_params__", []), *reversed(copies)]  # type: ignore
    return command


@main.command()
@click.argument("run_dir", metavar="RUN")
@click.option("--to", "target", metavar="NAME",
              help="Send RUN's local record to this tracker (any installed one), only what its backend lacks.")
@click.option("--offline", is_flag=True, default=None, help="Keep the backend off the network (wandb offline).")
@_sync_options
@_one_line_errors
def sync(run_dir: str, target: str | None, **options: Any) -> None:
    """Upload RUN's wandb offline runs (wandb sync); with --to NAME, deliver what that backend lacks.

    With --to, the tracker options RUN was recorded with apply, except those given here.
    """
    if target is None:
        from .wandb_files import sync as upload_wandb_offline

        raise SystemExit(upload_wandb_offline(run_dir))
    result = replay(run_dir, target, options)
    if result.skipped:  # typically the best checkpoints of earlier steps, rotated away since
        report("not_sent", what=result.skipped[-1], more=len(result.skipped) - 1)
    ids = "".join(f" ({name} run {backend_id})" for name, backend_id in result.backend_ids.items()
                  if name == result.target)
    click.echo(f"sent {result.records} records of {run_dir} to {result.target}{ids}; "
               "it skipped every step its backend already held")
