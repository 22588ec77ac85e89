"""The MLflow tracker against a real ``mlflow server`` on 127.0.0.1: requests per second, and outages.

The server is killed and started again while a run logs; afterwards the MLflow run is read back
with ``MlflowClient`` and compared with the run's local record (``metrics.jsonl``).
"""
from __future__ import annotations

import http.client
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from trackkit_mlflow.local_server import LocalServer

import trackkit
from trackkit.cli import main as trackkit_cli

BIN = Path(sys.executable).parent


@pytest.fixture
def server(tmp_path: Path):
    with LocalServer(tmp_path / "server") as server:
        yield server


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to ``upstream`` and counts them (method, path, time)."""

    def __init__(self, upstream: str):
        self.upstream, self.requests = upstream, []
        proxy = self

        class Forward(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.requests.append((self.command, self.path, time.monotonic()))
                connection = http.client.HTTPConnection(proxy.upstream.removeprefix("http://"), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Forward)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


def recorded(out: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per metric key, from the local record."""
    series: dict[str, list[tuple[int, float]]] = {}
    for line in (out / "trackkit" / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        for key, value in event.get("metrics", {}).items():
            series.setdefault(key, []).append((event["step"], float(value)))
    return series


def in_mlflow(uri: str, out: Path) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(uri)
    run_id = json.loads((out / "trackkit" / "run.json").read_text())["backend_ids"]["mlflow"]
    keys = client.get_run(run_id).data.metrics
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in keys}


class PacedLoop:
    """A training loop at about 20 steps a second, as the reference trainer logs: train every step, an
    evaluation and a checkpoint every 40 steps (flushed first, then logged as the artifact ``best``),
    keeping only the newest checkpoint folder. ``at`` maps a step to an action (kill the server...);
    ``until``, asked after each checkpoint, ends the loop 40 steps after it first says True."""

    def __init__(self, out: Path, uri: str, steps: int, at: dict | None = None, timeout: float = 30.0,
                 until: Callable[[], bool] = lambda: False):
        self.out, self.uri, self.steps, self.at, self.timeout = out, uri, steps, at or {}, timeout
        self.until = until
        self.waits: list[float] = []  # how long each flush before a checkpoint kept the loop waiting
        self.training: tuple[float, float] = (0.0, 0.0)  # monotonic times of the first step and of the finish

    def run(self) -> trackkit.Run:
        options = {"mlflow_tracking_uri": self.uri, "backend_timeout": 4.0}
        run = trackkit.start(["jsonl", "mlflow"], output_dir=self.out, options=options, config={"lr": 0.1},
                             limits=trackkit.Limits(stall_timeout=self.timeout))
        previous, started, last = None, time.monotonic(), self.steps
        for step in range(1, self.steps + 1):
            if step > last:
                break
            time.sleep(0.05)
            run.log_train({"loss": 1.0 / step, "learning_rate": 0.1, "tokens_per_second": 1000.0 + step}, step=step)
            if step in self.at:
                self.at[step]()
            if step % 40 == 0:
                run.log_eval({"loss": 2.0 / step, "perplexity": 1.0 + 1.0 / step}, step=step)
                began = time.monotonic()
                run.flush(timeout=self.timeout)
                self.waits.append(time.monotonic() - began)
                folder = self.out / "checkpoints" / f"step-{step:08d}"
                folder.mkdir(parents=True)
                (folder / "model.pt").write_text(f"weights of step {step}")
                run.log_artifact(folder, name="best", kind="model", metadata={"step": step})
                if previous is not None:
                    shutil.rmtree(previous)  # rotated away, perhaps before MLflow got it
                previous = folder
                if last == self.steps and self.until():
                    last = step + 40
        run.log_final({"best_perplexity": 1.01})
        self.training = (started, time.monotonic())
        run.finish(timeout=self.timeout)
        return run


