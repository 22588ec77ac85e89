"""trackkit-csv: every logged metric as a ``step,time,metric,value`` row of ``<output_dir>/csv/metrics.csv``.

The smallest complete trackkit tracker: copy it to start your own (docs/writing-a-tracker.md).
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

import trackkit

HEADER = ["step", "time", "metric", "value"]


class CsvTracker:
    """Gathers one row per metric value in its log hook and writes them when the layer flushes."""

    # Added to the --help of every command that takes --tracker (also as --csv_dir); the parsed
    # value reaches __init__ through the parameter of the same name.
    options = [
        click.Option(["--csv-dir", "csv_dir"], default=None, help="Folder for metrics.csv (default: <output-dir>/csv).")
    ]

    def __init__(self, csv_dir: str | None = None) -> None:
        self.csv_dir = csv_dir
        self.file = None
        self.rows = io.StringIO()  # gathered since the last flush
        self.writer = csv.writer(self.rows)
        self.held: dict[str, int] = {}  # metric -> the last step the file already had (on resume)

    @trackkit.hookimpl
    def trackkit_start(self, run: trackkit.RunInfo, config: Mapping[str, Any]) -> None:
        folder = Path(self.csv_dir) if self.csv_dir else run.dir / "csv"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.csv"
        if run.resumed_from_step is not None and path.exists():
            self._keep_up_to(path, run.resumed_from_step)
        if not path.exists():
            self.writer.writerow(HEADER)
        self.file = open(path, "ab", buffering=0)  # unbuffered: a failed write leaves nothing behind in Python

    def _keep_up_to(self, path: Path, step: int) -> None:
        """Drop rows written after the checkpoint a run resumes from; remember what the file holds."""
        with open(path, newline="", encoding="utf-8") as f:
            kept = [row for row in csv.reader(f) if row[0].isdigit() and int(row[0]) <= step]
        for row in kept:
            self.held[row[2]] = max(self.held.get(row[2], -1), int(row[0]))
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([HEADER, *kept])
        os.replace(tmp, path)

    @trackkit.hookimpl
    def trackkit_log_metrics(self, metrics: Mapping[str, float], step: int, timestamp: float) -> None:
        # The catch-all: without a hook of their own, train/, eval/, epoch/, final/ come here too.
        self.writer.writerows(
            [step, f"{timestamp:.3f}", key, value] for key, value in metrics.items() if step > self.held.get(key, -1)
        )

    @trackkit.hookimpl
    def trackkit_flush(self) -> None:
        # One write per round. If it fails (a full disk), the part written is cut off and the rows
        # stay gathered: the layer calls this again later, and the file never holds a row twice.
        data, end = self.rows.getvalue().encode("utf-8"), self.file.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):
                written += self.file.write(data[written:])
        except OSError:
            self.file.truncate(end)
            raise
        self.rows.seek(0)
        self.rows.truncate()

    @trackkit.hookimpl
    def trackkit_finish(self) -> None:
        if self.file is not None:  # finish is called even when trackkit_start failed
            self.file.close()
