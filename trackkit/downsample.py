"""A curve of any length reduced, as it streams by, to what a plot of a given width can show.

The step axis is cut into at most ``columns`` equal buckets; each keeps only its lowest and its
highest point. Drawn in step order, those points trace the curve's whole envelope: a spike of a
single step stays visible, which thinning to every n-th point would drop. Where the record grows
past the buckets, neighbouring buckets merge (each then covers twice the steps), so memory is
bounded by ``columns`` whatever the length. A curve with fewer points than buckets comes out
exactly as logged.
"""
from __future__ import annotations

import math


class MinMaxCurve:
    """``add(step, value)`` in any order; ``points()`` gives the reduced curve."""

    def __init__(self, columns: int = 4096):
        self.columns = columns
        self.width = 1  # steps per bucket
        # bucket number (step // width) -> [step of the lowest, lowest, step of the highest, highest]
        self.buckets: dict[int, list[float]] = {}
        self.first = self.last = 0  # the lowest and highest bucket numbers in use

    def add(self, step: int, value: float) -> None:
        try:
            if not math.isfinite(value):  # NaN and inf have no place on a linear axis
                return
        except OverflowError:  # an int too large for a float: off any axis too
            return
        number = step // self.width
        bucket = self.buckets.get(number)
        if bucket is None:
            self._open(number, step, value)
        elif value < bucket[1]:
            bucket[0], bucket[1] = step, value
        elif value > bucket[3]:
            bucket[2], bucket[3] = step, value

    def _open(self, number: int, step: int, value: float) -> None:
        if not self.buckets:
            self.first = self.last = number
        self.first, self.last = min(self.first, number), max(self.last, number)
        self.buckets[number] = [step, value, step, value]
        while self.last - self.first >= self.columns:
            self._merge()

    def _merge(self) -> None:
        """Halve the number of buckets: each pair of neighbours becomes one."""
        self.width *= 2
        merged: dict[int, list[float]] = {}
        for number, (low_step, low, high_step, high) in self.buckets.items():
            into = merged.get(number // 2)
            if into is None:
                merged[number // 2] = [low_step, low, high_step, high]
                continue
            if low < into[1]:
                into[0], into[1] = low_step, low
            if high > into[3]:
                into[2], into[3] = high_step, high
        self.buckets = merged
        self.first, self.last = self.first // 2, self.last // 2

    def points(self) -> tuple[list[float], list[float]]:
        """Steps and values: each bucket's lowest and highest point (one where they coincide), by step."""
        steps: list[float] = []
        values: list[float] = []
        for number in sorted(self.buckets):
            low_step, low, high_step, high = self.buckets[number]
            pair = sorted({(low_step, low), (high_step, high)})
            steps += [p[0] for p in pair]
            values += [p[1] for p in pair]
        return steps, values

    def __len__(self) -> int:
        return len(self.buckets)
