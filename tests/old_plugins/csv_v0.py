"""trackkit-csv: every logged metric as a ``step,metric,value`` row of ``<output_dir>/csv/metrics.csv``.

The smallest complete trackkit tracker: copy it to start your own (docs/writing-a-tracker.md).
``final/`` metrics have an empty step.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

import trackkit


class CsvTracker:
    """Appends one row per metric value; the file is flushed whenever the layer asks."""

    # Added to the --help of every command that takes --tracker; the parsed value reaches
    # __init__ through the parameter of the same name.
    options = [
        click.Option(["--csv-dir", "csv_dir"], default=None, help="Folder for metrics.csv (default: <output-dir>/csv).")
    ]

    def __init__(self, csv_dir: str | None = None) -> None:
        self.csv_dir = csv_dir
        self.file = None

    @trackkit.hookimpl
    def trackkit_start(self, run: trackkit.RunInfo, config: Mapping[str, Any]) -> None:
        folder = Path(self.csv_dir) if self.csv_dir else run.dir / "csv"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.csv"
        if run.resumed and path.exists():
            # Drop the rows an interrupted process wrote after the checkpoint we resume from.
            with open(path, newline="", encoding="utf-8") as f:
                kept = [row for row in csv.reader(f) if row[0].isdigit() and int(row[0]) <= run.resumed_from_step]
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([["step", "metric", "value"], *kept])
            os.replace(tmp, path)
        new = not path.exists()
        self.file = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["step", "metric", "value"])

    def _write(self, metrics: Mapping[str, float], step: int | None) -> None:
        self.writer.writerows([step, key, value] for key, value in metrics.items())

    @trackkit.hookimpl
    def trackkit_log_train(self, metrics: Mapping[str, float], step: int) -> None:
        self._write(metrics, step)

    @trackkit.hookimpl
    def trackkit_log_eval(self, metrics: Mapping[str, float], step: int) -> None:
        self._write(metrics, step)

    @trackkit.hookimpl
    def trackkit_log_epoch(self, metrics: Mapping[str, float], epoch: int, step: int) -> None:
        self._write(metrics, step)

    @trackkit.hookimpl
    def trackkit_log_metrics(self, namespace: str, metrics: Mapping[str, float], step: int) -> None:
        self._write(metrics, step)

    @trackkit.hookimpl
    def trackkit_log_final(self, metrics: Mapping[str, float]) -> None:
        self._write(metrics, None)

    @trackkit.hookimpl
    def trackkit_flush(self) -> None:
        self.file.flush()

    @trackkit.hookimpl
    def trackkit_finish(self, status: str, summary: Mapping[str, Any]) -> None:
        if self.file is not None:  # finish is called even when trackkit_start failed
            self.file.close()
