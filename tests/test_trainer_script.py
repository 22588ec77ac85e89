"""scripts/run_pretrain_simple.sh: the README's main command, with wandb offline when no key is configured."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from trainer_util import SMALL_MODEL, write_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_script_trains_with_wandb_offline_when_no_key_is_configured(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "NETRC")}
    # No key and no ~/.netrc; should anything still try to go online, it meets a closed port.
    env.update(HOME=str(tmp_path), WANDB_BASE_URL="http://127.0.0.1:9", WANDB_PROJECT="trainer-test",
               WANDB_RUN_NAME="script-run", OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(REPO / "scripts" / "run_pretrain_simple.sh"), "--data", str(data), *SMALL_MODEL, "--max-steps", "4",
         "--log-interval", "2", "--output-dir", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no W&B API key configured; wandb runs offline" in proc.stderr
    run = json.loads((out / "trackkit" / "run.json").read_text())
    assert run["trackers"] == ["console", "jsonl", "wandb"] and run["status"] == "success"
    assert "wandb" in run["backend_ids"]
    assert list((out / "wandb").glob("offline-run-*"))  # wandb's own offline folder, in the run
    assert "step      4" in proc.stdout  # the console line, extra arguments passed through
    assert proc.stdout.startswith("Run run (")  # the setup's checks print nothing (DeepSpeed warns on import)
