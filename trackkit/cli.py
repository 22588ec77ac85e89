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

from . import outputs
from . import runs as records
from .errors import TrackkitError
from .export import export_csv
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
    """A TrackkitError (not a run, a newer format, a corrupt record) or an OSError (a disk that
    filled up) becomes ``Error: ...``, exit 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TrackkitError as exc:
            raise OneLineError(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise OneLineError(f"{where}{exc.strerror or exc}") from None

    return wrapper


def _best_options(command: Callable) -> Callable:
    """--best KEY and --highest, made into ``best`` (a records.Best) for the command."""

    @click.option("--best", "best_key", metavar="KEY", default=records.Best.key, show_default=True,
                  help="The metric whose best value is shown (its lowest; see --highest).")
    @click.option("--highest", is_flag=True, help="The best value of --best is its highest, not its lowest.")
    @functools.wraps(command)
    def wrapper(*args: Any, best_key: str, highest: bool, **kwargs: Any) -> Any:
        return command(*args, best=records.Best(best_key, highest), **kwargs)

    return wrapper


def _when(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _trackers(info: dict[str, Any], with_health: bool = False) -> str:
    """run.json's trackers, each with its state and counts where the run finished and asked for."""
    names = info.get("trackers")
    if not isinstance(names, list):
        return "-"
    health = info.get("tracker_health") if with_health else None
    shown = []
    for name in map(str, names):
        counts = health.get(name) if isinstance(health, dict) else None
        if isinstance(counts, dict):
            name += f" ({counts.get('state')}, {counts.get('delivered')} delivered, {counts.get('lost')} lost)"
        shown.append(name)
    return (", " if with_health else ",").join(shown) or "-"


# -- trackkit runs ...: the local record, without any backend ---------------------------------------
@main.group()
def runs() -> None:
    """List, show, compare, plot and export runs from their local record (<run>/trackkit/)."""


@runs.command("list")
@click.argument("directory", default=".", required=False)
@_best_options
@_one_line_errors
def list_runs(directory: str, best: records.Best) -> None:
    """The runs under DIRECTORY (default: here), oldest first: one line each."""
    found: list[tuple[float, tuple[Any, ...]]] = []  # (start time, row)
    for path in records.find_runs(directory):
        try:
            run = records.load_run(path)
            started = run.info.get("started_at")
            found.append((started if isinstance(started, (int, float)) else 0, (
                run.name, run.info.get("status"), run.index.last_train_step, best.value(run),
                _trackers(run.info), _when(started), run.dir,
            )))
        except TrackkitError as exc:
            report("skipped_run", error=exc)
    if not found:
        raise OneLineError(f"no readable trackkit runs under {directory} (a run is a folder with trackkit/run.json)")
    found.sort(key=lambda pair: pair[0])
    header = ("NAME", "STATUS", "STEPS", best.heading, "TRACKERS", "STARTED", "DIR")
    _echo_lines(records.table([header, *(row for _, row in found)]))


@runs.command()
@click.argument("run_dir", metavar="RUN")
@_best_options
@_one_line_errors
def show(run_dir: str, best: records.Best) -> None:
    """One run: identity, config, final metrics, the last value of every metric, the best checkpoint."""
    run = records.load_run(run_dir)
    found = best.of(run)
    checkpoint = records.best_checkpoint(run)
    _echo_lines(records.table([
        ("name", run.name), ("id", run.info["id"]), ("project", run.info.get("project")),
        ("status", run.info.get("status")), ("dir", run.dir), ("trackers", _trackers(run.info, with_health=True)),
        ("started", _when(run.info.get("started_at"))), ("updated", _when(run.info.get("updated_at"))),
        ("steps", run.index.last_train_step), ("events", run.index.events),
        (f"best {best.key}", _with_step(found)),
        ("best checkpoint", _checkpoint_path(checkpoint)),
    ]))
    for title, rows in (
        ("config", sorted(run.config.items())),
        ("final", sorted(run.index.final.items())),
        ("last metrics", [(k, f"step {step}", v) for k, (step, v) in records.last_metrics(run).items()]),
        ("best checkpoint", _checkpoint_rows(checkpoint)),
    ):
        click.echo(f"\n{title}:")
        _echo_lines(["  " + line for line in records.table(rows)] if rows else ["  (none)"])


def _with_step(found: tuple[float, int | None] | None) -> str:
    if found is None:
        return "-"
    value, step = found
    return records.fmt(value) + (f" (step {step})" if step is not None else " (final)")


def _checkpoint_path(artifact: dict[str, Any] | None) -> str:
    if artifact is None:
        return "-"
    return f"{artifact['path']}{'' if Path(artifact['path']).exists() else ' (gone)'}"


def _checkpoint_rows(artifact: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """The recorded artifact: where, when, what, and the metadata it was logged with."""
    if artifact is None:
        return []
    rows = [(field, artifact.get(field)) for field in ("path", "step", "name", "kind")]
    return rows + [(f"metadata.{k}", v) for k, v in sorted((artifact.get("metadata") or {}).items())]


@runs.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True)
@click.option("--sort", "sort_key", metavar="KEY",
              help="Order by the best value's column (best_perplexity) or a final metric, e.g. final/best_perplexity.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@_best_options
@_one_line_errors
def compare(run_dirs: tuple[str, ...], sort_key: str | None, as_json: bool, best: records.Best) -> None:
    """The hyperparameters that differ between runs, their best value (of --best) and final metrics."""
    rows = records.comparison([records.load_run(d) for d in run_dirs], best, sort_key)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    params = list(rows[0]["config"])
    finals = sorted({k for row in rows for k in row["final"]})
    lines = [("RUN", *params, best.column, *finals)]
    for row in rows:
        lines.append((row["name"], *row["config"].values(), row[best.column], *(row["final"].get(k) for k in finals)))
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
@click.option("--metric", "metrics", metavar="KEY", multiple=True,
              help="A metric to draw (repeatable). Default: train and eval loss and perplexity and the "
                   "learning rate, those logged; else every metric logged.")
@_one_line_errors
def plot(run_dirs: tuple[str, ...], output: str, size: str, metrics: tuple[str, ...]) -> None:
    """Metrics against step, a panel per metric and a line per run."""
    from .plot import chosen_metrics, plot_runs  # matplotlib only for this command

    width, height = _size(size)
    path = outputs.check_file(output)
    loaded = [records.load_run(d) for d in run_dirs]
    keys = chosen_metrics(loaded, metrics)
    if not keys:
        what = ", ".join(metrics) if metrics else "any metric"
        raise OneLineError(f"no run among {', '.join(run_dirs)} logged {what} at a step")
    with outputs.replaced_whole(path) as tmp:
        plot_runs(loaded, keys, tmp, width, height)
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
    folder = outputs.check_folder(Path(output) if output else run.dir / "export")
    written = export_csv(run.events(as_written=True), folder)  # numbers copied, not reformatted
    if not written:
        raise OneLineError(f"{run.dir} has no recorded metrics to export")
    _echo_lines([str(path) for path in written])


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
    outputs.check_folder(records.load_run(run_dir).dir)  # the replay writes there: found out before it starts
    result = replay(run_dir, target, options)
    if result.skipped:  # typically the best checkpoints of earlier steps, rotated away since
        report("not_sent", what=result.skipped[-1], more=len(result.skipped) - 1)
    ids = "".join(f" ({name} run {backend_id})" for name, backend_id in result.backend_ids.items()
                  if name == result.target)
    click.echo(f"sent {result.records} records of {run_dir} to {result.target}{ids}; "
               "it skipped every step its backend already held")
