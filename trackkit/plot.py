"""Learning curves of one or more runs in one PNG (matplotlib, Agg backend, imported only here)."""
from __future__ import annotations

import os

from .runs import RunRecord, labels, series

# (panel title, metric key, log scale where the values span more than a decade): a panel per metric.
PANELS = (
    ("train loss", "train/loss", False),
    ("train perplexity", "train/perplexity", True),
    ("learning rate", "train/learning_rate", False),
    ("eval loss", "eval/loss", False),
    ("eval perplexity", "eval/perplexity", True),
)
DPI = 100


def plot_runs(runs: list[RunRecord], path: str | os.PathLike, width: int = 1500, height: int = 900) -> None:
    """Draw every panel of PANELS against step, one colour per run, into a ``width`` x ``height`` PNG."""
    import matplotlib

    matplotlib.use("Agg")  # never a display; must precede pyplot's import
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 3, figsize=(width / DPI, height / DPI), dpi=DPI)
    colours = [f"C{i % 10}" for i in range(len(runs))]  # a run keeps its colour in every panel
    for ax, (title, key, log) in zip(axes.flat, PANELS):
        for run, colour in zip(runs, colours):
            points = series(run, key)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, color=colour, marker="." if len(points) < 30 else None)
        low, high = ax.dataLim.intervaly
        if ax.lines:
            if log and low > 0 and high / low > 10:  # perplexity falls by orders of magnitude early on
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, f"no {key} logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    legend_ax = axes.flat[-1]
    legend_ax.axis("off")
    handles = [Line2D([], [], color=colour, marker=".") for colour in colours]
    legend_ax.legend(handles, labels(runs), loc="center", title="run", frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
