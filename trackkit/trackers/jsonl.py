"""The local record: ``<output_dir>/trackkit/{config.json,metrics.jsonl,summary.json}``.

metrics.jsonl has one JSON object per logged event, for example
``{"event": "train", "step": 10, "time": 1732712345.1, "metrics": {"train/loss": 2.31}}``;
``event`` is train, eval, epoch (with ``epoch``), final, metrics (with ``namespace``), artifact
or resume. An artifact's ``step`` is that of the record before it, so that a resume drops it with
them. NaN and inf are written as Python's json writes them (NaN, Infinity).
run.json beside it is written by the layer itself (trackkit/run.py), for every run.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from ..appending import RecordAppender
from ..hookspecs import hookimpl
from ..reading import read_events
from ..record import record_dir, write_json_atomic


class JsonlTracker:
    @hookimpl
    def trackkit_start(self, run, config):
        self.dir = record_dir(run.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "config.json", config)
        self.path = self.dir / "metrics.jsonl"
        if run.resumed and self.path.exists():
            self._truncate_after(run.resumed_from_step)
        self.record = RecordAppender(self.path)  # metrics.jsonl, and index.json beside it
        self.step = run.resumed_from_step or 0  # the step of the last record written
        if run.resumed:
            self._write({"event": "resume", "step": run.resumed_from_step})

    def _truncate_after(self, step: int) -> None:
        """Drop what a killed or interrupted process logged after the checkpoint it resumes from."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:  # streamed: a record can hold millions of events
            for e in read_events(self.path):
                if e["event"] != "final" and e.get("step", 0) <= step:
                    f.write(json.dumps(e) + "\n")
        os.replace(tmp, self.path)

    def _write(self, event: dict[str, Any]) -> None:
        self.step = event.get("step", self.step)
        event["time"] = time.time()
        self.record.append(event)

    @hookimpl
    def trackkit_log_train(self, metrics, step):
        self._write({"event": "train", "step": step, "metrics": metrics})

    @hookimpl
    def trackkit_log_eval(self, metrics, step):
        self._write({"event": "eval", "step": step, "metrics": metrics})

    @hookimpl
    def trackkit_log_epoch(self, metrics, epoch, step):
        self._write({"event": "epoch", "epoch": epoch, "step": step, "metrics": metrics})

    @hookimpl
    def trackkit_log_final(self, metrics):
        self._write({"event": "final", "metrics": metrics})

    @hookimpl
    def trackkit_log_metrics(self, namespace, metrics, step):
        self._write({"event": "metrics", "namespace": namespace, "step": step, "metrics": metrics})

    @hookimpl
    def trackkit_log_artifact(self, path, name, kind, metadata):
        self._write({"event": "artifact", "step": self.step, "path": str(path), "name": name, "kind": kind,
                     "metadata": metadata})

    @hookimpl
    def trackkit_flush(self):
        self.record.flush()

    @hookimpl
    def trackkit_finish(self, status, summary):
        self.record.close()
        write_json_atomic(self.dir / "summary.json", summary)

