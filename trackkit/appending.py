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

import orjson

from . import record_index
from .record_index import RecordIndex

_BATCH = 4096  # lines held before they are written: a bound on memory between flushes


class RecordAppender:
    """Appends events to a metrics.jsonl and keeps index.json beside it up to date.

    Lines are written a batch at a time (one write per few thousand lines, at the latest at each
    ``flush()``), and folded into the index once written. A write that fails (a full disk) is cut
    back off the file, so that no line is torn or doubled, and its lines wait for the next one;
    ``flush()`` raises its error, so the layer knows what did not reach the disk.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # A resumed run continues a record: its index as saved, or rebuilt from it.
        self.index: RecordIndex = record_index.current(self.path, write=False)
        # O_APPEND: every write lands at the end, whatever a reader does.
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._events: list[dict[str, Any]] = []
        self._lines: list[str] = []

    def append(self, event: dict[str, Any]) -> None:
        self._lines.append(encode(event))
        self._events.append(event)
        if len(self._lines) >= _BATCH:
            with contextlib.suppress(OSError):  # the lines wait; the next flush says what failed
                self._write()

    def flush(self) -> None:
        assert self._fd is not None, "flushed after close"
        self._write()
        # The index is a convenience the readers check and rebuild: failing to save it (a folder
        # that turned read-only) must not count the records themselves as lost.
        with contextlib.suppress(OSError):
            record_index.save(self.index, self.path, os.fstat(self._fd))

    def close(self) -> None:
        """Write what is left where that can be done, and close the file."""
        if self._fd is None:
            return
        try:
            with contextlib.suppress(OSError):  # reported by the flush that failed before
                self.flush()
        finally:
            os.close(self._fd)
            self._fd = None

    def _write(self) -> None:
        if not self._lines:
            return
        assert self._fd is not None
        text = "\n".join(self._lines) + "\n"
        # json writes ASCII (other characters as \u escapes): a line's length is then its size.
        sizes = [len(line.encode()) + 1 for line in self._lines] if not text.isascii() else None
        data = memoryview(text.encode())
        good = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError:
            os.ftruncate(self._fd, good)
            raise
        self.index.add(self._events, sizes or [size + 1 for size in map(len, self._lines)])
        self._events, self._lines = [], []


def encode(event: dict[str, Any]) -> str:
    """One line of JSON for ``event``, as ``json.loads`` reads it back, number for number.

    orjson writes the usual event (string keys, finite numbers) several times faster than json,
    whose shortest repr of a float was most of the tracker's time. What orjson would write
    differently or refuses (NaN and inf, which it writes as null; ints beyond 64 bits; a Path in
    an artifact's metadata) goes through json's own C encoder, as ``json.dumps(event, default=str)``.
    """
    metrics = event.get("metrics")
    if type(metrics) is dict:
        fields = [value for value in event.values() if value is not metrics]
        try:
            # Flat fields only (a nested one could hide a NaN); a NaN or inf among the metrics or the
            # fields' floats makes the sum one, and a metric that is not a number makes it fail.
            if _FLAT.issuperset(map(type, fields)) and math.isfinite(
                    sum(metrics.values(), sum(value for value in fields if type(value) is float))):
                return orjson.dumps(event).decode()
        except (TypeError, OverflowError):  # orjson.JSONEncodeError is a TypeError
            pass
    return "".join(_ENCODER(event, 0)) if _ENCODER is not None else json.dumps(event, default=str)


_FLAT = frozenset({str, int, float, bool, type(None)})


def _as_text(value: Any) -> str:
    return str(value)  # json.dumps(..., default=str): an artifact's metadata may hold a Path


# json.dumps's own C encoder with json.dumps's settings, default=str (no circular check: an event is a tree);
# json.dumps makes one per call, which costs as much as writing the metrics. None without _json.
_ENCODER = c_make_encoder and c_make_encoder(
    None, _as_text, encode_basestring_ascii, None, ": ", ", ", False, False, True
)
