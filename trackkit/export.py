"""A run's record as one CSV per namespace, written as the record streams by.

Columns are ``step`` (and ``epoch`` for epoch events), ``time``, then the namespace's metrics in
the order first logged. The header is only known at the end, so rows go to a file of their own
while the record is read; the CSV is then the header and those rows, where rows written before a
metric first appeared get an empty cell for it at their end.
"""
from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from .outputs import staged_folder

_LEAD = ("step", "epoch", "time")  # columns taken from the event itself, those it has


class _Table:
    """One namespace's CSV being written: its columns so far and its rows."""

    def __init__(self, folder: Path, namespace: str, first: dict[str, Any]):
        self.path = folder / f"{namespace}.csv"
        self.lead = [k for k in _LEAD if k in first]
        self.columns: list[str] = []  # metric names, in the order first seen
        self.widths: list[tuple[int, int]] = [(0, 0)]  # (rows written, columns from then on), as they grew
        self.rows = 0
        self._file: TextIO = open(folder / f".{namespace}.rows", "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)

    def add(self, event: dict[str, Any]) -> None:
        metrics = event["metrics"]
        if [*metrics] == self.columns:  # the common case: the same metrics as the event before
            values: Iterable[Any] = metrics.values()
        else:
            new = [key for key in metrics if key not in self.columns]
            if new:
                self.columns += new
                self.widths.append((self.rows, len(self.columns)))
            values = map(metrics.get, self.columns)  # None (an empty cell) where not logged
        self._writer.writerow([*map(event.get, self.lead), *values])
        self.rows += 1

    def close(self) -> None:
        self._file.close()

    def finish(self) -> Path:
        """Write the CSV: header, then the rows, padded to the final number of columns."""
        self.close()
        rows = self._file.name
        with open(self.path, "w", newline="", encoding="utf-8") as out, open(rows, newline="", encoding="utf-8") as f:
            csv.writer(out).writerow([*self.lead, *self.columns])
            full = len(self.columns)
            for (start, width), (end, _) in zip(self.widths, [*self.widths[1:], (self.rows, full)]):
                if width == full:  # every row from here on is complete: copy them as they are
                    shutil.copyfileobj(f, out)
                    break
                pad = "," * (full - width)
                for _ in range(end - start):
                    out.write(f.readline()[:-2] + pad + "\r\n")  # csv ends rows with \r\n
        os.unlink(rows)
        return self.path


def export_csv(events: Iterable[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write ``<out_dir>/<namespace>.csv`` for every namespace in ``events``; the paths written.

    The files appear in ``out_dir`` together at the end, or not at all when reading fails.
    """
    with staged_folder(out_dir) as staging:
        tables: dict[str, _Table] = {}
        try:
            for event in events:
                if "metrics" not in event:
                    continue
                namespace = event.get("namespace") or event["event"]
                table = tables.get(namespace)
                if table is None:
                    table = tables[namespace] = _Table(staging, namespace, event)
                table.add(event)
        except BaseException:
            for table in tables.values():
                table.close()
            raise
        names = [table.finish().name for table in tables.values()]
    return [out_dir / name for name in names]
