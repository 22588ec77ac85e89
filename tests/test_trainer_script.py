"""scripts/run_pretrain_*.sh: the guide's settings at their top, USE_WANDB, wandb offline without a key."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from trainer_util import child_env, write_corpus

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [REPO / "scripts" / "run_pretrain_simple.sh", REPO / "scripts" / "run_pretrain_deepspeed.sh"]
SETTINGS = {"USE_WANDB": "true", "WANDB_PROJECT": "gpt-pretrain", "WANDB_RUN_NAME": "", "MODEL_SIZE": "tiny",
            "LEARNING_RATE": "1e-3", "BATCH_SIZE": "12", "NUM_EPOCHS": "4", "OUTPUT_DIR": "runs/$(date +%Y%m%d-%H%M%S)"}


def script_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """No W&B key and no ~/.netrc; should anything still try to go online, it meets a closed port."""
    env = {k: v for k, v in child_env().items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "NETRC", *SETTINGS)}
    env.update(HOME=str(tmp_path), WANDB_BASE_URL="http://127.0.0.1:9", OMP_NUM_THREADS="1", **settings)
    return env


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_settings_sit_at_the_top_as_editable_defaults_the_environment_overrides(script):
    text = script.read_text()
    top = text[: text.index("set -euo pipefail")]  # before the script does anything
    for name, default in SETTINGS.items():
        assert re.search(rf'^{name}="\${{{name}:-{re.escape(default)}}}"', top, re.M), name


def train_args(tmp_path: Path, *args: str, **settings: str) -> list[str]:
    """The trackkit-train arguments scripts/train_args.sh makes of the settings (the scripts' defaults)."""
    values = {**{k: v for k, v in SETTINGS.items() if k != "OUTPUT_DIR"}, "OUTPUT_DIR": "out", **settings}
    assignments = "".join(f'{k}="${{{k}:-{v}}}"; ' for k, v in values.items())
    done = subprocess.run(["bash", "-c", f'{assignments}source scripts/train_args.sh; printf "%s\\n" '
                           '"${train_args[@]}"', "run_pretrain_simple.sh", *args], cwd=REPO, capture_output=True,
                          text=True, env=script_env(tmp_path, **settings), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("value, on", [("true", True), ("True", True), ("TRUE", True), ("1", True), ("yes", True),
                                       ("Yes", True), ("false", False), ("False", False), ("0", False), ("no", False),
                                       ("NO", False)])
def test_use_wandb_takes_true_and_false_in_any_case(tmp_path, value, on):
    args = train_args(tmp_path, USE_WANDB=value)
    assert ("--use_wandb" in args) is on
    assert ("--wandb_project" in args) is on


def test_the_settings_become_trackkit_train_options(tmp_path):
    args = train_args(tmp_path, MODEL_SIZE="6layer", LEARNING_RATE="1e-4", BATCH_SIZE="8", NUM_EPOCHS="3",
                      OUTPUT_DIR="./outputs", WANDB_PROJECT="my-gpt-project", WANDB_RUN_NAME="experiment-1")
    assert " ".join(args) == ("--n_layer 6 --learning_rate 1e-4 --batch_size 8 --num_epochs 3 --output_dir ./outputs "
                              "--use_wandb --wandb_project my-gpt-project --wandb_run_name experiment-1 --offline")
    assert train_args(tmp_path, MODEL_SIZE="gpt2-124m")[:2] == ["--model", "gpt2-124m"]
    # Resuming, the checkpoint holds the run's settings: only a flag given again changes one.
    assert train_args(tmp_path, "--resume")[:2] == ["--output_dir", "out"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@pytest.mark.parametrize("value", ["maybe", "2", "on", "ture"])
def test_any_other_use_wandb_is_one_line_and_exit_2(tmp_path, script, value):
    out = tmp_path / "run"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60,
                          env=script_env(tmp_path, USE_WANDB=value, OUTPUT_DIR=str(out)))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"Error: USE_WANDB must be true or false (or 1/0, yes/no), not '{value}'\n"
    assert not out.exists()


@pytest.mark.slow
def test_the_script_trains_with_the_settings_and_wandb_offline_when_no_key_is_configured(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    env = script_env(tmp_path, WANDB_PROJECT="trainer-test", MODEL_SIZE="1layer", LEARNING_RATE="3e-4", BATCH_SIZE="4",
                     NUM_EPOCHS="2", OUTPUT_DIR=str(out))
    proc = subprocess.run(
        [str(SCRIPTS[0]), "--data", str(data), "--n-head", "2", "--n-embd", "32", "--block-size", "16",
         "--eval-batches", "4", "--max-steps", "4", "--log-interval", "2"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no W&B API key configured; wandb runs offline" in proc.stderr
    run = json.loads((out / "trackkit" / "run.json").read_text())
    assert run["trackers"] == ["console", "jsonl", "wandb"] and run["status"] == "success"
    assert "wandb" in run["backend_ids"] and run["project"] == "trainer-test"
    assert re.fullmatch(r"model-1layer-lr-3e-4-\d{8}_\d{6}", run["name"])
    config = json.loads((out / "trackkit" / "config.json").read_text())
    assert (config["n_layer"], config["learning_rate"], config["batch_size"]) == (1, 3e-4, 4)
    assert list((out / "wandb").glob("offline-run-*"))  # wandb's own offline folder, in the run
    assert "step      4" in proc.stdout  # the console line, extra arguments passed through
    assert proc.stdout.startswith(f"Run {run['name']} (")  # the setup's checks print nothing (DeepSpeed warns)