def assert_mlflow_equals_the_record(uri: str, out: Path) -> None:
    client = MlflowClient(uri)
    assert in_mlflow(uri, out) == recorded(out)
    run_id = json.loads((out / "trackkit" / "run.json").read_text())["backend_ids"]["mlflow"]
    last = max(e["step"] for e in map(json.loads, (out / "trackkit" / "metrics.jsonl").read_text().splitlines())
               if e["event"] == "artifact")
    assert json.loads(client.get_run(run_id).data.tags["trackkit.artifact.best"])["step"] == last
    fetched = client.download_artifacts(run_id, "model/best/model.pt", str(out / "fetched"))
    assert Path(fetched).read_text() == f"weights of step {last}"  # the newest, though its folder was deleted


def restart_later(server: LocalServer, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), server.start()), daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_run_makes_at_most_two_requests_a_second_whatever_it_logs(tmp_path: Path, server: LocalServer) -> None:
    proxy = CountingProxy(server.url)
    try:
        result = CliRunner().invoke(trackkit_cli, ["--version"])  # warm the CLI's imports outside the count
        assert result.exit_code == 0
        loop = PacedLoop(tmp_path / "run", proxy.url, steps=240)
        loop.run()
    finally:
        proxy.shutdown()
    began, ended = loop.training  # the run's start (experiment, run, params) and its end are not training
    during = [path for _, path, at in proxy.requests if began <= at <= ended]
    per_second = len(during) / (ended - began)
    print(f"{len(during)} requests in {ended - began:.1f} s of training: {per_second:.2f}/s "
          f"({sum('log-batch' in p for p in during)} log-batch; {len(proxy.requests)} in all)")
    assert per_second <= 2.0
    assert_mlflow_equals_the_record(server.url, tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("outage", [20, 180], ids=["20s", "3min"])
def test_an_outage_with_the_server_back_before_the_end_loses_nothing(tmp_path: Path, server: LocalServer,
                                                                      outage: int, capfd) -> None:
    # 20 steps a second: the server goes at step 200 and comes back `outage` seconds later; the
    # run goes on until the tracker caught up, for up to 70 s more (the backoff between probes
    # grows to a minute), and 40 steps after that.
    steps = 200 + 20 * (outage + 70)
    back = {200: lambda: (server.kill(), restart_later(server, outage))}
    said: list[str] = []

    def caught_up() -> bool:
        said.append(capfd.readouterr().err)
        return "tracker 'mlflow' answers again" in "".join(said)

    loop = PacedLoop(tmp_path / "run", server.url, steps, at=back, until=caught_up)
    run = loop.run()
    said.append(capfd.readouterr().err)
    everything = run.summary["trackers"]["jsonl"]["delivered"]
    assert run.summary["trackers"]["mlflow"] == {"state": "ok", "delivered": everything, "lost": 0}
    # The loop waited for MLflow at most once (when it went down), never longer than the timeout;
    # the first flush also waits for the tracker's start (the experiment, the run, its params).
    assert max(loop.waits) <= loop.timeout and sum(wait > 1.0 for wait in loop.waits[1:]) <= 1, loop.waits
    assert "tracker 'mlflow' answers again" in "".join(said)
    assert_mlflow_equals_the_record(server.url, tmp_path / "run")


@pytest.mark.slow
def test_a_server_down_until_the_end_is_caught_up_by_sync_which_is_safe_to_run_twice(
        tmp_path: Path, server: LocalServer, capfd) -> None:
    out = tmp_path / "run"
    loop = PacedLoop(out, server.url, steps=200, at={100: server.kill}, timeout=5.0)
    began = time.monotonic()
    run = loop.run()
    assert time.monotonic() - began < 200 * 0.05 + 20  # the run ends on time: one last try, then it goes
    missing = run.summary["trackers"]["mlflow"]["lost"]
    assert missing > 0
    assert f"did not get {missing} of the run's records; deliver them later with: trackkit sync {out} --to mlflow" \
        in capfd.readouterr().err
    server.start()
    sync = [str(BIN / "trackkit"), "sync", str(out), "--to", "mlflow"]
    done = subprocess.run(sync, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_mlflow_equals_the_record(server.url, out)
    points = sum(len(v) for v in in_mlflow(server.url, out).values())
    done = subprocess.run(sync, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sum(len(v) for v in in_mlflow(server.url, out).values()) == points  # nothing twice
