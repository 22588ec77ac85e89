"""The local record: layout, scrubbing, flushing, resume without duplicates, torn lines."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import trackkit
from trackkit.errors import TrackkitError
from trackkit.reading import read_events


def events(out):
    return list(read_events(out / "trackkit" / "metrics.jsonl"))


def test_layout_and_scrubbed_config(tmp_path):
    config = {"learning_rate": 3e-4, "wandb_api_key": "abc", "HF_TOKEN": "t", "db_password": "p", "secret_sauce": 1}
    with trackkit.start(["jsonl"], output_dir=tmp_path, config=config, name="lr-sweep", project="p") as run:
        run.log_train({"loss": 1.0}, step=1)
        run.log_final({"best_perplexity": 2.7})
    record = tmp_path / "trackkit"
    assert json.loads((record / "config.json").read_text()) == {
        "learning_rate": 3e-4, "wandb_api_key": "***", "HF_TOKEN": "***", "db_password": "***", "secret_sauce": "***",
    }
    run_json = json.loads((record / "run.json").read_text())
    identity = (run_json["name"], run_json["project"], run_json["status"], run_json["trackers"])
    assert identity == ("lr-sweep", "p", "success", ["jsonl"])
    summary = json.loads((record / "summary.json").read_text())
    assert summary["final"] == {"final/best_perplexity": 2.7} and summary["status"] == "success"


def test_records_reach_the_disk_within_about_a_second_without_flush(tmp_path):
    run = trackkit.start(["jsonl"], output_dir=tmp_path)
    run.log_train({"loss": 1.0}, step=1)
    path = tmp_path / "trackkit" / "metrics.jsonl"
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not (path.exists() and path.read_text()):
        time.sleep(0.05)
    assert [e["step"] for e in events(tmp_path)] == [1]
    run.finish()


def test_kill_9_loses_at_most_the_last_second(tmp_path):
    code = textwrap.dedent("""
        import sys, time, trackkit
        run = trackkit.start(["jsonl"], output_dir=sys.argv[1])
        for step in range(1, 1000000):
            run.log_train({"loss": 1.0}, step=step)
            print(step, flush=True)
            time.sleep(0.005)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    began = time.monotonic()
    printed_at = {}
    while time.monotonic() - began < 3.0:
        printed_at[int(proc.stdout.readline())] = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait()
    logged = {e["step"] for e in events(tmp_path)}
    older = [s for s, at in printed_at.items() if at < killed_at - 1.2]
    assert older and set(older) <= logged


def test_resume_drops_events_after_the_checkpoint_and_a_torn_line(tmp_path):
    run = trackkit.start(["jsonl"], output_dir=tmp_path, handle_signals=False)
    for step in range(1, 31):
        run.log_train({"loss": 1.0}, step=step)
        if step % 10 == 0:
            run.log_eval({"loss": 1.0}, step=step)
    run.flush()
    with open(tmp_path / "trackkit" / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "step": 31, "metr')  # what a kill -9 mid-write leaves
    first_id = json.loads((tmp_path / "trackkit" / "run.json").read_text())["id"]
    # (the first process is treated as killed: its run is never finished)
    with trackkit.start(["jsonl"], output_dir=tmp_path, resume_from_step=20, run_id=first_id) as resumed:
        assert resumed.info.id == first_id and resumed.info.resumed_from_step == 20
        for step in range(21, 41):
            resumed.log_train({"loss": 0.5}, step=step)
    train = [e["step"] for e in events(tmp_path) if e["event"] == "train"]
    assert train == list(range(1, 41))
    assert [e["step"] for e in events(tmp_path) if e["event"] == "eval"] == [10, 20]
    assert [e for e in events(tmp_path) if e["event"] == "resume"][0]["step"] == 20


def test_resume_refuses_another_runs_folder(tmp_path):
    trackkit.start(["jsonl"], output_dir=tmp_path).finish()
    with pytest.raises(TrackkitError, match="refusing to mix two runs"):
        trackkit.start(["jsonl"], output_dir=tmp_path, resume_from_step=5, run_id="someone-else")


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path):
    trackkit.start(["jsonl"], output_dir=tmp_path).finish()
    with pytest.raises(TrackkitError, match="already holds run"):
        trackkit.start(["jsonl"], output_dir=tmp_path)


def test_run_json_from_a_newer_format_is_refused(tmp_path):
    (tmp_path / "trackkit").mkdir()
    (tmp_path / "trackkit" / "run.json").write_text(json.dumps({"format": 99, "id": "x", "name": "x"}))
    with pytest.raises(TrackkitError, match="newer than this trackkit reads"):
        trackkit.start(["jsonl"], output_dir=tmp_path, resume_from_step=1)
