"""plot's reduction of a curve to the lowest and highest point per bucket of steps."""
import math
import random

from trackkit.downsample import MinMaxCurve


def test_a_curve_shorter_than_the_buckets_comes_out_exactly():
    curve = MinMaxCurve(columns=100)
    logged = [(step, 1.0 / step) for step in range(10, 500, 10)]
    for step, value in reversed(logged):  # in any order
        curve.add(step, value)
    assert list(zip(*curve.points())) == logged


def test_a_million_points_keep_every_spike_in_bounded_memory():
    rng = random.Random(0)
    curve = MinMaxCurve(columns=1000)
    spikes = {123_457: 50.0, 876_543: -40.0}
    for step in range(1, 1_000_001):
        curve.add(step, spikes.get(step, 1.0 + rng.random()))
    steps, values = curve.points()
    assert len(curve) <= 1000 and len(steps) <= 2000
    assert (max(values), min(values)) == (50.0, -40.0)
    assert steps[values.index(50.0)] == 123_457 and steps[values.index(-40.0)] == 876_543
    assert steps == sorted(steps) and steps[0] >= 1 and steps[-1] <= 1_000_000
    # the envelope of the noise is there too: every bucket spans most of [1, 2)
    assert sum(1 for v in values if v > 1.9) > 300 and sum(1 for v in values if v < 1.1) > 300


def test_steps_far_from_zero_use_every_bucket():
    curve = MinMaxCurve(columns=64)
    for step in range(2**62, 2**62 + 1000):
        curve.add(step, float(step % 7))
    assert 32 <= len(curve) <= 64  # not one bucket for everything, as buckets counted from step 0 would give


def test_values_without_a_place_on_the_axis_are_left_out():
    curve = MinMaxCurve(columns=10)
    for step, value in enumerate([1.0, math.nan, math.inf, -math.inf, 10**400, 2.0]):
        curve.add(step, value)
    assert curve.points() == ([0, 5], [1.0, 2.0])
