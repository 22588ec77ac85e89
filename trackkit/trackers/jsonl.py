"""The local record: ``<output_dir>/trackkit/{config.json,metrics.jsonl,summary.json}`` (layout: record.py).

metrics.jsonl has one JSON object per record, in the order logged, for example
``{"event": "train", "seq": 12, "step": 10, "time": 1732712345.1, "metrics": {"train/loss": 2.31}}``.
Lines are buffered and written at each flush (about once a second), so a ``kill -9`` loses at
most the last second and tears at most the last line. NaN and inf are written as Python's json
writes them (NaN, Infinity). run.json beside it is written by the layer itself, for every run.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from ..record import artifact_event, metrics_event, read_events, record_dir, write_json_atomic
from ..runinfo import RunInfo


class JsonlTracker:
    def __init__(self) -> None:
        self.fd: int | None = None  # O_APPEND: every write lands at the end, whatever a reader does
        self.lines: list[str] = []  # written at the next flush

    @hookimpl
    def trackkit_start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        self.dir = record_dir(run.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "config.json", config)
        self.path = self.dir / "metrics.jsonl"
        if run.resumed_from_step is not None and self.path.exists():
            _truncate_after(self.path, run.resumed_from_step)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if run.resumed_from_step is not None:
            self.lines.append(json.dumps({"event": "resume", "step": run.resumed_from_step}) + "\n")

    @hookimpl
    def trackkit_log_metrics(self, namespace: str, metrics: Mapping[str, float], step: int, timestamp: float,
                             seq: int) -> None:
        self.lines.append(json.dumps(metrics_event(namespace, metrics, step, timestamp, seq)) + "\n")

    @hookimpl
    def trackkit_log_epoch(self, metrics: Mapping[str, float], epoch: int, step: int, timestamp: float,
                           seq: int) -> None:
        self.lines.append(json.dumps(metrics_event("epoch", metrics, step, timestamp, seq, epoch)) + "\n")

    @hookimpl
    def trackkit_log_artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any], step: int,
                              timestamp: float, seq: int) -> None:
        event = artifact_event(path, name, kind, metadata, step, timestamp, seq)
        self.lines.append(json.dumps(event, default=str) + "\n")

    @hookimpl
    def trackkit_flush(self) -> None:
        # One write per round. On a failure (a full disk) what the write got onto the disk is cut
        # back, so that no line is torn or doubled, and the lines stay here for the next flush.
        assert self.fd is not None, "flushed before the start"
        data = memoryview("".join(self.lines).encode("utf-8"))
        good = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            os.ftruncate(self.fd, good)
            raise
        self.lines.clear()

    @hookimpl
    def trackkit_finish(self, summary: Mapping[str, Any]) -> None:
        if self.fd is None:  # the start failed
            return
        os.close(self.fd)
        self.fd = None
        write_json_atomic(self.dir / "summary.json", summary)


def _truncate_after(path: Path, step: int) -> None:
    """Drop what a killed or interrupted process logged after the checkpoint a run resumes from."""
    kept = [e for e in read_events(path) if e["event"] != "final" and e.get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in kept), encoding="utf-8")
    os.replace(tmp, path)
