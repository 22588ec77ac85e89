"""Property-based tests of the Run API: whatever a loop passes either raises a clear TypeError or
ValueError at the call, or comes back exactly from the local record."""
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trackkit

names = st.one_of(st.text(max_size=8), st.sampled_from(["loss", "train/loss", "eval/loss", "a/b", "", "x\n"]),
                  st.integers(), st.none())
values = st.one_of(st.floats(), st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.text(max_size=3),
                   st.none(), st.complex_numbers(), st.lists(st.floats(), max_size=2))
steps = st.one_of(st.integers(min_value=-3, max_value=2**64), st.floats(), st.text(max_size=2), st.none(),
                  st.booleans())
metric_dicts = st.one_of(st.dictionaries(names, values, max_size=4), st.lists(st.floats(), max_size=2), st.none())


def acceptable(metrics, step) -> bool:
    """What the contract accepts: a mapping of printable names (in ``train/`` or no namespace) to
    plain numbers, at a non-negative int step."""
    if not isinstance(metrics, dict) or type(step) is not int or not 0 <= step < 2**63:
        return False
    full = []
    for key, value in metrics.items():
        if not isinstance(key, str) or type(value) not in (int, float, bool):
            return False
        name = key[len("train/"):] if key.startswith("train/") else key
        if not name or "/" in name or not name.isprintable():
            return False
        full.append(name)
    return len(set(full)) == len(full)


def same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(metric_dicts, steps), min_size=1, max_size=6))
def test_a_log_call_raises_clearly_or_round_trips_exactly(tmp_path_factory, calls):
    out = tmp_path_factory.mktemp("run")
    kept = []
    with trackkit.start(["jsonl"], output_dir=out) as run:
        for metrics, step in calls:
            if acceptable(metrics, step):
                run.log_train(metrics, step=step)
                kept.append(({"train/" + k.removeprefix("train/"): int(v) if type(v) is bool else v
                              for k, v in metrics.items()}, step))
            else:
                with pytest.raises((TypeError, ValueError)):
                    run.log_train(metrics, step=step)
    lines = (out / "trackkit" / "metrics.jsonl").read_text().splitlines()
    got = [(e["metrics"], e["step"]) for e in map(json.loads, lines)]
    assert len(got) == len(kept)
    for (got_metrics, got_step), (want_metrics, want_step) in zip(got, kept):
        assert got_step == want_step and list(got_metrics) == list(want_metrics)
        assert all(same(want_metrics[k], got_metrics[k]) for k in want_metrics), (got_metrics, want_metrics)
