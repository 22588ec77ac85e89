"""Curves of one or more runs in one PNG (matplotlib, Agg backend, imported only here).

Each run's record is read once, as it streams by, and every curve is reduced to a few points
per pixel column (downsample.py) before matplotlib sees it: a million steps draw as fast as a
thousand, in memory that does not grow with the record.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .downsample import MinMaxCurve
from .runs import RunRecord, labels

# The curves drawn when none are asked for, those that some run logged.
DEFAULT_METRICS = ("train/loss", "train/perplexity", "train/learning_rate", "eval/loss", "eval/perplexity")
DPI = 100
COLUMNS_PER_PIXEL = 2  # buckets per pixel column of a panel: finer than the eye, coarser than the record


def chosen_metrics(runs: Sequence[RunRecord], asked: Sequence[str] = ()) -> list[str]:
    """The metrics to draw: ``asked``, else the defaults some run logged, else every metric logged
    (from each run's index, without reading its record). Empty when none of them was logged."""
    logged = {key for run in runs for key in run.index.last}
    if asked:
        return [key for key in asked if key in logged]
    return [key for key in DEFAULT_METRICS if key in logged] or sorted(logged)


def curves(run: RunRecord, keys: Sequence[str], columns: int) -> dict[str, MinMaxCurve]:
    """The run's curve of each of ``keys`` against step, reduced to at most ``columns`` buckets."""
    reduced = {key: MinMaxCurve(columns) for key in keys}
    wanted = set(keys)
    for event in run.events():
        metrics = event.get("metrics")
        if metrics is None or "step" not in event or event["event"] == "final" or wanted.isdisjoint(metrics):
            continue
        for key in wanted.intersection(metrics):
            reduced[key].add(event["step"], metrics[key])
    return reduced


def plot_runs(runs: list[RunRecord], keys: Sequence[str], path: str | os.PathLike, width: int = 1500,
              height: int = 900) -> None:
    """Draw a panel per metric of ``keys`` against step, one colour per run, into a ``width`` x
    ``height`` PNG, with the legend in a cell of its own."""
    import matplotlib

    matplotlib.use("Agg")  # never a display; must precede pyplot's import
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    columns = 3 if len(keys) + 1 > 4 else 2
    rows = math.ceil((len(keys) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
    buckets = COLUMNS_PER_PIXEL * width // columns
    colours = [f"C{i % 10}" for i in range(len(runs))]  # a run keeps its colour in every panel
    drawn = [curves(run, keys, buckets) for run in runs]
    for ax, key in zip(axes.flat, keys):
        for reduced, colour in zip(drawn, colours):
            steps, values = reduced[key].points()
            if steps:
                ax.plot(steps, values, color=colour, marker="." if len(steps) < 30 else None, linewidth=1)
        _finish_panel(ax, key)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    handles = [Line2D([], [], color=colour, marker=".") for colour in colours]
    axes.flat[len(keys)].legend(handles, labels(runs), loc="center", title="run", frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)


def _finish_panel(ax, key: str) -> None:
    low, high = ax.dataLim.intervaly
    # A perplexity falls by orders of magnitude early on: a log scale keeps the rest readable.
    if key.endswith("perplexity") and ax.lines and low > 0 and high / low > 10:
        ax.set_yscale("log")
    if not ax.lines:
        ax.text(0.5, 0.5, f"no finite {key} values", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
