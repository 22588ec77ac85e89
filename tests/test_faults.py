"""Faults, end to end: preemption, kill -9, Ctrl-C, failing and hanging trackers, a full disk, NaN.

Every test runs the real ``trackkit-train`` in a subprocess, most with console, jsonl, tensorboard
and wandb (offline), sends it real signals, and reads back what each backend wrote with the
backend's own files: metrics.jsonl, TensorBoard's event files (EventAccumulator) and wandb's run
files (trackkit.wandb_files).
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import fill
from trainer_util import SMALL_MODEL, child_env, write_corpus

from trackkit.reading import read_events
from trackkit.wandb_files import RunFile, run_files

TESTS = Path(__file__).resolve().parent
TRAINER = str(Path(sys.executable).parent / "trackkit-train")
ALL = "console,jsonl,tensorboard,wandb"
STEP_LINE = re.compile(r"^step\s+(\d+) \|")
TIMING = {"train/elapsed_time", "train/tokens_per_second", "final/train_seconds"}

# The preempted runs: dropout draws random numbers every step, so a resume that did not restore
# the random state (or anything else) shows in the losses. Four micro-batches a step keep the
# console close behind training, so that a signal sent when it shows step 30 lands a step or two
# later, between checkpoints (every 20), evaluations (every 25 and at the ends of epochs) and logs.
STEPS = 160
LONG = [*SMALL_MODEL, "--device", "cpu", "--dropout", "0.1", "--grad-accum", "4", "--seed", "7", "--log-interval", "2",
        "--eval-interval", "25", "--checkpoint-interval", "20", "--max-steps", STEPS]
# The other faults need a short run only.
SHORT = [*SMALL_MODEL, "--device", "cpu", "--log-interval", "2", "--eval-interval", "10", "--checkpoint-interval", "10"]


class TrainProcess:
    """``trackkit-train ARGS`` in its own process group, its output read line by line as it comes.

    ``nan_at``: the training loss is NaN at that optimizer step (tests/nan_engine.py).
    """

    started: list[TrainProcess] = []

    def __init__(self, *args: Any, nan_at: int | None = None):
        env = child_env(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        command = [TRAINER] if nan_at is None else [sys.executable, str(TESTS / "nan_engine.py"), str(nan_at)]
        self.popen = subprocess.Popen(
            [*command, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,  # a group of its own, like a job: Ctrl-C goes to the whole group
        )
        self.pid = self.popen.pid
        TrainProcess.started.append(self)
        self.out: list[str] = []
        self.err: list[str] = []
        self._arrived = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=pipe, daemon=True)
                         for pipe in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._arrived:
                lines.append(line.rstrip("\n"))
                self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def step(self) -> int:
        """The last step the console tracker has printed."""
        steps = [int(m.group(1)) for m in map(STEP_LINE.match, self.out) if m]
        return steps[-1] if steps else 0

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not done():
                if not any(r.is_alive() for r in self._readers):
                    pytest.fail(f"trackkit-train ended before {what}:\n{self.stderr}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {what} within {timeout}s:\n{self.stderr}")
                self._arrived.wait(0.1)

    def wait_for_step(self, step: int) -> None:
        self.wait_until(lambda: self.step() >= step, f"step {step}")

    def end(self, timeout: float = 180) -> int:
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join()
        return code


# -- what the backends hold ------------------------------------------------------------------
def events(run: Path, kind: str | None = None) -> list[dict]:
    found = read_events(run / "trackkit" / "metrics.jsonl")
    return [e for e in found if kind is None or e["event"] == kind]


def records(run: Path) -> list[dict]:
    """Every record the run logged, in order: what each tracker was sent (resume marks are not)."""
    return [e for e in events(run) if e["event"] != "resume"]


def run_json(run: Path) -> dict:
    return json.loads((run / "trackkit" / "run.json").read_text())


def meta(run: Path, link: str = "last") -> dict:
    return json.loads((run / "checkpoints" / link / "meta.json").read_text())


def tensorboard(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def wandb_fragments(run: Path) -> list[RunFile]:
    """Every local part of the run's wandb run (one per process that ran it), oldest first."""
    return run_files(run / "wandb", run_json(run)["backend_ids"]["wandb"])


