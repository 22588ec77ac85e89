"""Properties of the record reader, over inputs hypothesis makes up.

- Any bytes appended to, or inserted anywhere in, a metrics.jsonl give either the events before
  the damage or one ``Error: FILE:LINE: ...`` line (exit code 2, nothing written): never a traceback.
- Any events the Run API accepts come back exactly from metrics.jsonl and from ``runs export``.
- The jsonl tracker's encoder writes one line that json reads back as it reads json.dumps's, number for number.
"""
import csv
import json
import math
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import trackkit
from trackkit.appending import encode
from trackkit.cli import main as trackkit_cli
from trackkit.errors import TrackkitError
from trackkit.reading import read_events

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cli(*args):
    return CliRunner().invoke(trackkit_cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("recorded") / "run"
    with trackkit.start(["jsonl"], output_dir=out, handle_signals=False) as run:
        for step in range(1, 13):
            run.log_train({"loss": 1.0 / step, "lr": 0.5}, step=step)
            if step % 4 == 0:
                run.log_eval({"loss": 2.0 / step}, step=step)
        run.log_final({"best_loss": 0.1})
    return out


def events_before(data: bytes, position: int) -> int:
    """How many whole lines of ``data`` end before byte ``position``."""
    return data[:position].count(b"\n")


def check_damaged(original_run: Path, data: bytes, position: int) -> None:
    work = Path(tempfile.mkdtemp())
    try:
        run = shutil.copytree(original_run, work / "run")
        metrics = run / "trackkit" / "metrics.jsonl"
        original = metrics.read_bytes()
        kept = events_before(original, position)
        metrics.write_bytes(original[:position] + data + original[position:])
        expected = list(read_events(original_run / "trackkit" / "metrics.jsonl"))[:kept]
        try:
            assert list(read_events(metrics))[:kept] == expected
        except TrackkitError as exc:
            assert str(exc).startswith(f"{metrics}:")
        for command, written in ((["runs", "show", run], None), (["runs", "export", run, "-o", work / "csv"],
                                                                   work / "csv")):
            result = cli(*command)
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            if result.exit_code:
                (line,) = result.output.splitlines()
                assert result.exit_code == 2 and line.startswith(f"Error: {metrics}:"), result.output
                assert written is None or not written.exists()
    finally:
        shutil.rmtree(work)


@SETTINGS
@given(data=st.binary(min_size=1, max_size=200))
def test_bytes_appended_give_the_events_before_or_one_error_line(recorded, data):
    check_damaged(recorded, data, len((recorded / "trackkit" / "metrics.jsonl").read_bytes()))


@SETTINGS
@given(data=st.binary(min_size=1, max_size=200), where=st.floats(0, 1))
def test_bytes_inserted_anywhere_give_the_events_before_or_one_error_line(recorded, data, where):
    size = len((recorded / "trackkit" / "metrics.jsonl").read_bytes())
    check_damaged(recorded, data, int(where * size))


@SETTINGS
@given(text=st.text(min_size=1, max_size=80), where=st.floats(0, 1))
def test_text_that_looks_like_json_inserted_anywhere_too(recorded, text, where):
    # Mostly valid UTF-8 with braces, quotes and digits: it gets past the JSON parser more often.
    size = len((recorded / "trackkit" / "metrics.jsonl").read_bytes())
    check_damaged(recorded, ('{"event": "train", "step": ' + text).encode(), int(where * size))


# -- round trip --------------------------------------------------------------------------------------
NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/", exclude_categories=["Cs", "Cc"]),
                min_size=1, max_size=10)
VALUES = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True))
METRICS = st.dictionaries(NAMES, VALUES, min_size=1, max_size=5)
STEPS = st.integers(min_value=0, max_value=2**63 - 1)
CALLS = st.lists(st.one_of(
    st.tuples(st.just("train"), METRICS, STEPS),
    st.tuples(st.just("eval"), METRICS, STEPS),
    st.tuples(st.just("metrics"), METRICS, STEPS),
    st.tuples(st.just("epoch"), METRICS, STEPS),
    st.tuples(st.just("final"), METRICS, st.none()),
), min_size=1, max_size=12)


