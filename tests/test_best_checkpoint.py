"""Which checkpoint is best (its step, path and metrics) is in every backend's summary, uploaded or not."""
import json

import pytest
from click.testing import CliRunner

import trackkit
from trackkit.cli import main as trackkit_cli
from trackkit.wandb_files import run_files


@pytest.mark.slow
def test_every_backend_records_which_checkpoint_is_best(tmp_path, capfd):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    out = tmp_path / "run"
    best = {}
    with trackkit.start(["console", "jsonl", "tensorboard", "wandb", "mlflow"], output_dir=out,
                        options={"offline": True}) as run:
        for step in (10, 20):
            run.log_train({"loss": 3.0 / step}, step=step)
            folder = out / "checkpoints" / f"step-{step:08d}"
            folder.mkdir(parents=True)
            (folder / "model.pt").write_text(f"weights {step}")
            best = {"step": step, "val_loss": 2.0 / step}
            run.log_artifact(folder, name="best", kind="model", metadata=best)
    path = str((out / "checkpoints" / "step-00000020").resolve())

    summary = json.loads((out / "trackkit" / "summary.json").read_text())
    assert summary["artifacts"]["best"] == {"path": path, "kind": "model", "step": 20, "metadata": best}
    assert f"  kept model best: {path} (step 20)" in capfd.readouterr().out
    board = EventAccumulator(str(out / "tensorboard"), size_guidance={TENSORS: 0})
    board.Reload()
    (text,) = [e.tensor_proto.string_val[0].decode() for e in board.Tensors("artifact/best")][-1:]
    assert f"`{path}`" in text and "at step 20" in text and "| val_loss | 0.1 |" in text
    (part,) = run_files(out / "wandb", run.info.backend_ids["wandb"])
    assert part.summary["artifact/best"] == {"path": path, "kind": "model", "step": 20, "metadata": best}
    mlflow_run = MlflowClient(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}").get_run(run.info.backend_ids["mlflow"])
    assert json.loads(mlflow_run.data.tags["trackkit.artifact.best"]) == {"kind": "model", "file": "step-00000020",
                                                                          "step": 20, "val_loss": 0.1}
    shown = CliRunner().invoke(trackkit_cli, ["runs", "show", str(out)])
    assert shown.exit_code == 0 and path in shown.output and "step 20" in shown.output, shown.output
