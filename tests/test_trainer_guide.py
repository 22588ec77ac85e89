"""Everything the guide promises, as the guide says it: its command, run names, its examples in order, PretrainConfig.

The guide (the wandb guide of our users' old project) trains with ``python train/pretrain.py
--use_wandb --wandb_project ... --output_dir ./outputs``; here that is ``python -m
reference_trainer`` (or ``trackkit-train``) with the same options.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN
from trainer_util import SMALL_MODEL, child_env, events, train, write_corpus

from reference_trainer import PretrainConfig, pretrain
from reference_trainer.errors import InputError
from reference_trainer.tracking import compact
from trackkit.wandb_files import read_records, run_files

REPO = Path(__file__).resolve().parents[1]
GUIDE_NAME = re.compile(r"model-(\w+)-lr-([\de.-]+)-\d{8}_\d{6}")


def run_json(run: Path) -> dict:
    return json.loads((run / "trackkit" / "run.json").read_text())


def wandb_name(run: Path) -> str:
    """The display name of the run's (first) wandb run, read from wandb's own run file."""
    record = run_json(run)
    (path, *_) = sorted((run / "wandb").glob(f"*run-*/run-{record['backend_ids']['wandb']}.wandb"))
    return next(r.run.display_name for r in read_records(path) if r.WhichOneof("record_type") == "run")


def tensorboard_name(run: Path) -> str:
    """The run's name in TensorBoard: its hparams session."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    data = plugin_data_pb2.HParamsPluginData.FromString(
        accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)
    return data.session_start_info.group_name


