"""Reading runs back from their local record, and summarising them (no click here; see cli.py).

A run is a folder with ``trackkit/run.json`` (record.py). Everything below is computed from
run.json, config.json and metrics.jsonl alone, so it works without any backend or account.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TrackkitError
from .record import read_events, read_run_json, record_dir

# Events whose metrics sit on the step axis; "final" has no step, "artifact" and "resume" no metrics.
STEPPED_EVENTS = ("train", "eval", "epoch", "metrics")
BEST_PERPLEXITY = "best_perplexity"


@dataclass
class RunRecord:
    """One run as recorded on disk."""

    dir: Path
    info: dict[str, Any]  # run.json
    config: dict[str, Any]  # config.json ({} when the jsonl tracker was not used)
    events: list[dict[str, Any]]  # metrics.jsonl, in the order logged

    @property
    def name(self) -> str:
        return self.info["name"]


def load_run(path: str | os.PathLike) -> RunRecord:
    """The run recorded in folder ``path``; TrackkitError when it is not a readable run."""
    path = Path(path)
    if not path.is_dir():
        raise TrackkitError(f"{path} is not a folder")
    info = read_run_json(path)
    if info is None:
        raise TrackkitError(f"{path} is not a trackkit run (no trackkit/run.json)")
    folder = record_dir(path)
    config_path, metrics_path = folder / "config.json", folder / "metrics.jsonl"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    except ValueError as exc:
        raise TrackkitError(f"{config_path} is unreadable: {exc}") from None
    events = list(read_events(metrics_path)) if metrics_path.exists() else []
    return RunRecord(path, info, config, events)


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Folders under ``root`` (itself included) holding a ``trackkit/run.json``, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise TrackkitError(f"{root} is not a folder")
    return sorted(p.parent.parent for p in root.rglob("run.json") if p.parent.name == "trackkit")


# -- summaries ---------------------------------------------------------------------------------
def last_step(run: RunRecord) -> int | None:
    """The last training step logged."""
    steps = [e["step"] for e in run.events if e["event"] == "train"]
    return max(steps) if steps else None


def final_metrics(run: RunRecord) -> dict[str, float]:
    """The ``final/`` metrics, merged over every final event."""
    final: dict[str, float] = {}
    for event in run.events:
        if event["event"] == "final":
            final.update(event["metrics"])
    return final


def best_perplexity(run: RunRecord) -> float | None:
    """The lowest ``eval/perplexity`` logged, else ``final/best_perplexity``, else None."""
    values = [v for _, v in series(run, "eval/perplexity") if not math.isnan(v)]
    if values:
        return min(values)
    return final_metrics(run).get(f"final/{BEST_PERPLEXITY}")


def last_metrics(run: RunRecord) -> dict[str, tuple[int | None, float]]:
    """Every metric key's last value, with the step it was logged at (None for final/)."""
    last: dict[str, tuple[int | None, float]] = {}
    for event in run.events:
        for key, value in event.get("metrics", {}).items():
            last[key] = (event.get("step"), value)
    return dict(sorted(last.items()))


def best_checkpoint(run: RunRecord) -> Path | None:
    """The best checkpoint: the last artifact logged with "best" in its name where it still exists,
    else ``checkpoints/best``, else the recorded path even if gone, else None."""
    recorded = next(
        (Path(e["path"]) for e in reversed(run.events) if e["event"] == "artifact" and "best" in e["name"].lower()),
        None,
    )
    for candidate in (recorded, run.dir / "checkpoints" / "best"):
        if candidate is not None and candidate.exists():
            return candidate
    return recorded


def series(run: RunRecord, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged value of ``key`` (e.g. ``train/loss``)."""
    return [
        (e["step"], e["metrics"][key]) for e in run.events if e["event"] in STEPPED_EVENTS and key in e["metrics"]
    ]


def differing_config(runs: list[RunRecord]) -> list[str]:
    """Hyperparameter keys whose value is not the same in every run (a missing key counts as differing)."""
    missing = object()
    differing = []
    for key in sorted({k for run in runs for k in run.config}):
        values = [run.config.get(key, missing) for run in runs]
        if any(v != values[0] for v in values):
            differing.append(key)
    return differing


def comparison(runs: list[RunRecord], sort: str | None = None) -> list[dict[str, Any]]:
    """One row per run: name, dir, the differing hyperparameters, best perplexity, final metrics.

    ``sort`` is a key of the row (``best_perplexity``) or a final metric (``final/total_steps``);
    rows are ordered by it ascending, runs without it last.
    """
    keys = differing_config(runs)
    rows = [
        {
            "name": run.name,
            "dir": str(run.dir),
            "status": run.info.get("status"),
            "config": {k: run.config.get(k) for k in keys},
            BEST_PERPLEXITY: best_perplexity(run),
            "final": final_metrics(run),
        }
        for run in runs
    ]
    if sort:
        available = {BEST_PERPLEXITY, *(k for row in rows for k in row["final"])}
        if sort not in available:
            raise TrackkitError(f"cannot sort by {sort!r}; choose one of {', '.join(sorted(available))}")

        def order(row: dict[str, Any]) -> tuple[bool, float]:
            value = row[sort] if sort == BEST_PERPLEXITY else row["final"].get(sort)
            return (value is None or math.isnan(value), value if value is not None else 0.0)

        rows.sort(key=order)
    return rows


def labels(runs: list[RunRecord]) -> list[str]:
    """A legend label per run: its name, or its folder where two runs share a name."""
    names = [run.name for run in runs]
    return [name if names.count(name) == 1 else str(run.dir) for name, run in zip(names, runs)]


# -- export ------------------------------------------------------------------------------------
def namespace_tables(run: RunRecord) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """Per namespace (train, eval, epoch, final, system, ...): the CSV header and one row per event.

    Columns are ``step`` (and ``epoch`` for epoch events), ``time``, then the metric keys in the
    order first seen. A metric not logged in some event leaves its cell empty.
    """
    tables: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
    for event in run.events:
        if "metrics" not in event:
            continue
        namespace = event.get("namespace") or event["event"]
        header, rows = tables.setdefault(namespace, (_lead_columns(event), []))
        for key in event["metrics"]:
            if key not in header:
                header.append(key)
        rows.append({**{k: event.get(k) for k in _lead_columns(event)}, **event["metrics"]})
    return tables


def _lead_columns(event: dict[str, Any]) -> list[str]:
    return [k for k in ("step", "epoch", "time") if k in event]


def export_csv(run: RunRecord, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``<out_dir>/<namespace>.csv`` for every namespace the run logged; the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for namespace, (header, rows) in namespace_tables(run).items():
        path = out_dir / f"{namespace}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    return written


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
