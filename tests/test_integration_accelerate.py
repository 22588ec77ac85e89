"""Accelerate with TrackkitTracker: a bigram model on the built-in corpus, a few steps on the CPU, and what the
local record, TensorBoard and wandb (offline) hold afterwards."""
import pytest

pytest.importorskip("accelerate")
import pydoc_data.topics  # noqa: E402

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from integration_util import TRACKERS, assert_every_backend_holds, events, record_steps, run_json  # noqa: E402
from torch.nn.functional import cross_entropy  # noqa: E402

from trackkit import TrackkitError  # noqa: E402
from trackkit.integrations.accelerate import TrackkitTracker  # noqa: E402

IDS = torch.tensor(list("\n\n".join(pydoc_data.topics.topics.values()).encode()[:4_000]))


def train(tracker, steps=6, fail_at=None):
    """4 steps an epoch; loss and learning rate every step, validation every 3 steps, epoch losses at epoch ends."""
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("test", config={"learning_rate": 1.0, "hf_token": "never-written"})
    model = torch.nn.Embedding(256, 256)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    torch.manual_seed(0)
    try:
        for step in range(1, steps + 1):
            if step == fail_at:
                raise RuntimeError("diverged")
            batch = torch.randint(len(IDS) - 1, (64,))
            loss = cross_entropy(model(IDS[batch]), IDS[batch + 1])
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            epoch = (step - 1) // 4
            metrics = {"train_loss": loss.detach(), "learning_rate": 1.0, "note": "text", "epoch": epoch}
            accelerator.log(metrics, step=step)
            if step % 3 == 0:
                accelerator.log({"val/loss": 2.0, "val_accuracy": 0.5}, step=step)
            if step % 4 == 0 or step == steps:
                accelerator.log({"train_loss_epoch": 3.0, "epoch": (step - 1) // 4}, step=step)
    except RuntimeError:
        accelerator.end_training()  # inside the except block: the run ends failed
        raise
    accelerator.end_training()
    return accelerator


def test_every_metric_reaches_every_backend_at_the_step_given(tmp_path, capfd):
    out = tmp_path / "acc"
    train(TrackkitTracker("acc-test", trackers=TRACKERS, output_dir=out))
    every = [1, 2, 3, 4, 5, 6]
    assert_every_backend_holds(out, {
        "train/loss": every, "train/learning_rate": every, "train/epoch": every,
        "eval/loss": [3, 6], "eval/accuracy": [3, 6], "epoch/train_loss": [4, 6],
    })
    assert [(e["epoch"], e["step"]) for e in events(out) if e["event"] == "epoch"] == [(1, 4), (2, 6)]
    assert capfd.readouterr().err.count("'note' is a str, not a number; not logged") == 1
    info = run_json(out)
    assert info["status"] == "success" and info["name"] == "acc-test"
    config = (out / "trackkit" / "config.json").read_text()
    assert '"learning_rate": 1.0' in config and "never-written" not in config


def test_a_tracker_that_raises_does_not_stop_training(tmp_path):
    out = tmp_path / "acc"
    train(TrackkitTracker("acc-test", trackers=["jsonl", "trackers_for_tests:Failing"], output_dir=out))
    assert record_steps(out)["train/loss"] == [1, 2, 3, 4, 5, 6]
    info = run_json(out)
    assert info["status"] == "success" and info["tracker_health"]["failing"]["lost"] > 0


def test_end_training_in_an_except_block_finishes_the_run_failed(tmp_path):
    out = tmp_path / "acc"
    with pytest.raises(RuntimeError, match="diverged"):
        train(TrackkitTracker("acc-test", trackers=["jsonl"], output_dir=out), fail_at=3)
    assert run_json(out)["status"] == "failed"
    assert record_steps(out)["train/loss"] == [1, 2]


def test_the_tracker_is_the_run_and_resumes_it(tmp_path):
    out = tmp_path / "acc"
    train(TrackkitTracker("acc-test", trackers=["jsonl"], output_dir=out), steps=4)
    first = run_json(out)["id"]
    tracker = TrackkitTracker("acc-test", trackers=["jsonl"], output_dir=out, resume_from_step=2)
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("test")
    assert accelerator.get_tracker("trackkit").tracker.info.id == first
    accelerator.log({"train/loss": 1.0})  # no step: one more than the last one
    accelerator.end_training()
    assert record_steps(out)["train/loss"] == [1, 2, 3]


def test_bad_input_is_one_line_before_training(tmp_path):
    with pytest.raises(TrackkitError, match=r"^unknown tracker 'nope'; available: "):
        TrackkitTracker("x", trackers=["nope"], output_dir=tmp_path / "a")
    (tmp_path / "file").write_text("")
    with pytest.raises(TrackkitError, match="cannot be created"):
        TrackkitTracker("x", trackers=["jsonl"], output_dir=tmp_path / "file" / "run")
