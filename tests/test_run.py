"""The Run API and dispatch: order, isolation, back-pressure, statuses, signals."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
import trackers_for_tests as t

import trackkit
from trackkit.reading import read_events


@pytest.fixture(autouse=True)
def _fresh_calls():
    t.CALLS.clear()
    t.RELEASE.clear()
    yield
    t.RELEASE.set()  # let any hanging worker thread end


def records(out):
    return list(read_events(out / "trackkit" / "metrics.jsonl"))


def run_json(out):
    return json.loads((out / "trackkit" / "run.json").read_text())


def test_tracker_by_path_receives_every_namespace_in_order(tmp_path):
    with trackkit.start(["trackers_for_tests:Recording"], output_dir=tmp_path, config={"lr": 0.1}) as run:
        for step in (1, 2):
            run.log_train({"loss": 3.0 - step, "train/learning_rate": 0.1}, step=step)
        run.log_eval({"loss": 1.5}, step=2)
        run.log_epoch({"val_loss": 1.5}, epoch=1, step=2)
        run.log_metrics("system", {"cpu_percent": 50}, step=2)
        (tmp_path / "best.pt").write_bytes(b"x")
        run.log_artifact(tmp_path / "best.pt", name="best", kind="model", metadata={"step": 2})
        run.log_final({"best_perplexity": 4.5})
    assert t.CALLS == [
        ("start", tmp_path.name, {"lr": 0.1}),
        ("train", 1, {"train/loss": 2.0, "train/learning_rate": 0.1}),
        ("train", 2, {"train/loss": 1.0, "train/learning_rate": 0.1}),
        ("eval", 2, {"eval/loss": 1.5}),
        ("epoch", 1, 2, {"epoch/val_loss": 1.5}),
        ("metrics", "system", 2, {"system/cpu_percent": 50}),
        ("artifact", "best", "model", {"step": 2}),
        ("final", {"final/best_perplexity": 4.5}),
        ("finish", "success"),
    ]


def test_tensors_are_converted_for_trackers_and_nan_is_kept_and_flagged_once(tmp_path, capfd):
    with trackkit.start(["jsonl"], output_dir=tmp_path) as run:
        run.log_train({"loss": torch.tensor(2.5), "tokens": torch.tensor(7)}, step=1)
        run.log_train({"loss": float("nan")}, step=2)
        run.log_train({"loss": float("nan")}, step=3)
        run.log_eval({"loss": float("inf")}, step=3)
    train = [e for e in records(tmp_path) if e["event"] == "train"]
    assert train[0]["metrics"] == {"train/loss": 2.5, "train/tokens": 7}
    assert math.isnan(train[1]["metrics"]["train/loss"]) and math.isnan(train[2]["metrics"]["train/loss"])
    err = capfd.readouterr().err
    assert err.count("train/loss is nan") == 1
    assert err.count("eval/loss is inf") == 1


def test_non_numeric_value_raises_at_call_site_naming_the_key(tmp_path):
    with trackkit.start(["jsonl"], output_dir=tmp_path) as run:
        with pytest.raises(TypeError, match="'train/learning_rate'"):
            run.log_train({"loss": 1.0, "learning_rate": "3e-4"}, step=1)
        with pytest.raises(TypeError, match="'train/loss'"):
            run.log_train({"loss": torch.ones(3)}, step=1)
        with pytest.raises(ValueError, match="eval/loss"):
            run.log_train({"eval/loss": 1.0}, step=1)
        run.log_train({"loss": 1.0}, step=1)
    assert [e["step"] for e in records(tmp_path) if e["event"] == "train"] == [1]


def test_failing_tracker_is_reported_once_and_the_others_get_everything(tmp_path, capfd):
    with trackkit.start(["jsonl", "trackers_for_tests:Failing"], output_dir=tmp_path) as run:
        for step in range(1, 21):
            run.log_train({"loss": 1.0 / step}, step=step)
    assert [e["step"] for e in records(tmp_path) if e["event"] == "train"] == list(range(1, 21))
    err = capfd.readouterr().err
    assert err.count("tracker 'failing' failed in trackkit_log_train: RuntimeError: backend down") == 1
    assert f"did not get 20 of the run's records; deliver them later with: trackkit sync {tmp_path} " \
           "--to trackers_for_tests:Failing" in err
    health = run_json(tmp_path)["tracker_health"]
    assert health["failing"] == {"state": "failed", "delivered": 0, "lost": 20}
    assert health["jsonl"] == {"state": "ok", "delivered": 20, "lost": 0}
    assert run.summary["trackers"]["failing"]["lost"] == 20


def test_slow_tracker_does_not_stall_the_caller_and_finish_reports_what_is_left(tmp_path, capfd):
    run = trackkit.start(["jsonl", "trackers_for_tests:Slow"], output_dir=tmp_path)
    began = time.perf_counter()
    for step in range(1, 11):
        run.log_train({"loss": 1.0}, step=step)
    assert time.perf_counter() - began < 0.5  # ten records of a 1 s/record tracker
    began = time.perf_counter()
    summary = run.finish(timeout=1.5)
    assert time.perf_counter() - began < 3.5
    assert summary["trackers"]["slow"]["lost"] >= 8
    assert summary["trackers"]["jsonl"] == {"state": "ok", "delivered": 10, "lost": 0}
    assert "finish: tracker 'slow' still had" in capfd.readouterr().err
    assert len([e for e in records(tmp_path) if e["event"] == "train"]) == 10


def test_full_queue_makes_the_caller_wait_and_loses_nothing(tmp_path):
    limits = trackkit.Limits(queue_size=2)
    with trackkit.start(["trackers_for_tests:Recording"], output_dir=tmp_path, limits=limits) as run:
        for step in range(1, 201):
            run.log_train({"loss": 1.0}, step=step)
    assert [c[1] for c in t.CALLS if c[0] == "train"] == list(range(1, 201))
    assert run.summary["trackers"]["recording"]["lost"] == 0


def test_threads_logging_at_once_lose_nothing_and_are_counted_exactly(tmp_path):
    # Logging takes no lock: four threads (a training loop, a system sampler, a user's own) log
    # at once, through a queue small enough that the caller checks for room every 4th record.
    limits = trackkit.Limits(queue_size=64)
    run = trackkit.start(["jsonl", "trackers_for_tests:Recording"], output_dir=tmp_path, limits=limits)

    def log(namespace):
        for step in range(1, 2001):
            run.log_metrics(namespace, {"value": float(step)}, step=step)

    threads = [threading.Thread(target=log, args=(f"thread{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = run.finish()
    assert summary["trackers"]["recording"] == {"state": "ok", "delivered": 8000, "lost": 0}
    assert summary["trackers"]["jsonl"] == {"state": "ok", "delivered": 8000, "lost": 0}
    for i in range(4):
        steps = [c[2] for c in t.CALLS if c[0] == "metrics" and c[1] == f"thread{i}"]
        assert steps == list(range(1, 2001))  # each thread's records once each, in its order
    assert len([e for e in records(tmp_path) if e["event"] == "metrics"]) == 8000


def test_a_missing_or_broken_backend_is_one_clear_error_at_start(tmp_path, monkeypatch):
    with pytest.raises(trackkit.TrackkitError, match="needs the 'no_such_backend_for_tests' package"):
        trackkit.start(["trackers_for_tests:NeedsMissing"], output_dir=tmp_path / "a")
    (tmp_path / "broken_backend_for_tests.py").write_text("raise ImportError('libfoo.so: cannot open')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(trackkit.TrackkitError, match="cannot import 'broken_backend_for_tests': libfoo.so"):
        trackkit.start(["trackers_for_tests:NeedsBroken"], output_dir=tmp_path / "b")


def test_hanging_tracker_is_switched_off_after_the_stall_timeout(tmp_path, capfd):
    limits = trackkit.Limits(queue_size=3, stall_timeout=0.5)
    run = trackkit.start(["jsonl", "trackers_for_tests:Hanging"], output_dir=tmp_path, limits=limits)
    began = time.perf_counter()
    for step in range(1, 31):
        run.log_train({"loss": 1.0}, step=step)
    assert time.perf_counter() - began < 2.0
    summary = run.finish(timeout=1.0)
    assert summary["trackers"]["hanging"]["state"] == "stalled"
    assert summary["trackers"]["hanging"]["lost"] >= 26
    assert "tracker 'hanging' has not taken a record" in capfd.readouterr().err
    assert len([e for e in records(tmp_path) if e["event"] == "train"]) == 30


def test_ctrl_c_inside_the_block_records_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with trackkit.start(["jsonl"], output_dir=tmp_path) as run:
            run.log_train({"loss": 1.0}, step=1)
            raise KeyboardInterrupt
    assert run_json(tmp_path)["status"] == "interrupted"
    assert json.loads((tmp_path / "trackkit" / "summary.json").read_text())["status"] == "interrupted"


def test_exception_inside_the_block_records_failed(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with trackkit.start(["jsonl"], output_dir=tmp_path):
            raise ZeroDivisionError("1 / 0")
    assert run_json(tmp_path)["status"] == "failed"


SCRIPT = """
import sys, time, trackkit
run = trackkit.start(["jsonl"], output_dir=sys.argv[1])
for step in range(1, 100000):
    run.log_train({{"loss": 1.0 / step}}, step=step)
    print(step, flush=True)
    {ending}
