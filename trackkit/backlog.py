"""What a tracker that fell behind missed, in order: the newest records in memory, the older ones in
the local record.

While a tracker is failing (its backend is down), its worker keeps taking its records off the
queue so that the training loop never waits, and keeps them here. Memory holds at most ``limit``
records; older ones are left to the local record (``metrics.jsonl``, which numbers every record
with ``seq``) and read back from it when the tracker catches up. Without a local record they are
counted as lost. Eviction is strictly oldest first, so the local record's part always comes before
memory's, and the replay is in the order logged.
"""
from __future__ import annotations

import bisect
import json
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .record import Artifact, Record, from_event

CHUNK = 1000  # records read back from the local record at a time
_PROBE_WINDOW = 1 << 16  # bytes: below this the search for a record number reads on from where it is


class Backlog:
    def __init__(self, limit: int, local_record: Path | None, release: Callable[[Record | Artifact], None]):
        self._memory: deque[Record | Artifact] = deque()
        self._limit = max(1, limit)
        self._local = local_record
        self._release = release  # frees an artifact's staged copy: read back from the local record, it has none
        self._ranges: list[list[int]] = []  # [first, last] record numbers left to the local record, in order
        self._loaded: deque[Record | Artifact] = deque()  # read back from the local record, not yet delivered
        self.lost = 0  # records neither in memory nor found in a local record

    def __len__(self) -> int:
        return len(self._memory) + len(self._loaded) + sum(last - first + 1 for first, last in self._ranges)

    def add(self, record: Record | Artifact) -> None:
        self._memory.append(record)
        while len(self._memory) > self._limit:
            self._leave_to_local_record(self._memory.popleft())

    def add_numbers(self, first: int, last: int) -> None:
        """Records ``first`` to ``last`` that never reached this tracker's queue (it hung meanwhile)."""
        if self._local is None:
            self.lost += last - first + 1
        else:
            self._insert_range(first, last)

    def peek(self) -> Record | Artifact | None:
        """The missed record logged first, or None when there is none."""
        if not self._loaded and self._ranges:
            self._load_chunk()
        if self._loaded and (not self._memory or self._loaded[0].seq < self._memory[0].seq):
            return self._loaded[0]
        return self._memory[0] if self._memory else None

    def pop(self) -> Record | Artifact:
        """Remove what ``peek`` returned."""
        if self._loaded and (not self._memory or self._loaded[0].seq < self._memory[0].seq):
            return self._loaded.popleft()
        return self._memory.popleft()

    def drop_all(self) -> list[Record | Artifact]:
        """Give up on everything (the run ends): the records still in memory, for the caller to free."""
        left = [*self._loaded, *self._memory]
        self.lost += len(self)
        self._memory.clear()
        self._loaded.clear()
        self._ranges.clear()
        return left

    # -- the local record's part -------------------------------------------------------------------
    def _leave_to_local_record(self, record: Record | Artifact) -> None:
        if isinstance(record, Artifact):
            self._release(record)  # read back from the local record, it names its staged copy by number
        if self._local is None:
            self.lost += 1
        else:
            self._insert_range(record.seq, record.seq)

    def _insert_range(self, first: int, last: int) -> None:
        """Add numbers ``first`` to ``last``, keeping the ranges sorted and merged."""
        ranges = self._ranges
        if ranges and ranges[-1][1] + 1 >= first >= ranges[-1][0]:  # the usual case: right after the last
            ranges[-1][1] = max(ranges[-1][1], last)
            return
        bisect.insort(ranges, [first, last])
        merged: list[list[int]] = []
        for lo, hi in ranges:
            if merged and merged[-1][1] + 1 >= lo:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._ranges[:] = merged

    def _load_chunk(self) -> None:
        """Read the next records of the ranges back from the local record; those not there are lost."""
        assert self._local is not None
        first, last = self._ranges[0]
        found: dict[int, Record | Artifact] = {}
        try:
            for event in _events_from(self._local, first):
                seq = event.get("seq")
                if isinstance(seq, int) and first <= seq <= last:
                    record = from_event(event)
                    if record is not None:
                        found[seq] = record
                    if len(found) >= CHUNK:
                        break
                elif isinstance(seq, int) and seq > last + CHUNK:  # well past the range: the rest is not there
                    break
        except OSError:
            pass  # the local record is gone: what it held is lost
        if len(found) >= CHUNK:
            upto = max(found)
            self._ranges[0][0] = upto + 1
            if self._ranges[0][0] > last:
                self._ranges.pop(0)
            self.lost += (upto - first + 1) - len(found)
        else:
            self._ranges.pop(0)
            self.lost += (last - first + 1) - len(found)
        self._loaded.extend(found[seq] for seq in sorted(found))


def _events_from(path: Path, seq: int):
    """The local record's events from about record number ``seq`` on (lines are in logging order)."""
    with open(path, "rb") as f:
        f.seek(_offset_before(f, seq))
        if f.tell():
            f.readline()  # the rest of a line cut by the seek
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if isinstance(event, dict):
                yield event


def _offset_before(f, seq: int) -> int:
    """An offset at or before the first line numbered ``seq``, found by bisection."""
    low, high = 0, f.seek(0, os.SEEK_END)
    while high - low > _PROBE_WINDOW:
        middle = (low + high) // 2
        f.seek(middle)
        f.readline()
        number = None
        for line in f:  # the first line after middle that has a number (markers have none)
            try:
                number = json.loads(line).get("seq")
            except (ValueError, AttributeError):
                continue
            if isinstance(number, int) or f.tell() > high:
                break
        if isinstance(number, int) and number < seq:
            low = middle
        else:
            high = middle
    return max(0, low - _PROBE_WINDOW)  # lines of two threads can be a little out of order
