"""trackkit-train end to end: every metric the guide lists, checkpoints, the best artifact, --help, --config, sample."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from trainer_util import SMALL_MODEL, events, train, write_corpus

GUIDE_KEYS = {
    "train": {"loss", "perplexity", "learning_rate", "epoch", "step", "elapsed_time", "tokens_per_second", "batch"},
    "eval": {"loss", "perplexity", "step", "best_perplexity"},
    "epoch": {"train_loss", "train_perplexity", "val_loss", "val_perplexity", "number", "best_perplexity"},
    "final": {"best_perplexity", "total_steps", "total_epochs", "unigram_entropy", "val_loss"},
}


def keys(event: dict, namespace: str) -> set[str]:
    assert all(k.startswith(namespace + "/") for k in event["metrics"])
    return {k.split("/", 1)[1] for k in event["metrics"]}


def test_a_run_records_every_namespace_checkpoints_and_the_best_artifact(tmp_path):
    data = write_corpus(tmp_path, chars=1500)  # 21 steps per epoch at batch 4, block 16
    out = tmp_path / "run"
    result = train("--data", data, "--output-dir", out, *SMALL_MODEL, "--max-steps", 50, "--log-interval", 5,
                   "--eval-interval", 10, "--checkpoint-interval", 20, "--learning-rate", 3e-3)
    assert result.exit_code == 0, result.output

    train_events, eval_events = events(out, "train"), events(out, "eval")
    assert [e["step"] for e in train_events] == list(range(5, 51, 5))
    assert all(keys(e, "train") >= GUIDE_KEYS["train"] for e in train_events)
    positions = [(e["metrics"]["train/epoch"], e["metrics"]["train/batch"]) for e in train_events]
    assert positions[3:6] == [(1, 20), (2, 4), (2, 9)]
    # every 10 steps, and at the ends of epochs 1 and 2 (steps 21, 42)
    assert [e["step"] for e in eval_events] == [10, 20, 21, 30, 40, 42, 50]
    assert all(keys(e, "eval") == GUIDE_KEYS["eval"] for e in eval_events)
    epochs = events(out, "epoch")
    assert [(e["epoch"], e["step"], e["metrics"]["epoch/number"]) for e in epochs] == [(1, 21, 1), (2, 42, 2)]
    assert all(keys(e, "epoch") == GUIDE_KEYS["epoch"] for e in epochs)
    (final,) = events(out, "final")
    assert keys(final, "final") >= GUIDE_KEYS["final"]
    assert final["metrics"]["final/total_steps"] == 50 and final["metrics"]["final/total_epochs"] == round(50 / 21, 2)

    # It learned: validation loss fell, and the best perplexity is the lowest evaluated one.
    losses = [e["metrics"]["eval/loss"] for e in eval_events]
    assert losses[-1] < losses[0] - 0.3
    best = min(e["metrics"]["eval/perplexity"] for e in eval_events)
    assert final["metrics"]["final/best_perplexity"] == pytest.approx(best)

    config = json.loads((out / "trackkit" / "config.json").read_text())
    shape = (config["batches_per_epoch"], config["num_epochs"], config["n_layer"], config["tokenizer"])
    assert shape == (21, 3, 1, "char")

    checkpoints = out / "checkpoints"
    assert os.readlink(checkpoints / "last") == "step-00000050"
    best_step = int(os.readlink(checkpoints / "best").split("-")[1])
    assert best_step == min(eval_events, key=lambda e: e["metrics"]["eval/loss"])["step"]
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(
        {"best", "index.json", "last", "step-00000050", f"step-{best_step:08d}"})
    for link in ("last", "best"):
        files = {p.name for p in (checkpoints / link).iterdir()}
        assert files == {"model.pt", "optimizer.pt", "trainer.pt", "meta.json", "tokenizer.json"}
    artifacts = events(out, "artifact")
    assert artifacts and all((a["name"], a["kind"]) == ("best", "model") for a in artifacts)
    assert artifacts[-1]["metadata"]["step"] == best_step
    assert "learned from context" in result.output


def test_the_console_script_prints_the_seed_style_lines(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "trackkit-train"), "--data", str(data), "--output-dir",
         str(tmp_path / "run"), *SMALL_MODEL, "--max-steps", "6", "--log-interval", "3", "--tracker", "console",
         "--console-lang", "en"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    line = re.compile(r"^step +3 \| epoch  1/1 \| batch    3/21 \| loss \d\.\d{4} \| ppl +\d+\.\d\d \| "
                      r"lr \d\.\de-\d\d \| time \d+\.\d\ds$", re.M)
    assert line.search(proc.stdout), proc.stdout


def test_help_shows_the_options_grouped_with_the_seed_spellings():
    result = train("--help")
    assert result.exit_code == 0
    headings = re.findall(r"^(\w+) options:$", result.output, re.M)
    assert headings == ["Model", "Data", "Training", "Checkpoints", "DeepSpeed", "Tracking", "Other"]
    for spelling in ("--output-dir, --output_dir", "--batch-size, --batch_size", "--learning-rate, --learning_rate",
                     "--num-epochs, --num_epochs", "--max-steps", "--log-interval", "--eval-interval", "--resume",
                     "--tracker", "--offline", "--use_wandb", "--config", "sample",
                     "--deepspeed-config, --deepspeed_config", "--zero-stage, --zero_stage"):
        assert spelling in result.output
    training = result.output.split("Training options:")[1].split("Checkpoints options:")[0]
    assert "--grad-accum" in training and "--tracker" not in training


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_a_config_file_supplies_options_and_flags_override_it(tmp_path, fmt):
    data = write_corpus(tmp_path, chars=1500)
    values = {"data": str(data), "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 3,
              "learning_rate": 0.002, "max_steps": 2, "eval_batches": 2, "tracker": ["jsonl"]}
    text = {
        "toml": "[model]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()),
        "yaml": "".join(f"{k.replace('_', '-')}: {json.dumps(v)}\n" for k, v in values.items()),
        "json": json.dumps(values),
    }[fmt]
    config_file = tmp_path / f"run.{fmt}"
    config_file.write_text(text)
    out = tmp_path / "run"
    result = train("--config", config_file, "--output-dir", out, "--batch-size", 5)
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "trackkit" / "config.json").read_text())
    values = (recorded["n_layer"], recorded["n_embd"], recorded["learning_rate"], recorded["max_steps"])
    assert values == (2, 16, 0.002, 2)
    assert recorded["batch_size"] == 5  # the flag wins over the file
    assert json.loads((out / "trackkit" / "run.json").read_text())["trackers"] == ["jsonl"]


@pytest.mark.parametrize("name, text, message", [
    ("run.toml", "batch_sise = 4\n", "config file {f}: unknown option 'batch_sise'"),
    ("run.toml", "batch_size = \n", "config file {f} is not valid: Invalid value (at line 1, column 14)"),
    ("run.json", "[1, 2]", "config file {f} must hold a table of option = value"),
    ("run.ini", "x=1", "config file {f}: use .toml, .yaml, .yml or .json"),
])
def test_a_bad_config_file_is_one_line(tmp_path, name, text, message):
    config_file = tmp_path / name
    config_file.write_text(text)
    result = train("--config", config_file, "--output-dir", tmp_path / "run")
    assert (result.exit_code, result.output) == (2, "Error: " + message.format(f=config_file) + "\n")
    assert not (tmp_path / "run").exists()


def test_sample_prints_text_from_a_trained_checkpoint(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    assert train("--data", data, "--output-dir", out, *SMALL_MODEL, "--max-steps", 30, "--learning-rate", 3e-3,
                 "--tracker", "none").exit_code == 0
    result = train("sample", "--checkpoint", out / "checkpoints" / "best", "--prompt", "The ", "--max-new-tokens", 40,
                   "--num-samples", 2)
    assert result.exit_code == 0, result.output
    first, second = result.output.rstrip("\n").split("\n" + "-" * 40 + "\n")
    assert first.startswith("The ") and second.startswith("The ")
    assert len(first) == len("The ") + 40 and first != second
    # A run folder means its best checkpoint; greedy decoding is deterministic.
    greedy = [train("sample", "--checkpoint", out, "--temperature", 0, "--max-new-tokens", 20).output for _ in range(2)]
    assert greedy[0] == greedy[1] and len(greedy[0]) == 21