def log(run, kind, metrics, step):
    if kind == "final":
        run.log_final(metrics)
    elif kind == "metrics":
        run.log_metrics("mine", metrics, step=step)
    elif kind == "epoch":
        run.log_epoch(metrics, epoch=7, step=step)
    else:
        getattr(run, f"log_{kind}")(metrics, step=step)


def same(a, b) -> bool:
    """Equal as recorded numbers: the same type and value, NaN equal to NaN, -0.0 apart from 0.0."""
    return type(a) is type(b) and (repr(a) == repr(b))


def cell(text: str) -> int | float:
    return int(text) if text.lstrip("-").isdigit() else float(text)


@SETTINGS
@given(calls=CALLS)
def test_events_the_run_api_accepts_round_trip_through_the_record_and_export(calls):
    work = Path(tempfile.mkdtemp())
    try:
        accepted = []
        with trackkit.start(["jsonl"], output_dir=work / "run", handle_signals=False) as run:
            for call in calls:
                try:
                    log(run, *call)
                except (TypeError, ValueError):  # refused at the call, as the Run API may: not recorded
                    continue
                accepted.append(call)
        calls = accepted
        recorded = [e for e in read_events(work / "run" / "trackkit" / "metrics.jsonl")]
        assert [e["event"] for e in recorded] == [kind for kind, _, _ in calls]
        for event, (kind, metrics, step) in zip(recorded, calls):
            namespace = "mine" if kind == "metrics" else kind
            assert event.get("step") == step or kind == "final"
            assert event["metrics"].keys() == {f"{namespace}/{k}" for k in metrics}
            assert all(same(event["metrics"][f"{namespace}/{k}"], v) for k, v in metrics.items())
        if not calls:
            return
        result = cli("runs", "export", work / "run", "-o", work / "csv")
        assert result.exit_code == 0, result.output
        for namespace in {"mine" if kind == "metrics" else kind for kind, _, _ in calls}:
            with open(work / "csv" / f"{namespace}.csv", newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            logged = [e for e in recorded if (e.get("namespace") or e["event"]) == namespace]
            assert len(rows) == len(logged)
            for row, event in zip(rows, logged):
                assert all(same(cell(row[k]), v) for k, v in event["metrics"].items())
                assert all(row[k] == "" for k in row if k.startswith(namespace + "/") and k not in event["metrics"])
                assert "step" not in row or int(row["step"]) == event["step"]
    finally:
        shutil.rmtree(work)


# -- the jsonl tracker's encoder -------------------------------------------------------------------
ANY_VALUE = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=4))


NESTED_VALUE = st.recursive(ANY_VALUE, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(kind=st.one_of(st.sampled_from(["train", "metrics", "final"]), st.text(max_size=3)),
       fields=st.dictionaries(st.text(max_size=6), NESTED_VALUE, max_size=4),
       metrics=st.dictionaries(st.text(max_size=8), ANY_VALUE, max_size=6),
       namespace=st.one_of(st.none(), st.text(max_size=5)), order=st.randoms())
@example(kind="train", fields={"": math.inf}, metrics={}, namespace=None, order=random.Random(0))
@example(kind="train", fields={"meta": [math.nan]}, metrics={"a": 1.0}, namespace=None, order=random.Random(0))
def test_the_trackers_encoder_writes_one_line_that_reads_back_as_json_dumps_would(kind, fields, metrics, namespace,
                                                                                   order):
    items = [("event", kind), ("metrics", metrics), *fields.items()] + ([("namespace", namespace)] if namespace else [])
    order.shuffle(items)
    event = dict(items)
    line = encode(event)
    assert "\n" not in line
    # repr tells 1 from 1.0 and -0.0 from 0.0, and shows NaN as nan on both sides (NaN != NaN).
    assert repr(json.loads(line)) == repr(json.loads(json.dumps(event)))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.floats(), st.integers(min_value=-2**70, max_value=2**70)), max_size=8),
       time=st.floats())
def test_a_metrics_event_of_any_numbers_is_read_back_exactly(values, time):
    metrics = {f"train/m{i}": v for i, v in enumerate(values)}
    event = {"event": "train", "seq": 1, "step": 2, "time": time, "metrics": metrics}
    assert repr(json.loads(encode(event))) == repr(event)
