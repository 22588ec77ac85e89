"""The local record: ``<output_dir>/trackkit/{config.json,metrics.jsonl,index.json,summary.json}`` (layout: record.py).

metrics.jsonl has one JSON object per record, in the order logged, for example
``{"event": "train", "seq": 12, "step": 10, "time": 1732712345.1, "metrics": {"train/loss": 2.31}}``.
Lines are buffered and written at each flush (about once a second), so a ``kill -9`` loses at
most the last second and tears at most the last line. NaN and inf are written as Python's json
writes them (NaN, Infinity). How the lines and index.json (the summary so far that the run
tools read) land on disk is appending.py's. run.json beside it is written by the layer itself.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..appending import RecordAppender
from ..hookspecs import hookimpl
from ..reading import read_events
from ..record import artifact_event, metrics_event, record_dir, write_json_atomic
from ..runinfo import RunInfo


class JsonlTracker:
    def __init__(self) -> None:
        self.record: RecordAppender | None = None  # metrics.jsonl and its index, from the start on

    @hookimpl
    def trackkit_start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        self.dir = record_dir(run.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "config.json", config)
        self.path = self.dir / "metrics.jsonl"
        if run.resumed_from_step is not None and self.path.exists():
            _truncate_after(self.path, run.resumed_from_step)
        self.record = RecordAppender(self.path)
        if run.resumed_from_step is not None:
            self.record.append({"event": "resume", "step": run.resumed_from_step})

    @hookimpl
    def trackkit_log_metrics(self, namespace: str, metrics: Mapping[str, float], step: int, timestamp: float,
                             seq: int) -> None:
        self._append(metrics_event(namespace, metrics, step, timestamp, seq))

    @hookimpl
    def trackkit_log_epoch(self, metrics: Mapping[str, float], epoch: int, step: int, timestamp: float,
                           seq: int) -> None:
        self._append(metrics_event("epoch", metrics, step, timestamp, seq, epoch))

    @hookimpl
    def trackkit_log_artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any], step: int,
                              timestamp: float, seq: int) -> None:
        self._append(artifact_event(path, name, kind, metadata, step, timestamp, seq))

    def _append(self, event: dict[str, Any]) -> None:
        assert self.record is not None, "logged before the start"
        self.record.append(event)

    @hookimpl
    def trackkit_flush(self) -> None:
        # One write per round; a failed one (a full disk) leaves no torn or doubled line, and the
        # lines are written at the next flush (appending.py).
        assert self.record is not None, "flushed before the start"
        self.record.flush()

    @hookimpl
    def trackkit_finish(self, summary: Mapping[str, Any]) -> None:
        if self.record is None:  # the start failed
            return
        self.record.close()
        self.record = None
        write_json_atomic(self.dir / "summary.json", summary)


def _truncate_after(path: Path, step: int) -> None:
    """Drop what a killed or interrupted process logged after the checkpoint a run resumes from."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:  # streamed: a record can hold millions of events
        for e in read_events(path):
            if e["event"] != "final" and e.get("step", 0) <= step:
                f.write(json.dumps(e) + "\n")
    os.replace(tmp, path)
