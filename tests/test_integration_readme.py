"""The README's example for each framework runs as written (the code is read from the README, so they cannot drift)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from integration_util import record_steps, run_json

README = Path(__file__).resolve().parents[1] / "README.md"


def example(framework: str) -> str:
    found = re.search(rf"<!-- example: {framework} -->\n```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert found, f"README has no example marked {framework}"
    return found.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("framework, module, folder", [
    ("hf", "transformers", "hf-demo"), ("lightning", "lightning", "lightning-demo"),
    ("accelerate", "accelerate", "accelerate-demo"),
])
def test_readme_example_trains_and_records_the_run(framework, module, folder, tmp_path):
    pytest.importorskip(module)
    script = tmp_path / "example.py"
    script.write_text(example(framework))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "runs" / folder
    assert run_json(out)["status"] == "success"
    steps = record_steps(out)
    assert steps["train/loss"] and "eval/loss" in steps
    assert (out / "tensorboard").is_dir()