"""


def run_script(tmp_path, ending, signal_after=None):
    code = textwrap.dedent(SCRIPT.format(ending=ending))
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    printed = []
    if signal_after is not None:
        while len(printed) < signal_after:
            printed.append(int(proc.stdout.readline()))
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    printed += [int(line) for line in out.split()]
    return proc.returncode, printed, err


def test_sigterm_records_interrupted_and_keeps_every_metric_logged_before_it(tmp_path):
    code, printed, err = run_script(tmp_path, "time.sleep(0.01)", signal_after=25)
    assert code == 143, err
    assert run_json(tmp_path)["status"] == "interrupted"
    logged = [e["step"] for e in records(tmp_path) if e["event"] == "train"]
    assert logged[: len(printed)] == printed and len(printed) >= 25


def test_leaving_without_finish_records_success_or_failed_at_exit(tmp_path):
    code, printed, _ = run_script(tmp_path / "ok", "if step == 5: break")
    assert code == 0 and run_json(tmp_path / "ok")["status"] == "success"
    assert len(records(tmp_path / "ok")) == 5
    code, _, err = run_script(tmp_path / "bad", "if step == 5: raise RuntimeError('boom')")
    assert code == 1 and "RuntimeError: boom" in err
    assert run_json(tmp_path / "bad")["status"] == "failed"


def test_other_ranks_get_a_run_that_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    run = trackkit.start(["jsonl"], output_dir=tmp_path)
    assert isinstance(run, trackkit.NullRun)
    with run:
        run.log_train({"loss": 1.0}, step=1)
    assert not (tmp_path / "trackkit").exists()


def test_none_gives_a_run_that_does_nothing(tmp_path):
    assert isinstance(trackkit.start("none", output_dir=tmp_path), trackkit.NullRun)


def test_misspelt_hook_is_refused_at_start(tmp_path):
    with pytest.raises(Exception, match="trackkit_log_trian"):
        trackkit.start(["trackers_for_tests:Misspelt"], output_dir=tmp_path)


def test_finished_run_refuses_more_records(tmp_path):
    run = trackkit.start(["jsonl"], output_dir=tmp_path)
    run.finish()
    assert run.finish("failed")["status"] == "success"  # a second finish changes nothing
    with pytest.raises(RuntimeError, match="already finished"):
        run.log_train({"loss": 1.0}, step=1)


def test_a_tensor_changed_in_place_after_logging_is_recorded_as_logged(tmp_path):
    running = torch.tensor(5.0)
    with trackkit.start(["jsonl"], output_dir=tmp_path) as run:
        run.log_train({"loss": running}, step=1)
        running.zero_()
    assert records(tmp_path)[0]["metrics"]["train/loss"] == 5.0


def test_a_released_hung_tracker_does_not_spin(tmp_path):
    limits = trackkit.Limits(queue_size=3, stall_timeout=0.3)
    earlier = set(threading.enumerate())  # an earlier test's hung worker may still be around
    run = trackkit.start(["trackers_for_tests:Hanging"], output_dir=tmp_path, limits=limits)
    (worker,) = [th for th in threading.enumerate() if th.name == "trackkit-hanging" and th not in earlier]
    for step in range(1, 11):
        run.log_train({"loss": 1.0}, step=step)
    run.finish(timeout=0.5)
    t.RELEASE.set()  # the backend answers again, long after the run gave up on it
    time.sleep(0.3)
    if not worker.is_alive():
        return  # it took the stop request it had queued, and ended
    began = cpu_seconds(worker)
    time.sleep(1.0)
    assert not worker.is_alive() or cpu_seconds(worker) - began < 0.2  # it idles: no busy wait on its queue


def test_a_worker_takes_records_that_trickle_in_about_once_a_second(tmp_path):
    # Every wake-up of a tracker thread costs the training loop a core and the GIL: a record
    # every 10 ms for 3 s must wake the worker a few times, not once per record or every 0.1 s.
    earlier = set(threading.enumerate())
    run = trackkit.start(["jsonl"], output_dir=tmp_path)
    (worker,) = [th for th in threading.enumerate() if th.name == "trackkit-jsonl" and th not in earlier]
    run.flush()
    began, start, step = voluntary_switches(worker), time.monotonic(), 0
    while time.monotonic() - start < 3.0:
        step += 1
        run.log_train({"loss": 1.0}, step=step)
        time.sleep(0.01)
    woke = voluntary_switches(worker) - began
    run.finish()
    assert woke <= 10, f"the worker slept {woke} times for {step} records in 3 s"
    assert len([e for e in records(tmp_path) if e["event"] == "train"]) == step


def voluntary_switches(thread: threading.Thread) -> int:
    """How often one thread gave up its core (to sleep, wait for a lock or the GIL), from Linux."""
    for line in open(f"/proc/self/task/{thread.native_id}/status"):
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def cpu_seconds(thread: threading.Thread) -> float:
    """CPU time one thread has used, from Linux's per-thread accounting."""
    fields = open(f"/proc/self/task/{thread.native_id}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
