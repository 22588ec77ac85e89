"""--resume continues exactly (same losses as an uninterrupted run); checkpoints are published whole."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch
from trainer_util import SMALL_MODEL, events, train, write_corpus

from reference_trainer import checkpoint as ckpt
from reference_trainer.config import TrainConfig
from reference_trainer.engine import TorchEngine
from reference_trainer.model import GPT, GPTConfig
from reference_trainer.optim import Optimization
from reference_trainer.train import train as run_train
from trackkit.options import Tracking

OPTIM = Optimization(learning_rate=1e-3, min_lr=1e-4, warmup_steps=1, decay_steps=10)

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
    epochs_a, epochs_b = events(straight, "epoch"), events(parted, "epoch")
    assert [without_timing(e) for e in epochs_a] == [without_timing(e) for e in epochs_b]
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
    # The first process's checkpoint stays: a process deletes only folders it wrote itself.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best", "index.json", "last", "step-00000003", "step-00000005"]


def test_checkpoints_are_published_whole_and_never_overwritten_in_place(tmp_path):
    model_cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20)
    engine = TorchEngine(GPT(model_cfg), torch.device("cpu"), OPTIM, grad_clip=1.0, grad_accum=1)
    root = tmp_path / "checkpoints"

    def save(writer, step, links, state=None):
        meta = {"step": step, "epoch": 0, "position": step, "model": model_cfg.__dict__, "config": {}}
        return writer.save(step, links, engine, state or {"rng": ckpt.rng_state()}, meta, {"kind": "byte"})

    (root / ".tmp-step-00000007-x").mkdir(parents=True)  # left by a process killed while writing
    writer = ckpt.Writer(tmp_path)
    save(writer, 5, ("best", "last"))
    assert sorted(p.name for p in root.iterdir()) == [".tmp-step-00000007-x", "best", "index.json", "last",
                                                      "step-00000005"]
    assert os.readlink(root / "best") == os.readlink(root / "last") == "step-00000005"
    assert index(root) == {"format": 1, "best": "step-00000005", "last": "step-00000005"}

    # A write that fails half way (here: state torch cannot pickle) leaves the index and both links
    # where they were, and no half-written folder of its own.
    with pytest.raises(AttributeError, match="Can.t pickle"):
        save(writer, 8, ("last",), state={"unpicklable": lambda: None})
    assert os.readlink(root / "last") == "step-00000005" and ckpt.read(root / "last").step == 5
    assert index(root)["last"] == "step-00000005"
    assert sorted(p.name for p in root.glob(".tmp-*")) == [".tmp-step-00000007-x"]

    # A later process that resumed from an older checkpoint saves step 5 again: a new folder, the
    # one `best` points at is left as it was. Its own folders go once nothing names them.
    later = ckpt.Writer(tmp_path)
    save(later, 5, ("last",))
    assert (os.readlink(root / "best"), os.readlink(root / "last")) == ("step-00000005", "step-00000005.1")
    save(later, 9, ("last",))
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "best", "index.json", "last", "step-00000005", "step-00000009"]
    assert ckpt.read(root / "last").step == 9 and ckpt.latest(tmp_path).step == 9


def index(root) -> dict:
    return json.loads((root / "index.json").read_text())


# -- links are not the only index; nothing is deleted that this process did not write ---------------------------
def copy_with_links(src, dst):
    shutil.copytree(src, dst, symlinks=True)  # cp -a


def copy_following_links(src, dst):
    shutil.copytree(src, dst, symlinks=False)  # cp -rL: every link becomes a folder of its own


def copy_dropping_links(src, dst):
    # rsync -r without -l, or an object store: links are left out
    shutil.copytree(src, dst, ignore=lambda at, names: [n for n in names if os.path.islink(os.path.join(at, n))])


@pytest.fixture(scope="module")
def ten_steps(tmp_path_factory):
    """A run of 10 steps with checkpoints at 5 and 10, every step logged."""
    folder = tmp_path_factory.mktemp("ten")
    data = write_corpus(folder, chars=1500)
    out = folder / "run"
    result = train("--data", data, *SMALL_MODEL, "--output-dir", out, "--max-steps", 10, "--log-interval", 1,
                   "--eval-interval", 5, "--checkpoint-interval", 5, "--lr-decay-steps", 20, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("copy, remove", [
    (copy_with_links, ("last", "best")),                  # cp -a RUN out && rm out/checkpoints/{last,best}
    (copy_with_links, ("last", "best", "index.json")),    # ... and the index too: the step folders alone
    (copy_following_links, ()),                           # links copied as folders
    (copy_following_links, ("index.json",)),
    (copy_dropping_links, ()),                            # links dropped
    (copy_dropping_links, ("index.json",)),
], ids=["links-removed", "links-and-index-removed", "links-as-folders", "links-as-folders-no-index",
        "links-dropped", "links-dropped-no-index"])
def test_resume_finds_the_newest_complete_checkpoint_without_the_links(ten_steps, tmp_path, copy, remove):
    out = tmp_path / "out"
    copy(ten_steps, out)
    for name in remove:
        target = out / "checkpoints" / name
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    result = train("--output-dir", out, "--resume", "--max-steps", 15, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output

    assert [e["step"] for e in events(out, "resume")] == [10]
    before = [without_timing(e) for e in events(ten_steps, "train")]
    after = [without_timing(e) for e in events(out, "train")]
    assert [s for s, _ in after] == list(range(1, 16)) and after[:10] == before  # the earlier records kept
    assert ckpt.latest(out).step == 15 and os.readlink(out / "checkpoints" / "last") == "step-00000015"
    assert ckpt.read(out / "checkpoints" / "step-00000010").step == 10  # the earlier process's, kept
    copied = sorted(p.name for p in (out / "checkpoints").glob("*.copied"))
    assert copied == (["best.copied", "last.copied"] if copy is copy_following_links else [])


def test_a_broken_last_checkpoint_falls_back_to_the_newest_complete_one_and_says_why(ten_steps, tmp_path):
    out = tmp_path / "out"
    copy_with_links(ten_steps, out)
    assert train("--output-dir", out, "--resume", "--max-steps", 12, "--tracker", "jsonl").exit_code == 0
    model = out / "checkpoints" / "step-00000012" / "model.pt"
    size = model.stat().st_size
    model.write_bytes(model.read_bytes()[:100])  # a copy cut short, a full disk
    result = train("--output-dir", out, "--resume", "--max-steps", 14, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    assert [e["step"] for e in events(out, "resume")] == [10, 10]
    assert (f"trackkit-train: checkpoints/step-00000012 is incomplete: model.pt has 100 bytes, {size} when it was "
            "written; resuming from step-00000010, the newest complete checkpoint (step 10)") in result.output


def test_resume_refuses_a_folder_whose_checkpoints_are_all_broken(ten_steps, tmp_path):
    out = tmp_path / "out"
    copy_with_links(ten_steps, out)
    for folder in (out / "checkpoints").glob("step-*"):
        (folder / "optimizer.pt").unlink()
    result = train("--output-dir", out, "--resume", "--max-steps", 12, "--tracker", "jsonl")
    assert result.exit_code == 2
    assert result.output == (f"Error: checkpoint '{out}/checkpoints/step-00000010' is incomplete: optimizer.pt is "
                             "missing\n")


def test_nothing_this_process_did_not_write_is_deleted(ten_steps, tmp_path):
    out = tmp_path / "out"
    copy_with_links(ten_steps, out)
    notes = out / "checkpoints" / "step-00000099" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("my notes")
    earlier = {p.name for p in (out / "checkpoints").glob("step-*")}
    result = train("--output-dir", out, "--resume", "--max-steps", 25, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    assert notes.read_text() == "my notes"
    names = {p.name for p in (out / "checkpoints").glob("step-*")}
    # The earlier process's folders stay; of this one's (15, 20, 25), those nothing names any more went.
    best = os.readlink(out / "checkpoints" / "best")
    assert names == earlier | {"step-00000025", best}


def test_a_folder_holding_only_a_step_folder_is_not_trained_into_without_resume(ten_steps, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ten_steps / "checkpoints" / "step-00000010", out / "checkpoints" / "step-00000010")
    before = sorted(str(p) for p in out.rglob("*"))
    refused = train("--output-dir", out, "--max-steps", 12, "--tracker", "jsonl")
    assert refused.exit_code == 2 and refused.output.startswith(f"Error: {out} already holds checkpoints")
    assert sorted(str(p) for p in out.rglob("*")) == before
    resumed = train("--output-dir", out, "--resume", "--max-steps", 12, "--tracker", "jsonl")
    assert resumed.exit_code == 0, resumed.output
    assert [e["step"] for e in events(out, "train")] == [11, 12]


# -- the trackers and their options come back with --resume ----------------------------------------------------
def tensorboard_steps(run, tag: str = "train/loss") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [e.step for e in accumulator.Scalars(tag)]


def run_json(run) -> dict:
    return json.loads((run / "trackkit" / "run.json").read_text())


@pytest.fixture
def tracked_run(tmp_path):
    """Ten steps with console, jsonl and tensorboard, and a tracker option given."""
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    result = train("--data", data, *SMALL_MODEL, "--output-dir", out, "--max-steps", 10, "--log-interval", 1,
                   "--tracker", "console,jsonl,tensorboard", "--console-lang", "en", "--lr-decay-steps", 20)
    assert result.exit_code == 0, result.output
    return out


def test_resume_restores_the_runs_trackers_and_their_options(tracked_run):
    result = train("--output-dir", tracked_run, "--resume", "--max-steps", 20)
    assert result.exit_code == 0, result.output
    assert run_json(tracked_run)["trackers"] == ["console", "jsonl", "tensorboard"]
    assert tensorboard_steps(tracked_run) == list(range(1, 21))  # TensorBoard did not stop at step 10
    assert re.search(r"^step +20 \| epoch", result.output, re.M)  # --console-lang en came back too
    assert "tracking" not in result.output  # nothing changed, nothing said
    meta = json.loads((tracked_run / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["tracking"] == {"trackers": ["console", "jsonl", "tensorboard"], "options": {"console_lang": "en"},
                                "system_metrics": None}
    config = json.loads((tracked_run / "trackkit" / "config.json").read_text())
    assert (config["trackers"], config["console_lang"]) == ("console,jsonl,tensorboard", "en")


def test_tracking_given_again_wins_and_the_change_is_said_in_one_line(tracked_run):
    result = train("--output-dir", tracked_run, "--resume", "--max-steps", 12, "--tracker", "jsonl,tensorboard",
                   "--console-lang", "zh")
    assert result.exit_code == 0, result.output
    changed = [line for line in result.output.splitlines() if "tracking" in line]
    assert changed == ["trackkit-train: resuming with other tracking than the checkpoint's: trackers "
                       "console,jsonl,tensorboard -> jsonl,tensorboard; console_lang 'en' -> 'zh'"]
    assert run_json(tracked_run)["trackers"] == ["jsonl", "tensorboard"]
    # --use_wandb alone adds wandb to what the checkpoint recorded.
    again = train("--output-dir", tracked_run, "--resume", "--max-steps", 14, "--use_wandb", "--offline")
    assert again.exit_code == 0, again.output
    assert run_json(tracked_run)["trackers"] == ["jsonl", "tensorboard", "wandb"]
    assert "trackers jsonl,tensorboard -> jsonl,tensorboard,wandb; offline None -> True" in again.output


def test_tracking_choices_are_recorded_without_secrets(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(data), n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, eval_batches=4,
                      max_steps=2, output_dir=str(out))
    options = {"my_api_key": "SECRET-1", "HF_TOKEN": "SECRET-2", "db_password": "SECRET-3", "tokenizer_note": "kept"}
    run_train(cfg, Tracking(["jsonl"], options))
    meta = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["tracking"] == {"trackers": ["jsonl"], "options": {"tokenizer_note": "kept"}, "system_metrics": None}
    for path in out.rglob("*"):
        if path.is_file():
            assert b"SECRET-" not in path.read_bytes(), path
