"""The TensorBoard tracker, checked by reading its event files back with TensorBoard's own reader
and by asking a real `tensorboard` server for them."""
import inspect
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import trackkit
from trackkit.options import Tracking, tracker_options

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import metadata as hparams_metadata  # noqa: E402

BIN = Path(sys.executable).parent


def accumulator(tb_dir: Path) -> EventAccumulator:
    # purge_orphaned_data=False: what is checked is the files themselves, not a reader's repairs.
    acc = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0, TENSORS: 0}, purge_orphaned_data=False)
    acc.Reload()
    return acc


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = accumulator(tb_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_scalars(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for tag, points in expected.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def log_steps(run, steps, mark):
    """Train, system and custom metrics every step, eval every 5, an epoch every 10 steps.

    Every value's fraction is ``mark``, so a value tells which process logged it.
    """
    for step in steps:
        run.log_train({"loss": step + mark}, step=step)
        run.log_metrics("system", {"cpu_percent": step + mark}, step=step)
        if step % 5 == 0:
            run.log_eval({"loss": step + mark}, step=step)
        if step % 10 == 0:
            run.log_epoch({"val_loss": step // 10 + mark}, epoch=step // 10, step=step)


CONFIG = {"learning_rate": 3e-4, "batch_size": 8, "model": "gpt|tiny", "use_amp": False, "betas": (0.9, 0.95)}


def test_every_namespace_on_its_axis_hparams_and_config_in_the_run_folder(tmp_path):
    with trackkit.start(["tensorboard"], output_dir=tmp_path, config=CONFIG, name="demo") as run:
        for step in range(1, 7):
            run.log_train({"loss": 3.0 / step, "learning_rate": 1e-4 * step}, step=step)
            run.log_metrics("system", {"cpu_percent": 10.0 + step}, step=step)
        run.log_eval({"loss": 1.5, "perplexity": 4.48}, step=3)
        run.log_eval({"loss": 1.25, "perplexity": 3.49}, step=6)
        run.log_epoch({"train_loss": 1.75, "val_loss": 1.5}, epoch=1, step=3)
        run.log_epoch({"train_loss": 1.3, "val_loss": 1.25}, epoch=2, step=6)
        run.log_metrics("data", {"tokens_seen": 4096}, step=6)
        run.log_final({"best_perplexity": 3.49, "total_steps": 6})
    assert run.summary["trackers"]["tensorboard"] == {"state": "ok", "delivered": 18, "lost": 0}
    tb = tmp_path / "tensorboard"
    # One event file, in the run's own folder: no timestamped sub-folder as add_hparams makes.
    assert [p.parent for p in tb.rglob("*")] == [tb]

    assert_scalars(scalars(tb), {
        "train/loss": [(s, 3.0 / s) for s in range(1, 7)],
        "train/learning_rate": [(s, 1e-4 * s) for s in range(1, 7)],
        "system/cpu_percent": [(s, 10.0 + s) for s in range(1, 7)],
        "eval/loss": [(3, 1.5), (6, 1.25)],
        "eval/perplexity": [(3, 4.48), (6, 3.49)],
        "epoch/train_loss": [(3, 1.75), (6, 1.3)],  # at the global step, as in every backend
        "epoch/val_loss": [(3, 1.5), (6, 1.25)],
        "data/tokens_seen": [(6, 4096)],
        "final/best_perplexity": [(6, 3.49)],
        "final/total_steps": [(6, 6)],
    })

    acc = accumulator(tb)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    )
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert hparams == {**CONFIG, "betas": "(0.9, 0.95)"}
    assert start.group_name == "demo"
    experiment = hparams_metadata.parse_experiment_plugin_data(
        acc.SummaryMetadata(hparams_metadata.EXPERIMENT_TAG).plugin_data.content
    )
    assert [h.name for h in experiment.hparam_infos] == sorted(CONFIG)
    assert [m.name.tag for m in experiment.metric_infos] == ["final/best_perplexity", "final/total_steps"]

    assert acc.SummaryMetadata("config").plugin_data.plugin_name == "text"
    (config_text,) = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("config")]
    assert "| learning_rate | 0.0003 |" in config_text and "| model | gpt\\|tiny |" in config_text


def test_wall_times_are_those_of_the_log_calls_not_of_the_tracker_thread(tmp_path):
    called = []
    with trackkit.start(["tensorboard"], output_dir=tmp_path) as run:
        for step in range(1, 6):
            called.append(time.time())
            run.log_train({"loss": 1.0 / step}, step=step)
            time.sleep(0.3)  # the tracker thread writes them up to a second later, in one round
    acc = accumulator(tmp_path / "tensorboard")
    walls = [e.wall_time for e in acc.Scalars("train/loss")]
    assert [abs(w - c) < 0.05 for w, c in zip(walls, called)] == [True] * 5


def test_events_reach_the_disk_within_about_a_second_without_flush(tmp_path):
    run = trackkit.start(["tensorboard"], output_dir=tmp_path)
    run.log_train({"loss": 1.0}, step=1)
    tb = tmp_path / "tensorboard"
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not (tb.exists() and "train/loss" in scalars(tb)):
        time.sleep(0.1)
    assert scalars(tb)["train/loss"] == [(1, 1.0)]
    run.finish()


def torn_record() -> bytes:
    """The first half of a valid record, as a kill in the middle of a write leaves it."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="train/loss", simple_value=99.0)])
    RecordWriter(buffer).write(event_pb2.Event(step=31, summary=summary).SerializeToString())
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def test_resume_after_kill_9_has_every_step_of_every_tag_once(tmp_path):
    child = inspect.getsource(log_steps) + textwrap.dedent("""
        import sys, trackkit
        run = trackkit.start(["tensorboard"], output_dir=sys.argv[1], config={"lr": 0.1})
        log_steps(run, range(1, 31), 0.5)
        run.log_metrics("probe", {"value": 1.0}, step=15)
        run.log_metrics("probe", {"value": 2.0}, step=25)  # a tag the resumed run never logs again
        run.flush()
        print("flushed", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "flushed\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    (killed_file,) = (tmp_path / "tensorboard").iterdir()
    with open(killed_file, "ab") as f:
        f.write(torn_record())
    assert max(s for s, _ in scalars(tmp_path / "tensorboard")["train/loss"]) == 30

    with trackkit.start(["tensorboard"], output_dir=tmp_path, config={"lr": 0.1}, resume_from_step=20) as run:
        log_steps(run, range(21, 41), 0.25)

    got = scalars(tmp_path / "tensorboard")
    for tag, points in got.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag} has a step twice or out of order: {steps}"

    def by(step):  # the killed run's value up to the checkpoint, the resumed run's after it
        return (step, step + (0.5 if step <= 20 else 0.25))

    assert_scalars(got, {
        "train/loss": [by(s) for s in range(1, 41)],
        "system/cpu_percent": [by(s) for s in range(1, 41)],
        "eval/loss": [by(s) for s in range(5, 41, 5)],
        "epoch/val_loss": [(10, 1.5), (20, 2.5), (30, 3.25), (40, 4.25)],  # epoch 3 ended at step 30: redone
        "probe/value": [(15, 1.0)],
    })
    acc = accumulator(tmp_path / "tensorboard")
    assert len(acc.Tensors(hparams_metadata.SESSION_START_INFO_TAG)) == 1
    assert len(acc.Tensors("config")) == 1
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1


def finished_then_resumed(out: Path) -> None:
    """A run that finished at step 30 (final/* logged), resumed from its step-20 checkpoint to 40."""
    with trackkit.start(["tensorboard"], output_dir=out, config={"lr": 0.1}) as run:
        log_steps(run, range(1, 31), 0.5)
        run.log_metrics("probe", {"value": 1.0}, step=15)
        run.log_metrics("probe", {"value": 2.0}, step=25)  # a tag the resumed run never logs again
        run.log_final({"best_perplexity": 9.0})
    with trackkit.start(["tensorboard"], output_dir=out, config={"lr": 0.1}, resume_from_step=20) as run:
        log_steps(run, range(21, 41), 0.25)
        run.log_final({"best_perplexity": 5.0})


def test_resume_of_a_finished_run_rewrites_final_metrics_and_hparams_once(tmp_path):
    finished_then_resumed(tmp_path)
    got = scalars(tmp_path / "tensorboard")
    assert got["final/best_perplexity"] == [(40, 5.0)]
    assert got["probe/value"] == [(15, 1.0)]
    assert [s for s, _ in got["train/loss"]] == list(range(1, 41))
    acc = accumulator(tmp_path / "tensorboard")
    assert len(acc.Tensors(hparams_metadata.EXPERIMENT_TAG)) == 1
    assert len(acc.Tensors(hparams_metadata.SESSION_START_INFO_TAG)) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_server_serves_every_tag_once_per_step_after_resume(tmp_path):
    finished_then_resumed(tmp_path)
    expected_tags = {"train/loss", "system/cpu_percent", "eval/loss", "epoch/val_loss",
                     "probe/value", "final/best_perplexity"}
    port = free_port()
    base = f"http://127.0.0.1:{port}/data/plugin/scalars"
    server = subprocess.Popen(
        [BIN / "tensorboard", "--logdir", tmp_path / "tensorboard", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline, tags = time.monotonic() + 60, {}
        while time.monotonic() < deadline and set(tags.get(".", ())) != expected_tags:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                tags = get_json(f"{base}/tags")
            except OSError:  # not listening yet
                pass
            time.sleep(0.5)
        assert set(tags.get(".", ())) == expected_tags
        series = {tag: get_json(f"{base}/scalars?run=.&tag={tag}") for tag in expected_tags}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the data server it started
        server.wait(timeout=10)
    assert [(step, value) for _, step, value in series["train/loss"]] == [
        (s, pytest.approx(s + (0.5 if s <= 20 else 0.25))) for s in range(1, 41)
    ]
    assert [step for _, step, _ in series["epoch/val_loss"]] == [10, 20, 30, 40]  # the global step
    assert [value for _, _, value in series["final/best_perplexity"]] == [5.0]
    assert [step for _, step, _ in series["probe/value"]] == [15]  # logged after the checkpoint: gone
    for tag, points in series.items():
        steps = [step for _, step, _ in points]
        assert steps == sorted(set(steps)), tag


def test_unwritable_folder_is_reported_once_and_the_run_goes_on(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    options = {"tensorboard_dir": blocker / "tb"}
    with trackkit.start(["tensorboard", "jsonl"], output_dir=tmp_path / "run", options=options) as run:
        for step in range(1, 11):
            run.log_train({"loss": 1.0}, step=step)
    lines = [line for line in capsys.readouterr().err.splitlines() if "tensorboard" in line]
    assert len(lines) == 2, lines  # the cause, then that the tracker is off
    assert f"cannot write TensorBoard events to {blocker / 'tb'}: Not a directory" in lines[0]
    assert run.summary["trackers"]["tensorboard"]["state"] == "failed"
    assert run.summary["trackers"]["jsonl"] == {"state": "ok", "delivered": 10, "lost": 0}


def test_a_folder_with_another_runs_events_is_refused(tmp_path, capsys):
    shared = tmp_path / "shared-tb"
    with trackkit.start(["tensorboard"], output_dir=tmp_path / "a", options={"tensorboard_dir": shared}) as run:
        run.log_train({"loss": 1.0}, step=1)
    with trackkit.start(["tensorboard"], output_dir=tmp_path / "b", options={"tensorboard_dir": shared}) as run:
        run.log_train({"loss": 2.0}, step=1)
    assert f"{shared} already holds TensorBoard events of another run" in capsys.readouterr().err
    assert scalars(shared)["train/loss"] == [(1, 1.0)]


@click.command()
@tracker_options()
def demo(tracking: Tracking) -> None:
    with tracking.start(output_dir=click.get_current_context().obj) as run:
        run.log_train({"loss": 1.0}, step=1)


def test_tensorboard_dir_option(tmp_path):
    result = CliRunner().invoke(
        demo, ["--tracker", "tensorboard", "--tensorboard-dir", str(tmp_path / "tb")], obj=tmp_path / "run"
    )
    assert result.exit_code == 0, result.output
    assert scalars(tmp_path / "tb")["train/loss"] == [(1, 1.0)]
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert "--tensorboard-dir" in CliRunner().invoke(demo, ["--help"]).output


def test_tensorboard_is_imported_only_when_the_tracker_starts():
    code = ("import sys, trackkit.trackers.tensorboard; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard'))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_the_users_own_tensorboard_import_right_after_start_does_not_deadlock(tmp_path):
    # The tracker's thread starts right away; had it imported tensorboard's lazy submodules
    # there, this import on the main thread met it halfway and failed with _DeadlockError.
    script = textwrap.dedent(f"""
        import torch, trackkit
        for attempt in range(3):
            run = trackkit.start(["tensorboard"], output_dir={str(tmp_path)!r} + f"/run{{attempt}}")
            from torch.utils.tensorboard import SummaryWriter
            SummaryWriter({str(tmp_path)!r} + f"/direct{{attempt}}").close()
            run.log_train({{"loss": 1.0}}, step=1)
            run.finish()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert scalars(tmp_path / "run0" / "tensorboard")["train/loss"] == [(1, 1.0)]
