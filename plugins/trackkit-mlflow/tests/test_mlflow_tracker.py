"""The MLflow tracker, checked by reading what it recorded back through MLflow itself:
``MlflowClient`` on the store, and ``mlflow ui`` serving it over the REST API."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from trackkit_mlflow.local_server import LocalServer

import trackkit
from trackkit.cli import main as trackkit_cli
from trackkit.options import tracker_options

BIN = Path(sys.executable).parent
CONFIG = {"learning_rate": 3e-4, "batch_size": 8, "notes": "n" * 7000}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # whatever MLflow puts relative to the cwd stays in tmp_path


def local_store(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir / 'mlflow' / 'mlflow.db').resolve().as_posix()}"


def mlflow_run_id(output_dir: Path) -> str:
    return json.loads((output_dir / "trackkit" / "run.json").read_text())["backend_ids"]["mlflow"]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_trackkit_plugins_lists_mlflow_with_its_distribution() -> None:
    result = CliRunner().invoke(trackkit_cli, ["plugins"])
    assert result.exit_code == 0, result.output
    row = next(line.split() for line in result.output.splitlines() if line.startswith("mlflow "))
    assert row == ["mlflow", "trackkit-mlflow", "0.2.0", "trackkit_mlflow:MlflowTracker", "ok"]


def test_options_appear_in_help_and_reach_the_tracker() -> None:
    @click.command()
    @tracker_options()
    def command(tracking) -> None:
        click.echo(json.dumps(tracking.options, sort_keys=True))

    help_text = CliRunner().invoke(command, ["--help"]).output
    for option in ("--mlflow-tracking-uri", "--mlflow-experiment", "--mlflow-tag"):
        assert option in help_text
    result = CliRunner().invoke(
        command,
        ["--tracker", "mlflow", "--mlflow-experiment", "exp", "--mlflow-tag", "team=nlp", "--mlflow_tag", "x=1=2"],
    )
    options = json.loads(result.output)
    assert options["mlflow_experiment"] == "exp"
    assert options["mlflow_tags"] == {"team": "nlp", "x": "1=2"}
    assert CliRunner().invoke(command, ["--mlflow-tag", "novalue"]).exit_code == 2


def test_run_is_read_back_by_mlflow_client(tmp_path: Path) -> None:
    out = tmp_path / "run-a"
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    run = trackkit.start(
        ["mlflow"], output_dir=out, config=CONFIG, project="demo", options={"mlflow_tags": {"team": "nlp"}}
    )
    called = {}
    with run:
        for step in (1, 2, 3, 4):
            called[step] = time.time()
            run.log_train({"loss": 4.0 / step, "learning_rate": 1e-3 * step}, step=step)
            time.sleep(0.2)  # the tracker sends them up to a second later, in one request
        run.log_eval({"loss": 1.5, "perplexity": 4.48}, step=4)
        run.log_epoch({"train_loss": 2.0, "number": 1}, epoch=1, step=4)
        run.log_metrics("system", {"cpu_percent": 37}, step=4)
        run.log_artifact(checkpoint, name="best", kind="model", metadata={"step": 4})
        run.log_final({"best_perplexity": 4.48})

    client = MlflowClient(local_store(out))
    run_id = mlflow_run_id(out)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "run-a"
    assert client.get_experiment(got.info.experiment_id).name == "demo"
    assert history(client, run_id, "train/loss") == [(1, 4.0), (2, 2.0), (3, 4.0 / 3), (4, 1.0)]
    assert history(client, run_id, "train/learning_rate") == [(s, 1e-3 * s) for s in (1, 2, 3, 4)]
    assert history(client, run_id, "eval/perplexity") == [(4, 4.48)]
    assert history(client, run_id, "epoch/train_loss") == [(4, 2.0)]  # at the global step, as in every backend
    # Each point has the time of the log call, not of the request that carried it.
    points = client.get_metric_history(run_id, "train/loss")
    assert all(abs(p.timestamp / 1000 - called[p.step]) < 0.05 for p in points)
    assert history(client, run_id, "system/cpu_percent") == [(4, 37.0)]
    assert history(client, run_id, "final/best_perplexity") == [(4, 4.48)]
    # MLflow caps a param value at 6000 characters.
    assert got.data.params == {"learning_rate": "0.0003", "batch_size": "8", "notes": "n" * 6000}
    assert got.data.tags["team"] == "nlp"
    assert got.data.tags["trackkit.run_id"] == run.info.id
    assert json.loads(got.data.tags["trackkit.artifact.best"]) == {"kind": "model", "file": "best.pt", "step": 4}
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/best.pt"]
    fetched = client.download_artifacts(run_id, "model/best.pt", str(tmp_path))
    assert Path(fetched).read_bytes() == b"weights"
    assert got.info.artifact_uri.startswith((out / "mlflow" / "artifacts").resolve().as_uri())


def test_failed_and_interrupted_runs_end_failed_and_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with pytest.raises(RuntimeError):
        with trackkit.start(["mlflow"], output_dir=tmp_path / "crashed") as run:
            run.log_train({"loss": 1.0}, step=1)
            raise RuntimeError("boom")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    run = trackkit.start(["mlflow"], output_dir=tmp_path / "stopped", options={"mlflow_tracking_uri": store})
    run.log_train({"loss": 1.0}, step=1)
    run.finish("interrupted")

    client = MlflowClient(store)
    assert client.get_run(mlflow_run_id(tmp_path / "crashed")).info.status == "FAILED"
    assert client.get_run(mlflow_run_id(tmp_path / "stopped")).info.status == "KILLED"
    assert not (tmp_path / "crashed" / "mlflow").exists()  # the given store, not the default one


def test_offline_records_to_the_local_store_instead_of_a_server(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast if the tracker tried it
    out = tmp_path / "run"
    with trackkit.start(["mlflow"], output_dir=out, options={"offline": True}) as run:
        run.log_train({"loss": 2.0}, step=1)
    client = MlflowClient(local_store(out))
    assert history(client, mlflow_run_id(out), "train/loss") == [(1, 2.0)]


def test_resume_continues_the_same_run_without_duplicate_steps(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    first = trackkit.start(["mlflow"], output_dir=out, config={"max_steps": 6, "notes": "n" * 7000})
    for step in range(1, 7):
        first.log_train({"loss": 10.0 - step}, step=step)
    first.log_eval({"loss": 5.0}, step=3)
    first.log_epoch({"train_loss": 6.0}, epoch=1, step=3)
    first.finish("interrupted")  # its last checkpoint was step 4; steps 5 and 6 came after it
    run_id = mlflow_run_id(out)

    config = {"max_steps": 8, "notes": "n" * 7000, "resumed": True}
    with trackkit.start(["mlflow"], output_dir=out, resume_from_step=4, config=config) as second:
        for step in range(3, 9):  # replays 3-4 (up to the checkpoint) and redoes 5-6
            second.log_train({"loss": 20.0 - step}, step=step)
        second.log_eval({"loss": 4.0}, step=6)
        second.log_epoch({"train_loss": 3.0}, epoch=2, step=8)

    assert mlflow_run_id(out) == run_id
    client = MlflowClient(local_store(out))
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert len(client.search_runs([got.info.experiment_id])) == 1
    # One point per step: what MLflow already held is kept (it cannot delete points), the rest is new.
    assert history(client, run_id, "train/loss") == [
        (1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 5.0), (6, 4.0), (7, 13.0), (8, 12.0)
    ]
    assert history(client, run_id, "eval/loss") == [(3, 5.0), (6, 4.0)]
    assert history(client, run_id, "epoch/train_loss") == [(3, 6.0), (8, 3.0)]
    # Params cannot change in MLflow: the first value stays (and is named), a new key is added.
    assert got.data.params == {"max_steps": "6", "notes": "n" * 6000, "resumed": "True"}
    assert "keeps the first values of max_steps\n" in capfd.readouterr().err
    assert got.data.tags["trackkit.resumed_from_step"] == "4"


@contextlib.contextmanager
def mlflow_ui(store: str, cwd: Path) -> Iterator[str]:
    """``mlflow ui`` on a free local port, ready to answer; always stopped afterwards."""
    with LocalServer(cwd, store=store, ui=True) as server:
        yield server.url


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.mark.slow
def test_mlflow_ui_opens_the_local_store_and_serves_as_tracking_server(tmp_path: Path) -> None:
    out = tmp_path / "local"
    with trackkit.start(["mlflow"], output_dir=out) as run:
        run.log_train({"loss": 2.5}, step=1)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")

    with mlflow_ui(local_store(out), tmp_path) as url:
        got = get_json(f"{url}/api/2.0/mlflow/runs/get?run_id={mlflow_run_id(out)}")["run"]
        assert got["info"]["status"] == "FINISHED"
        assert [(m["key"], m["value"], m["step"]) for m in got["data"]["metrics"]] == [("train/loss", 2.5, 1)]

        # The same server as --mlflow-tracking-uri: metrics and artifacts go over HTTP.
        served = tmp_path / "served"
        options = {"mlflow_tracking_uri": url, "mlflow_experiment": "served"}
        with trackkit.start(["mlflow"], output_dir=served, options=options) as run:
            run.log_train({"loss": 1.25}, step=7)
            run.log_artifact(checkpoint, kind="model")
        client = MlflowClient(url)
        run_id = mlflow_run_id(served)
        assert client.get_run(run_id).info.status == "FINISHED"
        assert history(client, run_id, "train/loss") == [(7, 1.25)]
        assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/best.pt"]
    assert not (served / "mlflow").exists()


@pytest.mark.slow
def test_trackkit_train_records_an_mlflow_run(tmp_path: Path) -> None:
    train = str(BIN / "trackkit-train")
    assert "--mlflow-tracking-uri" in subprocess.run([train, "--help"], capture_output=True, text=True).stdout
    out = tmp_path / "train"
    done = subprocess.run(
        [train, "--tracker", "mlflow,jsonl", "--output-dir", str(out),
         "--max-steps", "6", "--eval-interval", "3", "--log-interval", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    client = MlflowClient(local_store(out))
    run_id = mlflow_run_id(out)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert client.get_experiment(got.info.experiment_id).name == "gpt-pretrain"  # the trainer's project
    # MLflow holds exactly what the run's local record (metrics.jsonl) holds, step for step.
    events = [json.loads(line) for line in (out / "trackkit" / "metrics.jsonl").read_text().splitlines()]
    for namespace in ("train", "eval"):
        expected: dict[str, list[tuple[int, float]]] = {}
        for event in events:
            if event["event"] == namespace:
                for key, value in event["metrics"].items():
                    expected.setdefault(key, []).append((event["step"], float(value)))
        assert f"{namespace}/loss" in expected
        for key, points in expected.items():
            assert history(client, run_id, key) == points, key
    assert [step for step, _ in history(client, run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in history(client, run_id, "eval/loss")] == [3, 6]
    assert history(client, run_id, "final/best_perplexity")
    config = json.loads((out / "trackkit" / "config.json").read_text())
    assert got.data.params == {key: str(value) for key, value in config.items()}
    assert "model.pt" in {Path(a.path).name for a in client.list_artifacts(run_id, "model/best")}