def wandb_steps(run: Path, axis: str = "train/step") -> list[int]:
    return [row[axis] for part in wandb_fragments(run) for row in part.history if axis in row]


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def weights_finite(checkpoint: Path) -> bool:
    state = torch.load(checkpoint / "model.pt", weights_only=True)
    return all(torch.isfinite(t).all() for t in state.values())


@pytest.fixture(autouse=True)
def _no_trainer_left_behind():
    """A test that failed must not leave its trainer running, or frozen by SIGSTOP."""
    yield
    for proc in TrainProcess.started:
        if proc.popen.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait()
    TrainProcess.started.clear()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data"), chars=6000)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> Path:
    """The uninterrupted run every preempted one is compared with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = TrainProcess("--data", data, *LONG, "--output-dir", out, "--tracker", "jsonl")
    assert proc.end() == 0, proc.stderr
    return out


def assert_complete_and_as_straight(out: Path, straight: Path) -> None:
    """Every record of ``out`` once, in every backend, with the values of the uninterrupted run."""
    steps = list(range(2, STEPS + 1, 2))
    for kind in ("train", "eval", "epoch"):
        a, b = events(straight, kind), events(out, kind)
        assert [e["step"] for e in b] == [e["step"] for e in a], kind  # nothing lost, nothing twice
        for x, y in zip(a, b):
            assert without_timing(y["metrics"]) == pytest.approx(without_timing(x["metrics"]), rel=1e-6, abs=1e-9)
    assert [e["step"] for e in events(out, "train")] == steps
    (final_a,), (final_b,) = events(straight, "final"), events(out, "final")
    assert without_timing(final_b["metrics"]) == pytest.approx(without_timing(final_a["metrics"]), rel=1e-6)
    best = [(e["name"], e["metadata"]["step"]) for e in events(straight, "artifact")]
    assert [(e["name"], e["metadata"]["step"]) for e in events(out, "artifact")] == best
    assert run_json(out)["status"] == "success"

    # TensorBoard: one value per step, the record's values (as float32).
    logged = {e["step"]: e["metrics"]["train/loss"] for e in events(out, "train")}
    board = tensorboard(out / "tensorboard", "train/loss")
    assert [s for s, _ in board] == steps
    assert [v for _, v in board] == pytest.approx([logged[s] for s, _ in board], rel=1e-6)
    assert [s for s, _ in tensorboard(out / "tensorboard", "eval/loss")] == [e["step"] for e in events(out, "eval")]

    # wandb: one run id across the parts, and every step exactly once across them.
    wandb_id = run_json(out)["backend_ids"]["wandb"]
    parts = wandb_fragments(out)
    assert len(parts) >= 2 and {p.run_id for p in parts if p.history} == {wandb_id}
    assert wandb_steps(out) == steps
    assert wandb_steps(out, "eval/step") == [e["step"] for e in events(out, "eval")]


# -- 1 and 3: SIGTERM and Ctrl-C ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum, code, group", [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
                         ids=["sigterm", "ctrl-c"])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_resume_gives_the_uninterrupted_run(
        tmp_path, data, straight, signum, code, group):
    out = tmp_path / "run"
    first = TrainProcess("--data", data, *LONG, "--output-dir", out, "--tracker", ALL, "--offline")
    first.wait_for_step(30)
    # SIGTERM as a scheduler sends it to the trainer; Ctrl-C as a terminal sends it to the group.
    (os.killpg if group else os.kill)(first.pid, signum)
    assert first.end() == code, first.stderr

    stopped = meta(out)["step"]
    assert 30 <= stopped < STEPS
    assert f"stopped by {signum.name} at step {stopped}; checkpoint saved" in first.stderr
    assert run_json(out)["status"] == "interrupted"
    assert json.loads((out / "trackkit" / "summary.json").read_text())["status"] == "interrupted"
    assert f"Run {run_json(out)['name']} finished: interrupted" in first.out
    assert [e["step"] for e in events(out, "train")] == list(range(2, stopped + 1, 2))  # all, up to the stop
    (part,) = wandb_fragments(out)
    assert part.exit_code == 130 and wandb_steps(out) == list(range(2, stopped + 1, 2))

    second = TrainProcess("--output-dir", out, "--resume", "--tracker", ALL, "--offline")
    assert second.end() == 0, second.stderr
    assert [e["step"] for e in events(out, "resume")] == [stopped]
    assert_complete_and_as_straight(out, straight)
    print(f"{signum.name} after step 30 was printed: stopped at step {stopped}, resumed to {STEPS}")


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_resume_continues_from_the_last_checkpoint(tmp_path, data, straight):
    out = tmp_path / "run"
    first = TrainProcess("--data", data, *LONG, "--output-dir", out, "--tracker", ALL, "--offline")
    first.wait_for_step(30)
    os.killpg(first.pid, signal.SIGINT)
    first.wait_until(lambda: "press Ctrl-C again to stop at once" in first.stderr, "the first Ctrl-C's answer")
    os.killpg(first.pid, signal.SIGINT)
    assert first.end() == 130, first.stderr
    assert "stopping at once" in first.stderr
    assert run_json(out)["status"] == "running"  # not finished: exactly what a kill leaves

    second = TrainProcess("--output-dir", out, "--resume", "--tracker", ALL, "--offline")
    assert second.end() == 0, second.stderr
    assert_complete_and_as_straight(out, straight)


# -- 2: kill -9 --------------------------------------------------------------------------------
def last_logged(out: Path) -> tuple[int, int]:
    """The last train step in the local record and in TensorBoard (0 where none yet)."""
    local = [e["step"] for e in events(out, "train")] if (out / "trackkit" / "metrics.jsonl").exists() else []
    board = tensorboard(out / "tensorboard", "train/loss") if (out / "tensorboard").exists() else []
    return max(local, default=0), max((s for s, _ in board), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("wandb_past", [False, True], ids=["at-once", "once-wandb-wrote-past-the-checkpoint"])
def test_kill_9_then_resume_drops_what_came_after_the_checkpoint_and_keeps_everything_before(
        tmp_path, data, straight, wandb_past):
    out = tmp_path / "run"
    first = TrainProcess("--data", data, *LONG, "--output-dir", out, "--tracker", ALL, "--offline")
    first.wait_for_step(10)
    # Freeze the trainer to look at its files; kill it once the local record and TensorBoard
    # both hold steps after its last checkpoint (those must go), else let it go on a little.
    while True:
        os.kill(first.pid, signal.SIGSTOP)
        checkpoint = meta(out)["step"] if (out / "checkpoints" / "last").exists() else None
        local, board = last_logged(out)
        if checkpoint:  # whenever it is frozen, the files hold every step up to its last checkpoint
            assert min(local, board) >= checkpoint - checkpoint % 2, (checkpoint, local, board)
        if checkpoint and local > checkpoint and board > checkpoint:
            break
        os.kill(first.pid, signal.SIGCONT)
        assert first.popen.poll() is None, f"the run ended before it could be killed:\n{first.stderr}"
        time.sleep(0.05)
    if wandb_past:  # wandb's own process goes on: wait until its file holds steps after the checkpoint too
        deadline = time.monotonic() + 60
        while max(wandb_steps(out), default=0) <= checkpoint:
            assert time.monotonic() < deadline, "wandb wrote nothing after the checkpoint within 60 s"
            time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    assert first.end() == -signal.SIGKILL
    assert run_json(out)["status"] == "running"
    held = max(wandb_steps(out), default=0)  # wandb writes its file every few seconds: often behind the checkpoint

    second = TrainProcess("--output-dir", out, "--resume", "--tracker", ALL, "--offline")
    assert second.end() == 0, second.stderr
    assert [e["step"] for e in events(out, "resume")] == [checkpoint]
    assert_complete_and_as_straight(out, straight)
    print(f"kill -9 at step {first.step()}: checkpoint {checkpoint}; the killed process left steps up to {local} "
          f"in the local record, {board} in TensorBoard, {held} in wandb")


# -- 4: a tracker that fails mid-run, a full disk under TensorBoard ----------------------------
def assert_complete(out: Path, *trackers: str) -> None:
    """The named trackers have every record: health says so, and their files hold every step."""
    logged = records(out)
    health = run_json(out)["tracker_health"]
    for name in trackers:
        assert health[name] == {"state": "ok", "delivered": len(logged), "lost": 0}, name
    steps = [e["step"] for e in logged if e["event"] == "train"]
    if "tensorboard" in trackers:
        assert [s for s, _ in tensorboard(out / "tensorboard", "train/loss")] == steps
    if "wandb" in trackers:
        assert wandb_steps(out) == steps


def test_a_tracker_that_fails_mid_run_is_switched_off_and_named_with_what_it_lost(tmp_path, data):
    out = tmp_path / "run"
    proc = TrainProcess("--data", data, *SHORT, "--max-steps", 30, "--output-dir", out, "--tracker",
                        f"{ALL},trackers_for_tests:FailAfter", "--offline")
    assert proc.end() == 0, proc.stderr
    lost = len(records(out)) - 10
    assert run_json(out)["status"] == "success"
    assert run_json(out)["tracker_health"]["failafter"] == {"state": "failed", "delivered": 10, "lost": lost}
    assert f"  tracker failafter: failed, 10 delivered, {lost} lost" in proc.out  # the console's end summary
    assert proc.stderr.count("tracker 'failafter' failed in trackkit_log_") == 1
    assert "tracker 'failafter' did not get" in proc.stderr and "--to trackers_for_tests:FailAfter" in proc.stderr
    assert_complete(out, "console", "jsonl", "tensorboard", "wandb")
    print(f"failing tracker: 10 delivered, {lost} lost of {len(records(out))} records")


def test_a_full_disk_under_tensorboard_switches_it_off_and_the_run_says_what_it_lost(tmp_path, data, small_filesystem):
    out = tmp_path / "run"
    proc = TrainProcess("--data", data, *SHORT, "--max-steps", 100, "--output-dir", out, "--tracker", ALL,
                        "--offline", "--tensorboard-dir", small_filesystem)
    proc.wait_until(lambda: tensorboard(small_filesystem, "train/loss"), "TensorBoard's first records")
    fill(small_filesystem)
    assert proc.end() == 0, proc.stderr

    logged = records(out)
    health = run_json(out)["tracker_health"]["tensorboard"]
    delivered, lost = health["delivered"], health["lost"]
    assert health["state"] == "failed" and delivered + lost == len(logged) and lost > 0
    # Every record counted delivered is in its file. A flush that failed may still have put part
    # of what followed on the disk; those count as lost: never more delivered than written.
    board = [s for s, _ in tensorboard(small_filesystem, "train/loss")]
    delivered_steps = [e["step"] for e in logged[:delivered] if e["event"] == "train"]
    assert board[: len(delivered_steps)] == delivered_steps
    assert board == [e["step"] for e in logged if e["event"] == "train"][: len(board)]
    assert f"  tracker tensorboard: failed, {delivered} delivered, {lost} lost" in proc.out
    assert proc.stderr.count("tracker 'tensorboard' failed in trackkit_") == 1
    assert "No space left on device" in proc.stderr
    assert run_json(out)["status"] == "success"
    assert_complete(out, "console", "jsonl", "wandb")
    print(f"full disk: tensorboard delivered {delivered}, lost {lost} of {len(logged)} records")


# -- 5: a tracker that hangs -----------------------------------------------------------------------
@pytest.mark.slow
def test_a_hanging_tracker_costs_training_one_timeout_and_the_run_says_what_it_did_not_get(tmp_path, data):
    timeout = 5
    out = tmp_path / "run"
    proc = TrainProcess("--data", data, *SHORT, "--max-steps", 30, "--output-dir", out, "--tracker",
                        f"{ALL},trackers_for_tests:Hanging", "--offline", "--tracker-timeout", timeout)
    assert proc.end() == 0, proc.stderr

    logged = records(out)
    assert run_json(out)["tracker_health"]["hanging"] == {"state": "ok", "delivered": 0, "lost": len(logged)}
    assert f"  tracker hanging: ok, 0 delivered, {len(logged)} lost" in proc.out
    assert f"finish: tracker 'hanging' still had {len(logged)} records after {timeout}s" in proc.stderr
    # Training waited for it once, at the first checkpoint's flush, not at each of the three.
    assert proc.stderr.count("flush: tracker 'hanging'") == 1
    (final,) = events(out, "final")
    assert timeout <= final["metrics"]["final/train_seconds"] < 2 * timeout
    # The run ended within the timeout of its last record.
    ending = run_json(out)["updated_at"] - final["time"]
    assert ending < timeout + 3
    assert_complete(out, "console", "jsonl", "tensorboard", "wandb")
    trained = final["metrics"]["final/train_seconds"]
    print(f"hanging tracker: {len(logged)} records not delivered; training took {trained} s, the end {ending:.1f} s, "
          f"with --tracker-timeout {timeout}")


# -- 6: a loss that is NaN ---------------------------------------------------------------------
def test_nan_policy_warn_records_the_nan_flags_it_once_and_goes_on(tmp_path, data):
    out = tmp_path / "run"
    proc = TrainProcess("--data", data, *SMALL_MODEL, "--device", "cpu", "--max-steps", 12, "--log-interval", 1,
                        "--eval-interval", 4, "--output-dir", out, "--tracker", "console,jsonl", nan_at=5)
    assert proc.end() == 0, proc.stderr
    losses = [e["metrics"]["train/loss"] for e in events(out, "train")]
    assert all(math.isfinite(v) for v in losses[:4]) and all(math.isnan(v) for v in losses[4:])
    assert proc.stderr.count("train/loss is nan") == 1 and "train/loss is nan at step 5" in proc.stderr
    assert run_json(out)["status"] == "success"
    # The NaN was real: the weights are NaN now; the best checkpoint is still the good one.
    assert not weights_finite(out / "checkpoints" / "last")
    assert meta(out, "best")["step"] == 4 and weights_finite(out / "checkpoints" / "best")


def test_nan_policy_skip_step_leaves_the_weights_and_optimizer_as_they_were(tmp_path, data):
    out = tmp_path / "run"
    # best is saved at step 6 (its first evaluation), last at step 7, the poisoned one.
    proc = TrainProcess("--data", data, *SMALL_MODEL, "--device", "cpu", "--max-steps", 7, "--log-interval", 1,
                        "--eval-interval", 6, "--checkpoint-interval", 6, "--output-dir", out,
                        "--tracker", "console,jsonl", "--nan-policy", "skip-step", nan_at=7)
    assert proc.end() == 0, proc.stderr
    assert (meta(out, "best")["step"], meta(out, "last")["step"]) == (6, 7)
    before, after = (out / "checkpoints" / "best"), (out / "checkpoints" / "last")
    weights = [torch.load(c / "model.pt", weights_only=True) for c in (before, after)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    optim = [torch.load(c / "optimizer.pt", weights_only=True) for c in (before, after)]
    moments = [o["optimizer"]["state"] for o in optim]
    assert moments[0].keys() == moments[1].keys()
    assert all(torch.equal(moments[0][i][k], moments[1][i][k]) for i in moments[0] for k in moments[0][i])
    assert optim[1]["scheduler"]["last_epoch"] == optim[0]["scheduler"]["last_epoch"] + 1  # the schedule moves on

    train = {e["step"]: e["metrics"] for e in events(out, "train")}
    assert "train/loss" not in train[7] and all(math.isfinite(train[s]["train/loss"]) for s in range(1, 7))
    evals = {e["step"]: e["metrics"]["eval/loss"] for e in events(out, "eval")}
    assert evals[7] == evals[6]
    assert events(out, "final")[0]["metrics"]["final/skipped_steps"] == 1
    assert proc.stderr.count("skip-step") == 1 and "step 7: the loss is nan" in proc.stderr
    assert "train/loss is nan" not in proc.stderr  # nothing non-finite was recorded


@pytest.mark.parametrize("nan_at, stop_at", [(7, 8), (9, 10)], ids=["seen-at-a-log", "seen-at-a-checkpoint"])
def test_nan_policy_stop_keeps_the_last_good_checkpoint_and_fails_in_one_line(tmp_path, data, nan_at, stop_at):
    out = tmp_path / "run"
    # Logged every 4 steps, saved every 5: a NaN at step 7 is read at the log of step 8; one at
    # step 9 only when the checkpoint of step 10 is about to be saved, which must not happen.
    proc = TrainProcess("--data", data, *SMALL_MODEL, "--device", "cpu", "--max-steps", 20, "--log-interval", 4,
                        "--eval-interval", 5, "--checkpoint-interval", 5, "--output-dir", out, "--tracker", ALL,
                        "--offline", "--nan-policy", "stop", nan_at=nan_at)
    assert proc.end() == 3, proc.stderr
    (error,) = [line for line in proc.err if line.startswith("Error: ")]
    assert error == (f"Error: the training loss is nan at step {stop_at} (--nan-policy stop); checkpoints/last "
                     "still holds step 5, the last one saved before it")
    assert proc.err[-1] == error
    assert meta(out)["step"] == 5 and weights_finite(out / "checkpoints" / "last")
    assert meta(out, "best")["step"] == 5 and weights_finite(out / "checkpoints" / "best")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "index.json", "last", "step-00000005"]
    assert run_json(out)["status"] == "failed"
    assert f"Run {run_json(out)['name']} finished: failed" in proc.out
    (part,) = wandb_fragments(out)
    assert part.exit_code == 1
    # Recorded as it was: the NaN of step 8's log; none where the checkpoint's read found it first.
    assert [math.isnan(e["metrics"]["train/loss"]) for e in events(out, "train")] == [False, stop_at == 8]


# -- 7: a checkpoint that does not belong to the run folder ------------------------------------------
def own_lines(stderr: list[str]) -> list[str]:
    """The trainer's lines: trackkit's own (a plugin it could not load, say) are not its."""
    return [line for line in stderr if not line.startswith("trackkit: ")]


@pytest.mark.slow
def test_a_checkpoint_of_another_run_or_model_shape_is_refused_in_one_line(tmp_path, data):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        proc = TrainProcess("--data", data, *SMALL_MODEL, "--device", "cpu", "--max-steps", 3, "--output-dir", out,
                            "--tracker", "jsonl")
        assert proc.end() == 0, proc.stderr
    before = sorted((p, p.stat().st_mtime_ns) for p in b.rglob("*"))

    mixed = TrainProcess("--output-dir", b, "--resume", a / "checkpoints" / "last", "--max-steps", 6,
                         "--tracker", "jsonl")
    assert mixed.end() == 2
    assert own_lines(mixed.err) == [
        f"Error: checkpoint '{a}/checkpoints/last' belongs to run {run_json(a)['id']}, but {b} holds run "
        f"{run_json(b)['id']}; resume a run in its own folder, or start a new one with another --output-dir"
    ]
    reshaped = TrainProcess("--output-dir", b, "--resume", "--n-layer", 2, "--max-steps", 6, "--tracker", "jsonl")
    assert reshaped.end() == 2
    assert own_lines(reshaped.err) == [
        f"Error: checkpoint '{b}/checkpoints/last' holds a model with n_layer=1, this run asks for n_layer=2; "
        "a resumed run keeps its model's shape"
    ]
    assert sorted((p, p.stat().st_mtime_ns) for p in b.rglob("*")) == before  # nothing in b touched
