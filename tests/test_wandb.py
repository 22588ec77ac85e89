"""The wandb tracker against the real wandb, checked by reading wandb's own run files back.

Nothing leaves the machine: wandb runs offline, or online against a closed port or a stub server
on 127.0.0.1, with no API key unless a test sets a fake one.
"""
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import trackkit
from trackkit.cli import main as trackkit_cli
from trackkit.errors import TrackkitError
from trackkit.options import Tracking, tracker_options
from trackkit.reading import read_events
from trackkit.record import read_run_json, record_dir
from trackkit.wandb_files import RunFile, last_steps, read_records, read_run_file, run_files

wandb = pytest.importorskip("wandb")

BIN = Path(sys.executable).parent
FAKE_KEY = "x" * 40


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """Offline by default, no API key (nor .netrc), and a wandb server address nobody listens on."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.teardown()  # wandb reads the environment once per setup; start each test afresh
    yield monkeypatch
    wandb.teardown()


def go_online(monkeypatch, url: str | None = None, key: str | None = None) -> None:
    monkeypatch.delenv("WANDB_MODE")
    if url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
    if key:
        monkeypatch.setenv("WANDB_API_KEY", key)
    wandb.teardown()


@pytest.fixture
def stub_server():
    """A server on 127.0.0.1 that answers every request with 503: reachable, but no use to wandb."""

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(503)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def wandb_parts(out: Path) -> list[RunFile]:
    """Every local fragment of the run's wandb run, oldest first (the id comes from run.json)."""
    return run_files(out / "wandb", read_run_json(out)["backend_ids"]["wandb"])


def rows(parts: list[RunFile], axis: str) -> list[dict]:
    return [row for part in parts for row in part.history if axis in row]


def log_steps(run, steps, loss=lambda s: 1.0 / s) -> None:
    for step in steps:
        run.log_train({"loss": loss(step), "learning_rate": 3e-4}, step=step)


