"""Runs read back from their local record, and summarised (no click here; see cli.py).

A run is a folder with ``trackkit/run.json`` (record.py). What list, show and compare print comes
from run.json, config.json and the record's index (record_index.py), so they take the same time
for a run of a million events as for one of ten; whatever needs every event (export, plot,
sync --to) streams ``RunRecord.events()``. Nothing here knows a trainer's metric names: the best
value is that of a metric the caller names (``Best``), the best checkpoint is a recorded artifact.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from . import record_index
from .errors import TrackkitError
from .namespaces import FINAL
from .reading import read_events
from .record import read_run_json, record_dir
from .record_index import RecordIndex


@dataclass
class RunRecord:
    """One run as recorded on disk; its config and index are read when first asked for."""

    dir: Path
    info: dict[str, Any]  # run.json

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.dir.name)

    @property
    def metrics_path(self) -> Path:
        return record_dir(self.dir) / "metrics.jsonl"

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.json ({} when the jsonl tracker was not used)."""
        path = record_dir(self.dir) / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise TrackkitError(f"{path} is unreadable: {exc}") from None
        if not isinstance(config, dict):
            raise TrackkitError(f"{path} is not a JSON object of hyperparameters")
        return config

    @cached_property
    def index(self) -> RecordIndex:
        """The record summarised (index.json where the record bears it out; see record_index.py)."""
        return record_index.current(self.metrics_path)

    def events(self, as_written: bool = False) -> Iterator[dict[str, Any]]:
        """Every recorded event, in order, read as it is consumed (``as_written``: see read_events)."""
        return read_events(self.metrics_path, as_written) if self.metrics_path.exists() else iter(())


def load_run(path: str | os.PathLike) -> RunRecord:
    """The run recorded in folder ``path``; TrackkitError when it is not a readable run."""
    path = Path(path)
    if not path.is_dir():
        raise TrackkitError(f"{path} is not a folder")
    info = read_run_json(path)
    if info is None:
        raise TrackkitError(f"{path} is not a trackkit run (no trackkit/run.json)")
    return RunRecord(path, info)


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Folders under ``root`` (itself included) holding a ``trackkit/run.json``, sorted by path.

    A run's own folders (checkpoints, wandb, tensorboard) are not searched: they hold no runs,
    and can hold many files.
    """
    root = Path(root)
    if not root.is_dir():
        raise TrackkitError(f"{root} is not a folder")
    found = []
    for folder, subfolders, _ in os.walk(root):
        if "trackkit" in subfolders and os.path.isfile(os.path.join(folder, "trackkit", "run.json")):
            found.append(Path(folder))
            subfolders.clear()
    return sorted(found)


# -- summaries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Best:
    """Which metric's best value a table shows: the lowest (or, ``highest``, the highest) value
    logged of ``key``, else the value of ``final/best_<name>`` where the run logged one."""

    key: str = "eval/perplexity"
    highest: bool = False

    @property
    def column(self) -> str:
        """The column's name in compare: best_perplexity for eval/perplexity."""
        return "best_" + self.key.rpartition("/")[2]

    @property
    def heading(self) -> str:
        """Its heading in list: BEST_EVAL_PPL for eval/perplexity."""
        return "BEST_" + self.key.upper().replace("/", "_").replace("PERPLEXITY", "PPL")

    @property
    def fallback(self) -> str:
        return f"{FINAL.prefix}best_{self.key.rpartition('/')[2]}"

    def of(self, run: RunRecord) -> tuple[float, int | None] | None:
        """``(value, step)`` of the run's best, the step None where it comes from final/; or None."""
        index = run.index
        values, steps = (index.high, index.high_step) if self.highest else (index.low, index.low_step)
        if self.key in values:
            return values[self.key], steps[self.key]
        for key in (self.key, self.fallback):
            if key in index.final:
                return index.final[key], None
        return None

    def value(self, run: RunRecord) -> float | None:
        found = self.of(run)
        return None if found is None else found[0]


def last_metrics(run: RunRecord) -> dict[str, tuple[int, float]]:
    """Every stepped metric's last value, with the step it was logged at (final/ is apart)."""
    index = run.index
    return {key: (index.last_step[key], index.last[key]) for key in sorted(index.last)}


def best_checkpoint(run: RunRecord) -> dict[str, Any] | None:
    """The artifact recorded as the best checkpoint: the last one logged with "best" in its name,
    else the last of kind "model"; its name, kind, path, step and metadata. None without one."""
    artifacts = run.index.artifacts
    return artifacts.get("best") or artifacts.get("model")


def differing_config(runs: list[RunRecord]) -> list[str]:
    """Hyperparameter keys whose value is not the same in every run (a missing key counts as differing)."""
    missing = object()
    differing = []
    for key in sorted({k for run in runs for k in run.config}):
        values = [run.config.get(key, missing) for run in runs]
        if any(v != values[0] for v in values):
            differing.append(key)
    return differing


def comparison(runs: list[RunRecord], best: Best | None = None, sort: str | None = None) -> list[dict[str, Any]]:
    """One row per run: name, dir, status, the differing hyperparameters, the best value, final metrics.

    ``sort`` is the best value's column (``best_perplexity``) or a final metric
    (``final/total_steps``); rows are ordered by it ascending, runs without it last.
    """
    best = best or Best()
    keys = differing_config(runs)
    rows: list[dict[str, Any]] = [
        {
            "name": run.name, "dir": str(run.dir), "status": run.info.get("status"),
            "config": {k: run.config.get(k) for k in keys}, best.column: best.value(run), "final": run.index.final,
        }
        for run in runs
    ]
    if sort:
        available = {best.column, *(k for row in rows for k in row["final"])}
        if sort not in available:
            raise TrackkitError(f"cannot sort by {sort!r}; choose one of {', '.join(sorted(available))}")

        def order(row: dict[str, Any]) -> tuple[bool, float]:
            value = row[sort] if sort == best.column else row["final"].get(sort)
            missing = not isinstance(value, (int, float)) or value != value  # None or NaN
            return (missing, 0.0 if missing else value)

        rows.sort(key=order)
    return rows


def labels(runs: list[RunRecord]) -> list[str]:
    """A legend label per run: its name, or its folder where two runs share a name."""
    names = [run.name for run in runs]
    return [name if names.count(name) == 1 else str(run.dir) for name, run in zip(names, runs)]


# -- text ----------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A compact cell: floats to 4 significant digits, None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: Iterable[Iterable[Any]]) -> list[str]:
    """Rows of cells as left-aligned, two-space separated lines."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
