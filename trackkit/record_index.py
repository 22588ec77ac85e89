"""index.json: a summary so far of a run's metrics.jsonl, so that list, show and compare never read
the whole record.

The jsonl tracker folds every event it writes into a RecordIndex and saves it beside the record
at each flush (appending.py). ``current()`` trusts a saved index only as far as the record bears
it out, and the record always wins:

- the record is as the index last saw it (same size and time of last change): the index is used
  as it is, and the record is not read at all;
- the record has grown since (same inode, and the lines at both ends of what the index covers are
  unchanged): only the lines after it are read (a run still running, or killed with kill -9);
- anything else (no index, a damaged one, another format, a record rewritten by a resume, edited
  or copied): the index is rebuilt from the whole record, and saved for next time where the
  folder can be written.

The saved file carries the CRC-32 of its own body, so an index edited by hand counts as damaged.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import zlib
from collections import Counter
from collections.abc import Iterable
from operator import itemgetter
from pathlib import Path
from typing import Any

from .namespaces import FINAL, TRAIN
from .reading import METRIC_KINDS, lines

FORMAT = 1
INDEX_NAME = "index.json"
_STEPPED = METRIC_KINDS - {FINAL.name}  # kinds whose metrics sit at a step
_KIND, _METRICS, _STEP = itemgetter("event"), itemgetter("metrics"), itemgetter("step")
_BATCH = 4096  # events folded at a time when reading a record back
_SAVED = re.compile(rb'\{"crc32": (\d+), "index": ')  # how save() starts the file


class RecordIndex:
    """What the tools show of a record, folded event by event: counts, the last training step, each
    metric's last, lowest and highest value with its step, the final metrics, the best artifact."""

    def __init__(self) -> None:
        self.bytes = 0  # the record's bytes folded in: whole lines, each with its newline
        self.lines = 0
        self.head_length = 0  # bytes of the first line, and of the last one folded in: what
        self.tail_length = 0  # a reader compares to see that the record only grew since
        self.file: list[int] = []  # [inode, size, mtime_ns] of the record when saved
        self.ends: list[int] = []  # CRC-32 of its first line and of the last line covered, when saved
        self.counts: dict[str, int] = {}  # events per kind
        self.last_train_step: int | None = None
        self.last: dict[str, float] = {}  # metric -> its last value (stepped namespaces, not final/)
        self.last_step: dict[str, int] = {}
        self.low: dict[str, float] = {}  # metric -> its lowest value that is not NaN
        self.low_step: dict[str, int] = {}
        self.high: dict[str, float] = {}
        self.high_step: dict[str, int] = {}
        self.final: dict[str, float] = {}  # every final event's metrics, merged
        # "best": the last artifact with "best" in its name; "model": the last one of kind "model".
        self.artifacts: dict[str, dict[str, Any]] = {}

    def add(self, events: list[dict[str, Any]], sizes: list[int]) -> None:
        """Fold in consecutive events of the record, whose lines are ``sizes`` bytes long (newline
        included). The jsonl tracker calls it once per batch of thousands, so that the work per event
        is done by C loops over the batch (map, min, max), not by Python statements per value."""
        if not events:
            return
        if not self.lines:
            self.head_length = sizes[0]
        self.tail_length = sizes[-1]
        self.bytes += sum(sizes)
        self.lines += len(events)
        kinds = Counter(map(_KIND, events))
        for kind, count in kinds.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
        if kinds.keys() <= _STEPPED:
            stepped = events
        else:
            stepped = [e for e in events if e["event"] in _STEPPED]
            self._unstepped(e for e in events if e["event"] not in _STEPPED)
        if TRAIN.name in kinds:
            last = max(e["step"] for e in stepped if e["event"] == TRAIN.name)
            self.last_train_step = last if self.last_train_step is None else max(last, self.last_train_step)
        if stepped:
            self._fold_metrics([*map(_METRICS, stepped)], [*map(_STEP, stepped)])

    def _fold_metrics(self, metrics: list[dict[str, float]], steps: list[int]) -> None:
        for key in set().union(*metrics):
            try:
                values, at = [*map(itemgetter(key), metrics)], steps
            except KeyError:  # not logged by every event of the batch
                at = [step for step, m in zip(steps, metrics) if key in m]
                values = [m[key] for m in metrics if key in m]
            self.last[key], self.last_step[key] = values[-1], at[-1]
            if _any_nan(values):  # NaN is never the lowest or the highest
                at = [step for step, v in zip(at, values) if v == v]
                values = [v for v in values if v == v]
                if not values:
                    continue
            low, high = min(values), max(values)
            if low < self.low.get(key, math.inf):  # the first step it was reached at
                self.low[key], self.low_step[key] = low, at[values.index(low)]
            if high > self.high.get(key, -math.inf):
                self.high[key], self.high_step[key] = high, at[values.index(high)]

    def _unstepped(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            if event["event"] == FINAL.name:
                self.final.update(event["metrics"])
            elif event["event"] == "artifact":
                self._artifact(event)

    def _artifact(self, event: dict[str, Any]) -> None:
        artifact = {k: event.get(k) for k in ("name", "kind", "path", "step", "metadata")}
        if "best" in event["name"].lower():
            self.artifacts["best"] = artifact
        if event["kind"] == "model":
            self.artifacts["model"] = artifact

    @property
    def events(self) -> int:
        return self.lines

    # -- saving and loading -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **{name: getattr(self, name) for name in _TYPES}}

    @classmethod
    def from_json(cls, data: Any) -> RecordIndex | None:
        """The index saved as ``data``, or None when it is not one this trackkit wrote."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.keys() != {"format", *_TYPES}:
            return None
        if not all(isinstance(data[name], types) for name, types in _TYPES.items()):
            return None
        index = cls()
        for name in _TYPES:
            setattr(index, name, data[name])
        return index


# The saved fields and their JSON types.
_TYPES: dict[str, Any] = {
    "bytes": int, "lines": int, "head_length": int, "tail_length": int, "file": list, "ends": list,
    "counts": dict, "last_train_step": (int, type(None)), "last": dict, "last_step": dict, "low": dict,
    "low_step": dict, "high": dict, "high_step": dict, "final": dict, "artifacts": dict,
}


def _any_nan(values: list[float]) -> bool:
    try:
        return any(map(math.isnan, values))
    except OverflowError:  # an int too large for a float (JSON has no limit) is no NaN
        return any(v != v for v in values)


def index_path(record: str | os.PathLike) -> Path:
    return Path(record).with_name(INDEX_NAME)


def save(index: RecordIndex, record: str | os.PathLike, stat: os.stat_result) -> None:
    """Write ``index`` beside ``record`` (whose stat is ``stat``), replacing the old one whole."""
    record = Path(record)
    index.file = [stat.st_ino, stat.st_size, stat.st_mtime_ns]
    index.ends = list(_ends(record, index))
    body = json.dumps(index.to_json()).encode()
    # A name of its own: a reader that rebuilt the index may save it while the tracker does.
    tmp = record.with_name(f".{INDEX_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(b'{"crc32": %d, "index": %s}\n' % (zlib.crc32(body), body))
        os.replace(tmp, index_path(record))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load(record: str | os.PathLike) -> RecordIndex | None:
    """The index saved beside ``record``, or None when there is none or it is damaged."""
    try:
        text = index_path(record).read_bytes()
    except OSError:
        return None
    match = _SAVED.match(text)
    body = text[match.end():].rstrip()[:-1] if match else b""
    if not match or zlib.crc32(body) != int(match.group(1)):
        return None
    try:
        return RecordIndex.from_json(json.loads(body))
    except ValueError:
        return None


def current(record: str | os.PathLike, write: bool = True) -> RecordIndex:
    """The index of the record at path ``record`` (a metrics.jsonl) as the record stands now.

    Raises TrackkitError naming FILE:LINE where the lines it has to read hold a bad one. With
    ``write``, an index it had to rebuild is saved for next time (where the folder is writable).
    """
    try:
        stat = os.stat(record)
    except FileNotFoundError:
        return RecordIndex()  # nothing recorded (yet)
    index = load(record)
    if index is not None and _unchanged(index, stat):
        return index
    if index is not None and _only_grew(index, record, stat):
        fold(index, record)
        return index
    index = RecordIndex()
    if fold(index, record) and write:
        with contextlib.suppress(OSError):  # a read-only copy of a run is read all the same
            stat = os.stat(record)
            if stat.st_size == index.bytes:  # not when it grew meanwhile: that part is not covered
                save(index, record, stat)
    return index


def fold(index: RecordIndex, record: str | os.PathLike) -> bool:
    """Fold the lines of ``record`` after what ``index`` covers into it; whether each ended in a
    newline (an index that covers an unterminated line cannot be saved: more may follow on it)."""
    terminated, start = True, index.bytes
    events: list[dict[str, Any]] = []
    sizes: list[int] = []
    for line in lines(record, index.bytes, index.lines):
        event, end, terminated = line
        events.append(event)
        sizes.append(end - start)
        start = end
        if len(events) == _BATCH:
            index.add(events, sizes)
            events, sizes = [], []
    index.add(events, sizes)
    return terminated


def _unchanged(index: RecordIndex, stat: os.stat_result) -> bool:
    """Whether the record is what ``index`` covered when it was saved: the same size and time of
    last change (not the same inode, so that a copy made with cp -a or rsync -t keeps its index)."""
    return index.file[1:] == [stat.st_size, stat.st_mtime_ns] and index.bytes == stat.st_size


def _only_grew(index: RecordIndex, record: str | os.PathLike, stat: os.stat_result) -> bool:
    """Whether ``record`` is what ``index`` covered, with lines added after it."""
    if not index.file or index.file[0] != stat.st_ino or stat.st_size < index.bytes or index.bytes == 0:
        return False
    try:
        return list(_ends(record, index)) == index.ends
    except OSError:
        return False


def _ends(record: str | os.PathLike, index: RecordIndex) -> tuple[int, int]:
    """CRC-32 of the record's first line and of the last line ``index`` covers."""
    with open(record, "rb") as f:
        first = f.read(index.head_length)
        f.seek(index.bytes - index.tail_length)
        return zlib.crc32(first), zlib.crc32(f.read(index.tail_length))
