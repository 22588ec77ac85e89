"""A backend that goes down loses nothing: the layer keeps its records and catches it up when it answers.

These use a file backend whose outage a test switches on and off (``trackers_for_tests.FlakyFile``);
tests/test_outages_servers.py does the same with a real MLflow server and a disk that fills up.
"""
import json
import threading
import time
from pathlib import Path

import pytest
import trackers_for_tests as t
from click.testing import CliRunner

import trackkit
from trackkit.cli import main as trackkit_cli

FLAKY = "trackers_for_tests:FlakyFile"
QUICK = dict(probe_backoff=(0.2, 0.5))  # probe a failing tracker within a second, not a minute


@pytest.fixture(autouse=True)
def _fresh():
    t.CALLS.clear()
    t.RELEASE.clear()
    yield
    t.RELEASE.set()


def flaky_rows(out: Path) -> list[dict]:
    path = out / "flaky" / "rows.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def recorded(out: Path) -> list[tuple[str, int, float]]:
    """(metric, step, value) of every metric in the local record, in order."""
    lines = (out / "trackkit" / "metrics.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return [(k, e["step"], v) for e in events if "metrics" in e for k, v in e["metrics"].items()]


def delivered(out: Path) -> list[tuple[str, int, float]]:
    return [(r["key"], r["step"], r["value"]) for r in flaky_rows(out)]


def down(out: Path, is_down: bool) -> None:
    flag = out / "flaky" / "DOWN"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch() if is_down else flag.unlink()


def log(run, steps, pause=0.0) -> float:
    """Log train records at ``steps``; the longest a log call took."""
    longest = 0.0
    for step in steps:
        began = time.perf_counter()
        run.log_train({"loss": 1.0 / step, "lr": 0.1}, step=step)
        longest = max(longest, time.perf_counter() - began)
        time.sleep(pause)
    return longest


def wait_until(condition, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_backend_down_for_a_while_gets_what_it_missed_in_order_while_the_run_goes_on(tmp_path, capfd):
    run = trackkit.start(["jsonl", FLAKY], output_dir=tmp_path, limits=trackkit.Limits(**QUICK))
    log(run, range(1, 11))
    run.flush()
    down(tmp_path, True)
    longest = log(run, range(11, 31), pause=0.02)
    began = time.perf_counter()
    assert run.flush(timeout=5) == {}  # a failing tracker does not make the loop wait
    assert time.perf_counter() - began < 0.5 and longest < 0.05
    down(tmp_path, False)
    wait_until(lambda: len(flaky_rows(tmp_path)) == 60)  # caught up during the run, not at its end
    log(run, range(31, 36))
    summary = run.finish()
    assert delivered(tmp_path) == recorded(tmp_path)  # everything, once, in order
    assert [r["step"] for r in flaky_rows(tmp_path)][::2] == list(range(1, 36))
    assert summary["trackers"]["flakyfile"] == {"state": "ok", "delivered": 35, "lost": 0}
    err = capfd.readouterr().err
    assert err.count("tracker 'flakyfile' failed in trackkit_flush: ConnectionError") == 1
    assert "tracker 'flakyfile' answers again; it caught up on" in err


def test_what_overflows_the_buffer_is_read_back_from_the_local_record(tmp_path):
    limits = trackkit.Limits(buffer_size=5, **QUICK)
    with trackkit.start(["jsonl", FLAKY], output_dir=tmp_path, limits=limits) as run:
        run.flush()  # started
        down(tmp_path, True)
        log(run, range(1, 41), pause=0.01)  # 40 records for a buffer of 5
        run.flush()
        down(tmp_path, False)
        wait_until(lambda: len(flaky_rows(tmp_path)) == 80)
        log(run, range(41, 46))
    assert delivered(tmp_path) == recorded(tmp_path)
    assert run.summary["trackers"]["flakyfile"]["lost"] == 0


def test_without_a_local_record_what_overflows_the_buffer_is_counted_lost(tmp_path, capfd):
    limits = trackkit.Limits(buffer_size=5, **QUICK)
    with trackkit.start([FLAKY], output_dir=tmp_path, limits=limits) as run:
        run.flush()  # started
        down(tmp_path, True)
        log(run, [1])
        run.flush()  # the tracker took record 1 and holds it; its flush failed: it is down
        log(run, range(2, 22))
        run.flush()
        down(tmp_path, False)
        wait_until(lambda: len(flaky_rows(tmp_path)) == 12)
    assert [r["step"] for r in flaky_rows(tmp_path)][::2] == [1, 17, 18, 19, 20, 21]  # and the buffer's 5
    assert run.summary["trackers"]["flakyfile"] == {"state": "ok", "delivered": 6, "lost": 15}
    assert "did not get 15 of the run's records (no local record" in capfd.readouterr().err


def test_a_backend_down_until_the_end_is_caught_up_later_by_sync_and_sync_twice_changes_nothing(tmp_path, capfd):
    with trackkit.start(["jsonl", FLAKY], output_dir=tmp_path, limits=trackkit.Limits(**QUICK)) as run:
        log(run, range(1, 6))
        run.flush()
        down(tmp_path, True)
        log(run, range(6, 16))
        run.log_final({"loss": 0.1})
    assert run.summary["trackers"]["flakyfile"]["lost"] == 11
    assert f"deliver them later with: trackkit sync {tmp_path} --to {FLAKY}" in capfd.readouterr().err
    assert len(flaky_rows(tmp_path)) == 10

    down(tmp_path, False)
    result = CliRunner().invoke(trackkit_cli, ["sync", str(tmp_path), "--to", FLAKY])
    assert result.exit_code == 0, result.output
    assert delivered(tmp_path) == recorded(tmp_path)
    before = (tmp_path / "flaky" / "rows.jsonl").read_bytes()
    result = CliRunner().invoke(trackkit_cli, ["sync", str(tmp_path), "--to", FLAKY])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "flaky" / "rows.jsonl").read_bytes() == before  # nothing twice


def test_a_backend_down_at_the_start_is_started_when_it_answers(tmp_path):
    down(tmp_path, True)
    with trackkit.start(["jsonl", FLAKY], output_dir=tmp_path, limits=trackkit.Limits(**QUICK)) as run:
        log(run, range(1, 6))
        time.sleep(0.5)
        down(tmp_path, False)
        wait_until(lambda: len(flaky_rows(tmp_path)) == 10)
    assert delivered(tmp_path) == recorded(tmp_path)


def test_a_record_the_backend_keeps_refusing_while_it_is_up_is_skipped_not_the_rest(tmp_path, capfd):
    limits = trackkit.Limits(max_failures=3, probe_backoff=(0.05, 0.1))
    with trackkit.start(["trackers_for_tests:Poison"], output_dir=tmp_path, limits=limits) as run:
        run.log_train({"loss": 1.0}, step=1)
        run.log_train({"bad": 1.0}, step=2)
        run.log_train({"loss": 1.0}, step=3)
        run.flush()
        wait_until(lambda: ("metrics", 3) in t.CALLS)
    assert t.CALLS == [("metrics", 1), ("metrics", 3)]
    assert run.summary["trackers"]["poison"] == {"state": "ok", "delivered": 2, "lost": 1}
    assert "refused record" in capfd.readouterr().err


class HangsOnce:
    """Hangs on its third record until the test releases it, then works."""

    def __init__(self):
        self.seen = 0

    @trackkit.hookimpl
    def trackkit_log_metrics(self, step):
        self.seen += 1
        if self.seen == 3:
            t.RELEASE.wait()
        t.CALLS.append(step)


def test_a_hung_backend_that_answers_again_gets_what_the_loop_did_not_offer_it(tmp_path):
    limits = trackkit.Limits(queue_size=4, stall_timeout=0.2, **QUICK)
    run = trackkit.start(["jsonl", "test_outages:HangsOnce"], output_dir=tmp_path, limits=limits)
    longest = log(run, range(1, 101))
    assert longest < 1.0  # waited for it once, at most the stall timeout, then went on
    run.flush()
    t.RELEASE.set()
    wait_until(lambda: len(t.CALLS) == 100)
    run.finish()
    assert t.CALLS == list(range(1, 101))
    assert run.summary["trackers"]["hangsonce"]["lost"] == 0


def test_an_artifact_deleted_before_a_failing_tracker_got_to_it_still_reaches_it(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step-10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.pt").write_bytes(b"weights")
    seen = []

    class Uploads(t.FlakyFile):
        @trackkit.hookimpl
        def trackkit_log_artifact(self, path, name):
            self.rows.append({"key": name, "step": 0, "value": (path / "model.pt").read_text(), "seq": 0, "time": 0})
            seen.append(path)

    globals()["Uploads"] = Uploads
    with trackkit.start(["jsonl", "test_outages:Uploads"], output_dir=tmp_path, limits=trackkit.Limits(**QUICK)) as run:
        run.flush()
        down(tmp_path, True)
        run.log_artifact(checkpoint, name="best", kind="model")
        run.flush()
        for file in checkpoint.iterdir():  # the trainer rotates it away
            file.unlink()
        checkpoint.rmdir()
        down(tmp_path, False)
        wait_until(lambda: flaky_rows(tmp_path))
    assert flaky_rows(tmp_path)[0]["value"] == "weights"
    assert not (tmp_path / "trackkit" / "staged").exists()  # the staged copy is gone once delivered


def test_flush_after_finish_returns_at_once(tmp_path):
    run = trackkit.start(["jsonl"], output_dir=tmp_path)
    run.finish()
    began = time.perf_counter()
    assert run.flush(timeout=30) == {}
    assert time.perf_counter() - began < 0.1


def test_threads_still_alive_after_finish_do_not_block_the_next_run(tmp_path):
    # A failing tracker's probes stop with the run: nothing keeps probing a finished run.
    with trackkit.start(["jsonl", FLAKY], output_dir=tmp_path / "a", limits=trackkit.Limits(**QUICK)) as run:
        run.flush()
        down(tmp_path / "a", True)
        log(run, range(1, 4))
    time.sleep(0.3)
    assert not [th for th in threading.enumerate() if th.name == "trackkit-flakyfile"]


def test_a_disk_that_fills_and_frees_space_again_costs_tensorboard_nothing(tmp_path, small_filesystem, capfd):
    from conftest import fill
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    options = {"tensorboard_dir": str(small_filesystem)}
    with trackkit.start(["jsonl", "tensorboard"], output_dir=tmp_path, options=options,
                        limits=trackkit.Limits(**QUICK)) as run:
        log(run, range(1, 11))
        run.flush()
        fill(small_filesystem)
        log(run, range(11, 400))  # about 40 KiB of events that do not fit
        run.flush()
        (small_filesystem / "filler").unlink()  # space again
        log(run, range(400, 411))
        wait_until(lambda: all(worker.state == "ok" for worker in run._workers))
    board = EventAccumulator(str(small_filesystem), size_guidance={"scalars": 0})
    board.Reload()
    steps = [e.step for e in board.Scalars("train/loss")]
    assert steps == list(range(1, 411))  # every step once, in order: nothing lost, nothing twice
    assert run.summary["trackers"]["tensorboard"] == {"state": "ok", "delivered": 410, "lost": 0}
    err = capfd.readouterr().err
    assert "tracker 'tensorboard' failed in trackkit_flush: OSError: [Errno 28] No space left on device" in err
    assert "tracker 'tensorboard' answers again" in err
