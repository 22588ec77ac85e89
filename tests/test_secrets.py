"""No secret is written anywhere: every tracker gets the config scrubbed at every depth."""
from pathlib import Path

import pytest

import trackkit
from trackkit.record import scrub

SECRETS = [b"SECRET-A1", b"SECRET-B2", b"SECRET-C3", b"SECRET-D4", b"SECRET-E5", b"SECRET-F6"]
CONFIG = {
    "learning_rate": 3e-4,
    "nested": {"api_token": "SECRET-A1", "deeper": {"db_password": "SECRET-B2", "tokenizer": "char"}},
    "endpoints": [{"name": "a", "secret": "SECRET-C3"}, {"name": "b", "keys": ["x"]}],
    "HF_TOKEN": "SECRET-D4",
    "store": "https://user:SECRET-E5@example.org/mlflow",
    "pairs": ({"ApiKey": "SECRET-F6"},),
}


def test_scrub_masks_every_depth_and_keeps_what_is_not_a_credential():
    assert scrub(CONFIG) == {
        "learning_rate": 3e-4,
        "nested": {"api_token": "***", "deeper": {"db_password": "***", "tokenizer": "char"}},
        "endpoints": [{"name": "a", "secret": "***"}, {"name": "b", "keys": ["x"]}],
        "HF_TOKEN": "***",
        "store": "https://user:***@example.org/mlflow",
        "pairs": ({"ApiKey": "***"},),
    }


def files_holding(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.slow
def test_no_tracker_writes_a_secret_anywhere_nor_prints_one(tmp_path, capfd):
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    (tmp_path / "best.pt").write_bytes(b"weights")
    trackers = ["console", "jsonl", "tensorboard", "wandb", "csv", "mlflow"]
    options = {"offline": True, "wandb_tags": "a", "mlflow_tags": {"owner": "me"}}
    with trackkit.start(trackers, output_dir=out, config=CONFIG, options=options) as run:
        run.log_train({"loss": 1.0}, step=1)
        run.log_artifact(tmp_path / "best.pt", name="best", kind="model",
                         metadata={"step": 1, "auth": {"token": "SECRET-A1"}})
        run.log_final({"loss": 1.0})
    assert all(h["lost"] == 0 for h in run.summary["trackers"].values()), run.summary["trackers"]
    captured = capfd.readouterr()
    for secret in SECRETS:
        assert files_holding(tmp_path, secret) == [], secret  # the run's folder, wandb's home and logs
        assert secret.decode() not in captured.out + captured.err
    # The masked values did reach every backend: the test looked in the right places.
    for folder in ("tensorboard", "wandb", "mlflow", "trackkit"):  # the csv tracker writes no config
        assert files_holding(out / folder, b"***"), folder
