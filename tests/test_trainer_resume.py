"""--resume continues exactly (same losses as an uninterrupted run); checkpoints are published whole."""
from __future__ import annotations

import json
import os

import pytest
import torch
from trainer_util import SMALL_MODEL, events, train, write_corpus

from reference_trainer import checkpoint as ckpt
from reference_trainer.engine import TorchEngine
from reference_trainer.model import GPT, GPTConfig

TIMING = ("train/elapsed_time", "train/tokens_per_second")


def without_timing(event: dict) -> tuple:
    return event["step"], {k: v for k, v in event["metrics"].items() if k not in TIMING}


def test_a_resumed_run_logs_the_same_losses_as_an_uninterrupted_one(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    # Dropout draws random numbers every step and grad-accum 2 gives 10 steps per epoch, so the
    # interruption at step 13 falls mid-epoch, mid-log-interval, after an epoch's end and with
    # random state in play: all of it has to come back from the checkpoint.
    common = ["--data", data, *SMALL_MODEL, "--dropout", 0.1, "--grad-accum", 2, "--log-interval", 3,
              "--eval-interval", 5, "--learning-rate", 3e-3, "--lr-decay-steps", 30, "--tracker", "jsonl"]
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    assert train(*common, "--output-dir", straight, "--max-steps", 30).exit_code == 0
    first = train(*common, "--output-dir", parted, "--max-steps", 13)
    assert first.exit_code == 0, first.output
    run_id = json.loads((parted / "trackkit" / "run.json").read_text())["id"]
    # --resume alone: <output-dir>/checkpoints/last; the other settings come from the checkpoint.
    second = train("--output-dir", parted, "--resume", "--max-steps", 30, "--tracker", "jsonl")
    assert second.exit_code == 0, second.output

    a, b = events(straight, "train"), events(parted, "train")
    assert [e["step"] for e in b] == list(range(3, 31, 3))  # each step once: nothing doubled, nothing lost
    assert [without_timing(e) for e in a] == [without_timing(e) for e in b]  # exactly equal, not approximately
    evals_a = {e["step"]: e["metrics"]["eval/loss"] for e in events(straight, "eval")}
    evals_b = {e["step"]: e["metrics"]["eval/loss"] for e in events(parted, "eval")}
    assert evals_b.pop(13) and evals_a == evals_b  # 13: the first part's closing evaluation
    assert [without_timing(e) for e in events(straight, "epoch")] == [without_timing(e) for e in events(parted, "epoch")]
    assert [e["step"] for e in events(parted, "resume")] == [13]
    assert json.loads((parted / "trackkit" / "run.json").read_text())["id"] == run_id
    (final,) = events(parted, "final")
    assert final["metrics"]["final/total_steps"] == 30
    meta = json.loads((parted / "checkpoints" / "last" / "meta.json").read_text())
    assert (meta["step"], meta["epoch"], meta["position"], meta["run_id"]) == (30, 3, 0, run_id)


def test_resume_auto_starts_fresh_when_there_is_no_checkpoint_and_plain_reuse_is_refused(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    args = ["--data", data, *SMALL_MODEL, "--output-dir", out, "--tracker", "none", "--max-steps", 3]
    assert train(*args, "--resume", "auto").exit_code == 0
    assert os.readlink(out / "checkpoints" / "last") == "step-00000003"
    # Not resuming into a folder with checkpoints would overwrite them: refused, even untracked.
    again = train(*args)
    assert again.exit_code == 2 and "already holds checkpoints" in again.output
    assert train(*args[:-1], 5, "--resume").exit_code == 0
    assert json.loads((out / "checkpoints" / "last" / "meta.json").read_text())["step"] == 5
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "last", "step-00000005"]


def test_checkpoints_are_published_whole_and_never_overwritten_in_place(tmp_path):
    model_cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20)
    engine = TorchEngine(GPT(model_cfg), torch.device("cpu"), learning_rate=1e-3, weight_decay=0.1, warmup_steps=1,
                         decay_steps=10, min_lr=1e-4, grad_clip=1.0, grad_accum=1)
    root = tmp_path / "checkpoints"

    def save(writer, step, links, state=None):
        meta = {"step": step, "epoch": 0, "position": step, "model": model_cfg.__dict__, "config": {}}
        return writer.save(step, links, engine, state or {"rng": ckpt.rng_state()}, meta, {"kind": "byte"})

    (root / ".tmp-step-00000007").mkdir(parents=True)  # left by a process killed while writing
    writer = ckpt.Writer(tmp_path)
    save(writer, 5, ("best", "last"))
    assert sorted(p.name for p in root.iterdir()) == ["best", "last", "step-00000005"]
    assert os.readlink(root / "best") == os.readlink(root / "last") == "step-00000005"

    # A write that fails half way (here: state torch cannot pickle) leaves both links where they were.
    with pytest.raises(Exception):
        save(writer, 8, ("last",), state={"unpicklable": lambda: None})
    assert os.readlink(root / "last") == "step-00000005" and ckpt.read(root / "last").step == 5

    # A later process that resumed from an older checkpoint saves step 5 again: a new folder, the
    # one `best` points at is left as it was; folders no link points at go.
    later = ckpt.Writer(tmp_path)
    save(later, 5, ("last",))
    assert (os.readlink(root / "best"), os.readlink(root / "last")) == ("step-00000005", "step-00000005.1")
    save(later, 9, ("last",))
    assert sorted(p.name for p in root.iterdir()) == ["best", "last", "step-00000005", "step-00000009"]
    assert ckpt.read(root / "last").step == 9