# -- what an offline run holds ------------------------------------------------------------------
def test_offline_run_file_holds_every_namespace_the_summary_and_the_config(wandb_env, tmp_path):
    out = tmp_path / "run"
    model, notes = tmp_path / "model.pt", tmp_path / "notes.txt"
    model.write_bytes(b"weights")
    notes.write_text("not a model")
    config = {"learning_rate": 3e-4, "batch_size": 8, "wandb_api_key": "secret"}
    options = {"offline": True, "wandb_project": "proj", "wandb_tags": "a, b", "wandb_group": "grp",
               "wandb_log_model": True}
    called = {}
    with trackkit.start(["wandb", "jsonl"], output_dir=out, config=config, options=options) as run:
        for step in range(1, 121):
            called[step] = time.time()
            log_steps(run, [step])
            if step % 30 == 0:
                run.log_metrics("system", {"cpu_percent": step / 10}, step=step)
            if step % 40 == 0:
                eval_metrics = {"loss": 3.0 - step / 100, "perplexity": 9.0, "best_perplexity": 20.0 - step / 10}
                run.log_eval(eval_metrics, step=step)
            if step % 60 == 0:
                run.log_epoch({"train_loss": 2.5, "val_loss": 2.6}, epoch=step // 60, step=step)
        run.log_artifact(model, name="best", kind="model", metadata={"step": 120})
        run.log_artifact(notes, kind="file")
        run.log_final({"best_perplexity": 8.0, "total_steps": 120})

    [part] = wandb_parts(out)
    assert part.path.stat().st_size > 32768  # the reader went across the log's 32 KiB blocks
    assert part.project == "proj" and part.tags == ["a", "b"] and part.group == "grp"
    assert part.config["learning_rate"] == 3e-4 and part.config["batch_size"] == 8
    assert part.config["wandb_api_key"] == "***"
    assert part.step_metrics == {"train/*": "train/step", "eval/*": "eval/step", "epoch/*": "epoch/step",
                                 "system/*": "system/step", "final/*": "final/step"}
    namespaces = {"train": "train/step", "eval": "eval/step", "epoch": "epoch/step", "system": "system/step"}
    for namespace, axis in namespaces.items():  # one namespace per row, always with its own axis
        for row in rows([part], axis):
            assert {k.split("/")[0] for k in row if not k.startswith("_")} == {namespace}
    train = rows([part], "train/step")
    assert [r["train/step"] for r in train] == list(range(1, 121))
    assert all(r["train/loss"] == 1.0 / r["train/step"] and r["train/learning_rate"] == 3e-4 for r in train)
    # Each row carries the time of the log call that made it, not that of the tracker's thread.
    assert all(abs(r["_timestamp"] - called[r["train/step"]]) < 0.05 for r in train)
    assert [(r["eval/step"], r["eval/best_perplexity"]) for r in rows([part], "eval/step")] == [
        (40, 16.0), (80, 12.0), (120, 8.0)]
    # Epochs at the global step they ended at, as in every backend.
    assert [(r["epoch/step"], r["epoch/val_loss"]) for r in rows([part], "epoch/step")] == [(60, 2.6), (120, 2.6)]
    assert [(r["system/step"], r["system/cpu_percent"]) for r in rows([part], "system/step")] == [
        (30, 3.0), (60, 6.0), (90, 9.0), (120, 12.0)]
    assert [r["_step"] for r in part.history] == list(range(len(part.history)))
    assert part.summary["final/best_perplexity"] == 8.0 and part.summary["final/total_steps"] == 120
    assert part.summary["eval/best_perplexity"] == 8.0  # wandb's own summary: every metric's last value
    assert part.summary["artifact/best"] == {"path": str(model.resolve()), "kind": "model", "step": 120,
                                             "metadata": {"step": 120}}
    assert part.artifacts == [{"name": f"model-{part.run_id}", "type": "model", "files": ["model.pt"]}]
    assert part.exit_code == 0
    logged = [e for e in read_events(record_dir(out) / "metrics.jsonl") if e["event"] == "train"]
    assert len(logged) == len(train)  # the local record and wandb agree


def test_console_lines_reach_wandb_in_a_few_captured_writes_not_one_per_line(wandb_env, tmp_path):
    # wandb captures what goes to stdout and sends each write to wandb-core: one write per
    # console line cost wandb as much as the metrics themselves.
    out = tmp_path / "run"
    with trackkit.start(["console", "wandb"], output_dir=out, options={"offline": True}) as run:
        run.flush()  # wandb is up and capturing
        log_steps(run, range(1, 101))
    [part] = wandb_parts(out)
    captured = [r.output_raw.line for r in read_records(part.path) if r.WhichOneof("record_type") == "output_raw"]
    lines = [line for text in captured for line in text.splitlines() if line.startswith("step ")]
    assert [int(line.split()[1]) for line in lines] == list(range(1, 101))
    assert len([text for text in captured if "step " in text]) <= 3


@pytest.mark.parametrize("how, exit_code", [("exception", 1), ("interrupted", 130)])
def test_failed_and_interrupted_runs_end_with_a_nonzero_exit_code(wandb_env, tmp_path, how, exit_code):
    out, model = tmp_path / "run", tmp_path / "model.pt"
    model.write_bytes(b"weights")
    run = trackkit.start(["wandb"], output_dir=out, options={"offline": True})
    log_steps(run, range(1, 4))
    run.log_artifact(model, kind="model")  # without --wandb-log-model: not uploaded
    if how == "exception":
        with pytest.raises(RuntimeError), run:
            raise RuntimeError("boom")
    else:
        run.finish("interrupted")
    [part] = wandb_parts(out)
    assert part.exit_code == exit_code
    assert [r["train/step"] for r in part.history] == [1, 2, 3]
    assert part.artifacts == []


# -- falling back from online to offline --------------------------------------------------------
@pytest.mark.parametrize("key", [None, FAKE_KEY], ids=["no-key", "key"])
def test_unreachable_server_falls_back_to_offline_at_once_with_every_metric(wandb_env, tmp_path, capfd, key):
    go_online(wandb_env, key=key)  # WANDB_BASE_URL is a closed port
    out = tmp_path / "run"
    began = time.monotonic()
    run = trackkit.start(["wandb", "jsonl"], output_dir=out, options={"offline": False})
    log_steps(run, range(1, 51))
    assert time.monotonic() - began < 2  # the training loop never waits for the fall-back
    assert run.flush(timeout=30) == {}
    assert time.monotonic() - began < 10  # well within the default 30 s: a refused port is a clear answer
    summary = run.finish()
    assert summary["trackers"]["wandb"] == {"state": "ok", "delivered": 50, "lost": 0}
    [part] = wandb_parts(out)
    assert part.path.parent.name.startswith("offline-run-")
    assert [r["train/step"] for r in part.history] == list(range(1, 51))
    assert part.exit_code == 0
    err = capfd.readouterr().err
    assert err.count("continuing offline") == 1 and "cannot reach http://127.0.0.1:" in err
    assert f"trackkit sync {out}" in err


def test_reachable_server_without_api_key_falls_back_to_offline(wandb_env, tmp_path, capfd, stub_server):
    go_online(wandb_env, url=stub_server)
    out = tmp_path / "run"
    with trackkit.start(["wandb"], output_dir=out, options={"offline": False}) as run:
        log_steps(run, range(1, 6))
    [part] = wandb_parts(out)
    assert [r["train/step"] for r in part.history] == [1, 2, 3, 4, 5]
    err = capfd.readouterr().err
    assert err.count("continuing offline") == 1 and "no API key" in err


@pytest.mark.slow
def test_server_that_fails_every_request_falls_back_within_the_timeout(wandb_env, tmp_path, capfd, stub_server):
    go_online(wandb_env, url=stub_server, key=FAKE_KEY)
    out, timeout = tmp_path / "run", 8
    began = time.monotonic()
    run = trackkit.start(["wandb"], output_dir=out, options={"offline": False, "wandb_init_timeout": timeout})
    log_steps(run, range(1, 21))
    assert run.flush(timeout=60) == {}
    assert time.monotonic() - began < timeout + 2
    run.finish()
    parts = wandb_parts(out)  # the online attempt left a folder with no history; the offline one has all
    kinds = {p.path.parent.name.split("-")[0]: len(p.history) for p in parts}
    assert kinds.keys() == {"run", "offline"} and kinds["run"] == 0
    assert [r["train/step"] for r in rows(parts, "train/step")] == list(range(1, 21))
    assert capfd.readouterr().err.count("continuing offline") == 1


# -- resume ---------------------------------------------------------------------------------------
def test_resume_continues_the_same_wandb_run_and_sends_no_step_twice(wandb_env, tmp_path, capfd):
    out = tmp_path / "run"
    first = trackkit.start(["wandb"], output_dir=out, options={"offline": True})
    log_steps(first, range(1, 11))  # the checkpoint was at step 6; steps 7-10 were logged after it
    first.log_eval({"loss": 2.0}, step=5)
    first.log_eval({"loss": 1.9}, step=10)
    first.finish("interrupted")
    wandb_id = read_run_json(out)["backend_ids"]["wandb"]

    second = trackkit.start(["wandb"], output_dir=out, options={"offline": True}, resume_from_step=6)
    log_steps(second, range(7, 16), loss=lambda s: 2.0 / s)
    second.log_eval({"loss": 1.8}, step=10)
    second.log_eval({"loss": 1.7}, step=15)
    second.finish()

    assert read_run_json(out)["backend_ids"]["wandb"] == wandb_id
    parts = wandb_parts(out)
    assert [(p.run_id, p.resumed, p.exit_code) for p in parts] == [(wandb_id, False, 130), (wandb_id, True, 0)]
    train = rows(parts, "train/step")
    assert [r["train/step"] for r in train] == list(range(1, 16))
    assert [r["train/loss"] for r in train[6:10]] == [1.0 / s for s in range(7, 11)]  # wandb's, kept
    assert [(r["eval/step"], r["eval/loss"]) for r in rows(parts, "eval/step")] == [(5, 2.0), (10, 1.9), (15, 1.7)]
    steps = [r["_step"] for p in parts for r in p.history]
    assert steps == list(range(len(steps)))  # the second part's rows follow the first's
    assert "already holds eval/step <= 10, train/step <= 10" in capfd.readouterr().err

    # `trackkit sync` hands both parts to `wandb sync`, which needs the key this test lacks.
    done = subprocess.run([BIN / "trackkit", "sync", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "No API key configured" in done.stderr + done.stdout
    for part in parts:
        assert str(part.path.parent) in done.stderr + done.stdout


def test_sync_of_a_folder_without_wandb_runs_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(trackkit_cli, ["sync", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "has no wandb folder" in result.output


# -- the run file reader --------------------------------------------------------------------------
def test_reader_keeps_what_precedes_a_torn_or_corrupt_tail(wandb_env, tmp_path):
    out = tmp_path / "run"
    with trackkit.start(["wandb"], output_dir=out, options={"offline": True}) as run:
        log_steps(run, range(1, 31))
    [part] = wandb_parts(out)
    data = part.path.read_bytes()
    steps = [r["train/step"] for r in part.history]
    torn, corrupt = tmp_path / "torn.wandb", tmp_path / "corrupt.wandb"
    torn.write_bytes(data[: len(data) * 2 // 3])
    corrupt.write_bytes(data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:])
    for damaged in (torn, corrupt):
        kept = [r["train/step"] for r in read_run_file(damaged).history]
        assert 0 < len(kept) < len(steps) and kept == steps[: len(kept)]
    # a resume after a kill -9 trusts only what the file still holds
    shutil.copy(torn, part.path)
    assert last_steps(out / "wandb", part.run_id)["train/step"] == len(read_run_file(torn).history)
    (tmp_path / "other.wandb").write_bytes(b"not a wandb file")
    with pytest.raises(TrackkitError, match="not a wandb run file"):
        list(read_records(tmp_path / "other.wandb"))


# -- through the reference trainer -------------------------------------------------------------------
@pytest.mark.slow
def test_trainer_offline_then_resumed_writes_one_wandb_run(wandb_env, tmp_path):
    if not (BIN / "trackkit-train").exists():
        pytest.skip("trackkit-train is not installed")
    out = tmp_path / "run"
    small = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--eval-batches", "2"]
    common = ["--tracker", "wandb", "--offline", "--log-interval", "1", "--eval-interval", "2",
              "--output-dir", str(out)]
    first = subprocess.run([BIN / "trackkit-train", *common, *small, "--max-steps", "4", "--wandb-log-model"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"trackkit sync {out}" in first.stderr
    resumed = subprocess.run([BIN / "trackkit-train", *common, *small, "--max-steps", "6", "--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    parts = wandb_parts(out)
    assert [(p.resumed, p.exit_code) for p in parts] == [(False, 0), (True, 0)]
    assert [r["train/step"] for r in rows(parts, "train/step")] == [1, 2, 3, 4, 5, 6]
    assert [r["eval/step"] for r in rows(parts, "eval/step")] == [2, 4, 6]
    assert parts[0].artifacts and {a["type"] for a in parts[0].artifacts} == {"model"}
    assert parts[-1].summary["final/total_steps"] == 6 and "final/best_perplexity" in parts[-1].summary
    assert parts[0].config["max_steps"] == 4 and parts[-1].config["max_steps"] == 6


# -- options and packaging -------------------------------------------------------------------------
def test_command_line_options_reach_the_tracker():
    seen = {}

    @click.command()
    @tracker_options()
    def train(tracking: Tracking) -> None:
        seen["tracking"] = tracking

    args = ["--use_wandb", "--wandb_project", "p", "--wandb-entity", "e", "--wandb_run_name", "n",
            "--wandb-tags", "a,b", "--wandb-group", "g", "--wandb-log-model", "--wandb-init-timeout", "5", "--offline"]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output
    assert "wandb" in seen["tracking"].trackers
    options = seen["tracking"].options
    from trackkit.trackers.wandb import WandbTracker

    tracker = WandbTracker(**{k: v for k, v in options.items() if k.startswith("wandb_") or k == "offline"})
    chosen = (tracker.project, tracker.entity, tracker.run_name, tracker.tags, tracker.group)
    assert chosen == ("p", "e", "n", ["a", "b"], "g")
    assert tracker.log_model and tracker.init_timeout == 5 and tracker.offline
    assert WandbTracker().project is None and WandbTracker().init_timeout == 30  # None: the run's project
    help_text = CliRunner().invoke(train, ["--help"]).output
    for flag in ("--wandb-project", "--wandb-entity", "--wandb-run-name", "--wandb-tags", "--wandb-group",
                 "--wandb-log-model", "--wandb-init-timeout"):
        assert flag in help_text
    bad = CliRunner().invoke(train, ["--wandb-init-timeout", "0"])
    assert bad.exit_code == 2 and "--wandb-init-timeout" in bad.output


def test_wandb_is_imported_only_when_the_tracker_starts():
    code = "import sys, trackkit.trackers.wandb, trackkit.wandb_files; print('wandb' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("lang, first", [("en", "wandb initialised"), ("zh", "wandb初始化成功")])
def test_the_guides_start_line_then_where_the_run_is(wandb_env, tmp_path, capfd, lang, first):
    out = tmp_path / "run"
    with trackkit.start(["wandb"], output_dir=out, options={"console_lang": lang}) as run:
        log_steps(run, [1])
    [part] = wandb_parts(out)
    lines = capfd.readouterr().err.splitlines()
    at = lines.index(first)
    where = "offline run in" if lang == "en" else "离线运行位于"
    assert lines[at + 1] == f"wandb: {where} {part.path.parent}"