def python_m(*args: object, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reference_trainer", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env or child_env())


# -- python -m reference_trainer ---------------------------------------------------------------------
def test_python_m_reference_trainer_is_trackkit_train(tmp_path):
    command = subprocess.run([str(BIN / "trackkit-train"), "--help"], capture_output=True, text=True, timeout=120)
    module = python_m("--help")
    assert (module.returncode, module.stdout) == (0, command.stdout)
    bad = [subprocess.run([*runner, "--learning_rate", "inf", "--output_dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
           for runner in ([str(BIN / "trackkit-train")], [sys.executable, "-m", "reference_trainer"])]
    assert [(b.returncode, b.stdout, b.stderr.splitlines()[-1]) for b in bad] == [
        (2, "", "Error: --learning-rate must be a finite number, got inf")] * 2
    data = write_corpus(tmp_path, chars=1500)
    done = python_m("--data", data, *SMALL_MODEL, "--max-steps", 2, "--output-dir", tmp_path / "run",
                    "--tracker", "jsonl")
    assert done.returncode == 0, done.stderr
    assert [e["metrics"]["final/total_steps"] for e in events(tmp_path / "run", "final")] == [2]


# -- run names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lr, written", [(1e-3, "1e-3"), (3e-4, "3e-4"), (2.5e-4, "2.5e-4"), (0.01, "1e-2")])
def test_a_learning_rate_is_written_as_people_write_it(lr, written):
    assert compact(lr) == written


def test_the_default_run_name_is_the_guides_in_every_backend_and_a_resumed_run_keeps_it(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    common = ["--output-dir", out, "--tracker", "console,jsonl,tensorboard,wandb", "--offline"]
    result = train("--data", data, *SMALL_MODEL, "--learning-rate", 3e-4, "--max-steps", 2, *common)
    assert result.exit_code == 0, result.output
    name = run_json(out)["name"]
    assert GUIDE_NAME.fullmatch(name).groups() == ("1layer", "3e-4")  # SMALL_MODEL gives --n-layer 1
    assert result.output.startswith(f"Run {name} (")
    assert wandb_name(out) == tensorboard_name(out) == name
    assert json.loads((out / "checkpoints" / "last" / "meta.json").read_text())["run_name"] == name
    resumed = train("--resume", "--max-steps", 3, *common)
    assert resumed.exit_code == 0, resumed.output
    assert run_json(out)["name"] == name


def test_the_default_run_name_has_the_preset_when_no_layer_count_is_given(tmp_path):
    data = write_corpus(tmp_path, chars=3000)
    out = tmp_path / "run"
    result = train("--data", data, "--max-steps", 1, "--eval-batches", 1, "--output-dir", out, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    assert GUIDE_NAME.fullmatch(run_json(out)["name"]).groups() == ("tiny", "1e-3")


@pytest.mark.parametrize("how", ["flag", "guide-spelling", "environment"])
def test_a_run_name_given_is_the_name_in_every_backend(tmp_path, monkeypatch, how):
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    given = {"flag": ["--wandb-run-name", "experiment-1"], "guide-spelling": ["--wandb_run_name", "experiment-1"],
             "environment": []}[how]
    if how == "environment":
        monkeypatch.setenv("WANDB_RUN_NAME", "experiment-1")
    result = train("--data", data, *SMALL_MODEL, "--max-steps", 2, "--output-dir", out, "--tracker",
                   "console,jsonl,tensorboard,wandb", "--offline", *given)
    assert result.exit_code == 0, result.output
    assert run_json(out)["name"] == wandb_name(out) == tensorboard_name(out) == "experiment-1"
    assert result.output.startswith("Run experiment-1 (")


# -- --overwrite-output-dir ---------------------------------------------------------------------------------
@pytest.fixture
def old_run(tmp_path) -> Path:
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "outputs"
    result = train("--data", data, *SMALL_MODEL, "--max-steps", 3, "--output-dir", out, "--tracker",
                   "jsonl,tensorboard")
    assert result.exit_code == 0, result.output
    (out / "notes.txt").write_text("mine")
    return out


def test_a_folder_holding_a_run_is_refused_by_default_and_the_message_names_the_way_out(old_run):
    before = sorted((p, p.stat().st_mtime_ns) for p in old_run.rglob("*"))
    result = train("--output-dir", old_run, "--max-steps", 2)
    assert (result.exit_code, result.output) == (2, (
        f"Error: {old_run} already holds checkpoints; continue with --resume, start over with "
        "--overwrite-output-dir (deletes them), or choose another --output-dir\n"))
    assert sorted((p, p.stat().st_mtime_ns) for p in old_run.rglob("*")) == before


def test_overwrite_output_dir_deletes_the_old_runs_files_and_starts_a_new_run(old_run, tmp_path):
    old_id = run_json(old_run)["id"]
    result = train("--data", tmp_path / "corpus.txt", *SMALL_MODEL, "--max-steps", 2, "--output-dir", old_run,
                   "--tracker", "jsonl,tensorboard", "--overwrite_output_dir")
    assert result.exit_code == 0, result.output
    assert (f"trackkit-train: --overwrite-output-dir: deleted checkpoints, trackkit, tokenizer.json, tensorboard in "
            f"{old_run}; starting a new run") in result.output
    record = run_json(old_run)
    assert record["id"] != old_id and record["resumed_from_step"] is None
    assert [e["step"] for e in events(old_run, "train")] == [1, 2][: len(events(old_run, "train"))]
    assert [e["event"] for e in events(old_run)].count("final") == 1
    assert sorted(p.name for p in (old_run / "checkpoints").glob("step-*")) == ["step-00000002"]
    assert (old_run / "notes.txt").read_text() == "mine"  # not the run's: it stays
    assert "switched off" not in result.output  # TensorBoard found a clean folder


def test_overwrite_output_dir_with_resume_is_one_line(old_run):
    result = train("--output-dir", old_run, "--resume", "--overwrite-output-dir")
    assert (result.exit_code, result.output) == (
        2, "Error: --overwrite-output-dir starts a new run and --resume continues one; give one of them\n")


def test_a_run_killed_before_its_first_checkpoint_is_refused_too(old_run):
    shutil.rmtree(old_run / "checkpoints")  # as a kill before the first checkpoint leaves the folder
    result = train("--output-dir", old_run, "--max-steps", 2)
    assert result.exit_code == 2 and result.output.startswith(f"Error: {old_run} already holds a run; continue with")


# -- PretrainConfig ---------------------------------------------------------------------------------------
def test_pretrain_config_has_the_guides_fields_and_defaults():
    config = PretrainConfig()
    assert (config.use_wandb, config.wandb_project, config.wandb_entity, config.wandb_run_name) == (
        True, "gpt-pretrain", None, None)


def test_training_from_python_with_pretrain_config(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "outputs"
    config = PretrainConfig(data=str(data), n_layer=1, n_head=2, n_embd=32, block_size=16, eval_batches=4,
                            output_dir=str(out), batch_size=8, learning_rate=1e-4, num_epochs=10, max_steps=3,
                            wandb_project="my-gpt-project", wandb_run_name="experiment-1", offline=True)
    final = pretrain(config)
    assert final["total_steps"] == 3 and math.isfinite(final["best_perplexity"])
    record = run_json(out)
    assert (record["name"], record["project"], record["trackers"]) == (
        "experiment-1", "my-gpt-project", ["console", "jsonl", "wandb"])
    config_json = json.loads((out / "trackkit" / "config.json").read_text())
    assert (config_json["trackers"], config_json["wandb_project"], config_json["wandb_run_name"]) == (
        "console,jsonl,wandb", "my-gpt-project", "experiment-1")
    assert "use_wandb" not in config_json  # the choice is the trackers: what trackkit-train records too
    (part,) = run_files(out / "wandb", record["backend_ids"]["wandb"])
    assert (part.project, part.config["trackers"], part.config["batch_size"]) == (
        "my-gpt-project", "console,jsonl,wandb", 8)
    assert wandb_name(out) == "experiment-1"


def test_pretrain_config_is_checked_like_the_command_line(tmp_path):
    with pytest.raises(InputError, match="--learning-rate must be a finite number, got inf"):
        pretrain(PretrainConfig(learning_rate=math.inf, output_dir=str(tmp_path / "run")))
    with pytest.raises(InputError, match="--wandb-project must be text, got 3"):
        pretrain(PretrainConfig(wandb_project=3, output_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


# -- the guide, in order ------------------------------------------------------------------------------------
GUIDE_METRICS = {
    "train": ["loss", "perplexity", "learning_rate", "epoch", "step", "elapsed_time"],
    "eval": ["loss", "perplexity", "step", "best_perplexity"],
    "epoch": ["train_loss", "train_perplexity", "val_loss", "val_perplexity", "number", "best_perplexity"],
    "final": ["best_perplexity", "total_steps", "total_epochs"],
}


def script_env(tmp_path: Path) -> dict[str, str]:
    """No W&B key, no ~/.netrc, no WANDB_MODE: the scripts choose offline themselves."""
    env = {k: v for k, v in child_env().items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "NETRC")}
    env.update(HOME=str(tmp_path), WANDB_BASE_URL="http://127.0.0.1:9", OMP_NUM_THREADS="1",
               NUM_GPUS="1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    return env


@pytest.mark.slow
def test_the_guides_examples_in_order(tmp_path):
    """Its manual command, its "disable wandb" example into the same ./outputs, then both scripts."""
    data = write_corpus(tmp_path, chars=700)  # an epoch of 4 steps at the guide's batch size 8
    cap = ["--data", data, "--n_layer", 1, "--n_head", 2, "--n_embd", 32, "--block_size", 16, "--eval_batches", 2,
           "--max_steps", 5, "--log_interval", 1]
    manual = python_m("--use_wandb", "--wandb_project", "my-gpt-project", "--wandb_run_name", "experiment-1",
                      "--output_dir", "./outputs", "--batch_size", 8, "--learning_rate", "1e-4", "--num_epochs", 10,
                      *cap, cwd=tmp_path)
    assert manual.returncode == 0, manual.stderr
    out = tmp_path / "outputs"
    (part,) = run_files(out / "wandb", run_json(out)["backend_ids"]["wandb"])
    assert (part.project, wandb_name(out)) == ("my-gpt-project", "experiment-1")
    assert (part.config["batch_size"], part.config["learning_rate"], part.config["trackers"]) == (
        8, 1e-4, "console,jsonl,wandb")
    logged = {key for row in part.history for key in row} | set(part.summary)
    assert {f"{ns}/{name}" for ns, names in GUIDE_METRICS.items() for name in names} <= logged

    disable = ["--output_dir", "./outputs", "--batch_size", 8, "--num_epochs", 3, *cap]
    refused = python_m(*disable, cwd=tmp_path)
    assert refused.returncode == 2 and "--overwrite-output-dir" in refused.stderr
    again = python_m(*disable, "--overwrite-output-dir", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert run_json(out)["trackers"] == ["console", "jsonl"] and not (out / "wandb").exists()
    assert GUIDE_NAME.fullmatch(run_json(out)["name"]).groups() == ("1layer", "1e-3")

    for script in ("run_pretrain_simple.sh", "run_pretrain_deepspeed.sh"):
        done = subprocess.run([str(REPO / "scripts" / script), *map(str, cap)], capture_output=True, text=True,
                              timeout=600, cwd=tmp_path, env=script_env(tmp_path))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "no W&B API key configured; wandb runs offline" in done.stderr
    runs = sorted((tmp_path / "runs").iterdir())  # OUTPUT_DIR's default: runs/<date>-<time>, where they started
    assert len(runs) == 2
    for run in runs:
        record = run_json(run)
        assert record["status"] == "success" and record["trackers"] == ["console", "jsonl", "wandb"]
        assert record["project"] == "gpt-pretrain" and GUIDE_NAME.fullmatch(record["name"]).groups() == (
            "1layer", "1e-3")
        assert wandb_name(run) == record["name"]
    assert json.loads((runs[1] / "trackkit" / "config.json").read_text())["engine"] == "deepspeed"
