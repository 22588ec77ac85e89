"""The Hugging Face Trainer with TrackkitCallback: a tiny GPT-2 on the built-in corpus, a few steps on the CPU,
and what the local record, TensorBoard and wandb (offline) hold afterwards."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("transformers")
import pydoc_data.topics  # noqa: E402

import torch  # noqa: E402
from integration_util import (
    TRACKERS,
    assert_every_backend_holds,
    events,
    record_steps,
    run_json,
    tensorboard_steps,
    wandb_steps,  # noqa: E402
)
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainerState, TrainingArguments  # noqa: E402

from trackkit import TrackkitError  # noqa: E402
from trackkit.integrations.hf import TrackkitCallback  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BLOCK = 32
WINDOWS = [{"input_ids": w, "labels": w}
           for w in torch.tensor(list("\n\n".join(pydoc_data.topics.topics.values()).encode()[:8_000])).split(BLOCK)]
TRAIN, VAL = WINDOWS[:32], WINDOWS[32:40]  # 4 steps an epoch at batch 8


def trainer(out, callbacks, max_steps=6, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=BLOCK, n_embd=32, n_layer=1, n_head=2))
    settings = dict(output_dir=str(out), report_to="none", max_steps=max_steps, per_device_train_batch_size=8,
                    logging_steps=1, eval_strategy="steps", eval_steps=3, save_steps=3, use_cpu=True,
                    disable_tqdm=True, hub_token="hf_never_written", seed=0)
    args = TrainingArguments(**{**settings, **overrides})
    return Trainer(model=model, args=args, train_dataset=TRAIN, eval_dataset=VAL, callbacks=callbacks)


class StopAt(TrainerCallback):
    """Raises ``error`` when the Trainer reaches ``step``: a crash or a Ctrl-C in the middle of training."""

    def __init__(self, step, error):
        self.step, self.error = step, error

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.error


def test_every_metric_reaches_every_backend_at_the_global_step(tmp_path):
    out = tmp_path / "hf"
    trainer(out, [TrackkitCallback(trackers=TRACKERS)]).train()

    train_steps, evals = [1, 2, 3, 4, 5, 6], [3, 6]
    assert_every_backend_holds(out, {
        "train/loss": train_steps, "train/learning_rate": train_steps, "train/grad_norm": train_steps,
        "train/epoch": train_steps, "eval/loss": evals, "eval/runtime": evals, "eval/epoch": evals,
        "epoch/train_loss": [4, 6], "epoch/steps": [4, 6], "epoch/val_loss": [6],
        "final/train_loss": [6], "final/train_runtime": [6], "final/total_flos": [6],
    })
    epochs = [(e["epoch"], e["step"]) for e in events(out) if e["event"] == "epoch"]
    assert epochs == [(1, 4), (2, 6)]
    info = run_json(out)
    assert info["status"] == "success"
    config = (out / "trackkit" / "config.json").read_text()
    assert '"hub_token": "***"' in config and "hf_never_written" not in config
    assert '"model_config"' in config and '"learning_rate": 5e-05' in config


def test_a_tracker_that_raises_does_not_stop_training(tmp_path):
    out = tmp_path / "hf"
    result = trainer(out, [TrackkitCallback(trackers=["jsonl", "trackers_for_tests:Failing"])]).train()
    assert result.global_step == 6
    assert record_steps(out)["train/loss"] == [1, 2, 3, 4, 5, 6]
    info = run_json(out)
    assert info["status"] == "success" and info["tracker_health"]["failing"]["lost"] > 0


def test_a_resumed_trainer_continues_the_same_run_without_a_step_twice(tmp_path):
    out = tmp_path / "hf"
    first = TrackkitCallback(trackers=TRACKERS)
    with pytest.raises(KeyboardInterrupt), first:  # Ctrl-C at step 5; the checkpoint is at 3
        trainer(out, [first, StopAt(5, KeyboardInterrupt())]).train()
    info = run_json(out)
    assert info["status"] == "interrupted"
    assert record_steps(out)["train/loss"] == [1, 2, 3, 4]  # it stopped before logging step 5

    trainer(out, [TrackkitCallback(trackers=TRACKERS)]).train(resume_from_checkpoint=str(out / "checkpoint-3"))
    resumed = run_json(out)
    assert resumed["id"] == info["id"] and resumed["status"] == "success" and resumed["resumed_from_step"] == 3
    steps = record_steps(out)
    assert steps["train/loss"] == [1, 2, 3, 4, 5, 6] and steps["eval/loss"] == [3, 6]
    board = tensorboard_steps(out)
    assert board["train/loss"] == [1, 2, 3, 4, 5, 6] and board["eval/loss"] == [3, 6]
    history, summary = wandb_steps(out)
    assert history["train/loss"] == [1, 2, 3, 4, 5, 6] and history["eval/loss"] == [3, 6]
    assert "final/train_loss" in summary


def test_an_exception_that_ends_the_process_finishes_the_run_failed(tmp_path):
    out = tmp_path / "hf"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_integration_hf import StopAt, TrackkitCallback, trainer
        trainer({str(out)!r}, [TrackkitCallback(trackers=["jsonl"]), StopAt(2, RuntimeError("diverged"))]).train()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "RuntimeError: diverged" in done.stderr
    assert run_json(out)["status"] == "failed"
    assert record_steps(out)["train/loss"] == [1]  # the step that raised logged nothing


def test_only_the_main_process_tracks(tmp_path):
    callback = TrackkitCallback(trackers=["jsonl"], output_dir=tmp_path / "hf")
    state = TrainerState(is_world_process_zero=False)
    callback.on_train_begin(TrainingArguments(output_dir=str(tmp_path / "hf"), report_to="none"), state, None)
    assert callback.run is None and not (tmp_path / "hf" / "trackkit").exists()


def test_bad_input_is_one_line_before_training(tmp_path):
    with pytest.raises(TrackkitError, match=r"^unknown tracker 'nope'; available: .*console") as unknown:
        TrackkitCallback(trackers=["console", "nope"])
    (tmp_path / "file").write_text("")
    with pytest.raises(TrackkitError, match="cannot be created") as bad_dir:
        TrackkitCallback(trackers=["jsonl"], output_dir=tmp_path / "file" / "run")
    assert all("\n" not in str(e.value) for e in (unknown, bad_dir))
