"""Writing metrics.jsonl: one line per event, and index.json kept up to date beside it.

The jsonl tracker decides what an event holds; this module owns how it lands on disk, at a cost
paid once per record on the tracker's thread.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from . import record_index
from .record_index import RecordIndex

_BATCH = 4096  # lines held before they are written: a bound on memory between flushes


class RecordAppender:
    """Appends events to a metrics.jsonl; ``flush()`` puts them on disk and saves index.json.

    Lines are written, and folded into the index, a batch at a time: one write and one fold per
    few thousand events costs far less than one per event, and a kill -9 loses what it would
    have lost anyway, the records since the last flush.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # A resumed run continues a record: its index as saved, or rebuilt from it.
        self.index: RecordIndex = record_index.current(self.path, write=False)
        self._file = open(self.path, "a", encoding="utf-8")
        self._events: list[dict[str, Any]] = []
        self._lines: list[str] = []

    def append(self, event: dict[str, Any]) -> None:
        self._lines.append(encode(event))
        self._events.append(event)
        if len(self._lines) >= _BATCH:
            self._write()

    def flush(self) -> None:
        self._write()
        self._file.flush()
        # The index is a convenience the readers check and rebuild: failing to save it (a folder
        # that turned read-only) must not count the records themselves as lost.
        with contextlib.suppress(OSError):
            record_index.save(self.index, self.path, os.fstat(self._file.fileno()))

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def _write(self) -> None:
        if not self._lines:
            return
        self._file.write("\n".join(self._lines) + "\n")
        # json's output is ASCII (other characters come out as \u escapes): a line's length is its size.
        self.index.add(self._events, [size + 1 for size in map(len, self._lines)])
        self._events, self._lines = [], []


def encode(event: dict[str, Any]) -> str:
    """``json.dumps(event)``, faster: most events are of a few shapes (the same fields, kind and
    metric names step after step) whose numbers are finite, and one %-format string per shape
    writes them in a single C call. Any other event goes through json's own C encoder."""
    metrics = event.get("metrics")
    if type(metrics) is dict:
        try:
            shape = (tuple(event), event.get("event"), event.get("namespace"), tuple(metrics))
            template = _TEMPLATES.get(shape)
            if template is None and len(_TEMPLATES) < 1000:  # a loop that invents names every step: no cache
                template = _TEMPLATES[shape] = _Template(event)
            if template is not None:
                values = (*map(event.__getitem__, template.before), *metrics.values(),
                          *map(event.__getitem__, template.after))
                if _NUMBERS.issuperset(map(type, values)) and all(map(math.isfinite, values)):
                    return template.format % values
        except (TypeError, OverflowError):  # an unhashable kind; an int too large for a float
            pass
    return "".join(_ENCODER(event, 0)) if _ENCODER is not None else json.dumps(event)


class _Template:
    """The %-format string of one shape of event: its kind and namespace written in, a %r for
    every other field and every metric (repr is how json writes a finite float or an int)."""

    def __init__(self, event: dict[str, Any]):
        self.before: list[str] = []  # fields before "metrics", then after it, in the event's order
        self.after: list[str] = []
        parts = []
        fields = self.before
        for key, value in event.items():
            name = _literal(key) + ": "
            if key == "metrics":
                parts.append(name + "{" + ", ".join(_literal(k) + ": %r" for k in value) + "}")
                fields = self.after
            elif key in ("event", "namespace"):
                parts.append(name + _literal(value))
            else:
                parts.append(name + "%r")
                fields.append(key)
        self.format = "{" + ", ".join(parts) + "}"


def _literal(value: Any) -> str:
    return json.dumps(value).replace("%", "%%")


def _unserialisable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_NUMBERS = frozenset({int, float})
_TEMPLATES: dict[tuple, _Template | None] = {}
# json.dumps's own C encoder with json.dumps's settings (no circular check: an event is a tree);
# json.dumps makes one per call, which costs as much as writing the metrics. None without _json.
_ENCODER = c_make_encoder and c_make_encoder(
    None, _unserialisable, encode_basestring_ascii, None, ": ", ", ", False, False, True
)
