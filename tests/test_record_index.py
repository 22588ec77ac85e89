"""index.json: what list, show and compare read instead of the whole record, and never over it.

The record wins every time: an index that is missing, damaged, stale or someone else's is
rebuilt from metrics.jsonl; one that the record bears out saves reading it at all.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

import trackkit
from trackkit import record_index
from trackkit.cli import main as trackkit_cli
from trackkit.reading import read_events


def cli(*args):
    return CliRunner().invoke(trackkit_cli, [str(a) for a in args])


def make_run(out, steps=40, **start):
    with trackkit.start(["jsonl"], output_dir=out, handle_signals=False, **start) as run:
        for step in range(1, steps + 1):
            run.log_train({"loss": 10.0 / step, "acc": step / steps}, step=step)
            if step % 10 == 0:
                run.log_eval({"loss": 5.0 / step, "perplexity": 1.0 + 10.0 / step}, step=step)
        run.log_final({"best_perplexity": 1.25})
    return out


def shown(run):
    """`runs show` as {first cell: other cells}."""
    result = cli("runs", "show", run)
    assert result.exit_code == 0, result.output
    cells = [re.split(r"\s{2,}", line.strip()) for line in result.output.splitlines() if line.strip()]
    return {row[0]: row[1:] for row in cells}


def truth(run):
    """What show must say, from the record itself."""
    events = list(read_events(run / "trackkit" / "metrics.jsonl"))
    train = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    best = min(evals, key=lambda e: e["metrics"]["eval/perplexity"])
    return {
        "steps": [str(max(e["step"] for e in train))],
        "events": [str(len(events))],
        "best eval/perplexity": [f"{best['metrics']['eval/perplexity']:.4g} (step {best['step']})"],
        "train/loss": [f"step {train[-1]['step']}", f"{train[-1]['metrics']['train/loss']:.4g}"],
    }


def assert_shows_the_record(run):
    lines = shown(run)
    assert {key: lines[key] for key in truth(run)} == truth(run)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("index") / "run")


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, with an index made for the copy (whose record has an inode of its own)."""
    copy = shutil.copytree(finished, tmp_path / "run")
    (copy / "trackkit" / "index.json").unlink()
    record_index.current(copy / "trackkit" / "metrics.jsonl")
    return copy


def no_reading(monkeypatch):
    """Make any read of a record fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the record was read")

    monkeypatch.setattr(record_index, "lines", refuse)


def test_the_tracker_keeps_an_index_that_spares_reading_the_record(finished, monkeypatch):
    index = record_index.load(finished / "trackkit" / "metrics.jsonl")
    assert index is not None and index.bytes == (finished / "trackkit" / "metrics.jsonl").stat().st_size
    assert index.last_train_step == 40 and index.final == {"final/best_perplexity": 1.25}
    assert (index.low["eval/perplexity"], index.low_step["eval/perplexity"]) == (1.25, 40)
    no_reading(monkeypatch)
    assert_shows_the_record(finished)
    assert cli("runs", "list", finished.parent).exit_code == 0
    assert cli("runs", "compare", finished, finished).exit_code == 0


def test_a_copy_keeps_its_index(finished, tmp_path, monkeypatch):
    copy = shutil.copytree(finished, tmp_path / "copy")  # as cp -a: the times of last change are kept
    no_reading(monkeypatch)
    assert_shows_the_record(copy)


def append_by_hand(run, *events):
    with open(run / "trackkit" / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)


LATE = [{"event": "train", "step": 41, "time": 1.0, "metrics": {"train/loss": 0.1, "train/acc": 1.0}},
        {"event": "eval", "step": 41, "time": 1.0, "metrics": {"eval/loss": 0.01, "eval/perplexity": 1.01}}]


def corrupt(index_file):
    index_file.write_bytes(index_file.read_bytes()[:50] + b"\x00garbage")


def edit_by_hand(index_file):
    # Valid JSON, in the right shape, with a plausible value: only its checksum gives it away.
    index_file.write_text(index_file.read_text().replace('"last_train_step": 40', '"last_train_step": 99'))


def put_back_an_older_one(index_file):
    older = index_file.read_bytes()
    append_by_hand(index_file.parent.parent, *LATE)
    index_file.write_bytes(older)


def another_runs(index_file, tmp_path):
    other = make_run(tmp_path / "other", steps=90)
    shutil.copy(other / "trackkit" / "index.json", index_file)


def rewrite_same_size(index_file):
    metrics = index_file.with_name("metrics.jsonl")
    text = metrics.read_text()
    rewritten = re.sub(r'("train/loss": ?)10\.0,', r"\g<1>90.0,", text)  # step 1's loss
    assert rewritten != text and len(rewritten) == len(text)
    metrics.write_text(rewritten)


def truncate_record(index_file):
    metrics = index_file.with_name("metrics.jsonl")
    metrics.write_bytes(b"".join(metrics.read_bytes().splitlines(keepends=True)[:20]))


@pytest.mark.parametrize("damage", [
    "deleted", "corrupt", "edited by hand", "an older one put back", "another run's", "record appended to",
    "record rewritten, same size", "record truncated", "record touched",
])
def test_an_index_the_record_does_not_bear_out_is_rebuilt_from_the_record(run, tmp_path, damage):
    index_file = run / "trackkit" / "index.json"
    metrics = run / "trackkit" / "metrics.jsonl"
    {
        "deleted": index_file.unlink,
        "corrupt": lambda: corrupt(index_file),
        "edited by hand": lambda: edit_by_hand(index_file),
        "an older one put back": lambda: put_back_an_older_one(index_file),
        "another run's": lambda: another_runs(index_file, tmp_path),
        "record appended to": lambda: append_by_hand(run, *LATE),
        "record rewritten, same size": lambda: rewrite_same_size(index_file),
        "record truncated": lambda: truncate_record(index_file),
        "record touched": lambda: os.utime(metrics, ns=(time.time_ns(), time.time_ns() + 10**9)),
    }[damage]()
    assert_shows_the_record(run)
    assert cli("runs", "list", run).output.splitlines()[1].split()[2] == truth(run)["steps"][0]
    best = json.loads(cli("runs", "compare", run, "--json").output)[0]["best_perplexity"]
    assert f"{best:.4g}" == truth(run)["best eval/perplexity"][0].split()[0]
    if damage == "record rewritten, same size":
        assert json.loads(cli("runs", "compare", run, "--best", "train/loss", "--highest", "--json").output)[0][
            "best_loss"] == 90.0


def test_a_rebuilt_index_is_saved_for_next_time(run, monkeypatch):
    (run / "trackkit" / "index.json").unlink()
    assert_shows_the_record(run)
    assert (run / "trackkit" / "index.json").exists()
    no_reading(monkeypatch)
    assert_shows_the_record(run)


def test_lines_added_after_the_index_are_read_and_nothing_before_them(run, monkeypatch):
    append_by_hand(run, *LATE)
    seen = []
    real = record_index.lines

    def spying(path, offset=0, number=0, **kw):
        seen.append((offset, number))
        return real(path, offset, number, **kw)

    monkeypatch.setattr(record_index, "lines", spying)
    assert_shows_the_record(run)
    index = record_index.load(run / "trackkit" / "metrics.jsonl")
    assert seen == [(index.bytes, index.lines)]  # from where the index ends, not from the start


def test_a_torn_last_line_after_the_index_is_skipped(run):
    with open(run / "trackkit" / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "step": 41, "metr')
    assert shown(run)["steps"] == ["40"]


def test_a_bad_line_the_index_does_not_cover_is_one_error_line(run):
    append_by_hand(run, LATE[0])
    with open(run / "trackkit" / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "step": "42", "metrics": {}}\n')
    bad = len((run / "trackkit" / "metrics.jsonl").read_text().splitlines())
    result = cli("runs", "show", run)
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert f"metrics.jsonl:{bad}: step must" in result.output


def test_a_running_run_is_shown_as_far_as_it_has_flushed(tmp_path):
    with trackkit.start(["jsonl"], output_dir=tmp_path, handle_signals=False) as live:
        for step in range(1, 101):
            live.log_train({"loss": 1.0 / step}, step=step)
            if step % 50 == 0:
                live.flush()
                assert shown(tmp_path)["steps"] == [str(step)]
                assert not (tmp_path / "trackkit" / "summary.json").exists()


def test_a_run_killed_with_kill_9_is_shown_from_its_record(tmp_path):
    code = textwrap.dedent("""
        import sys, trackkit
        run = trackkit.start(["jsonl"], output_dir=sys.argv[1])
        step = 0
        while True:
            step += 1
            run.log_train({"loss": 1.0 / step}, step=step)
            if step == 3000:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # a flush or two
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "trackkit" / "summary.json").exists()
    recorded = [e["step"] for e in read_events(tmp_path / "trackkit" / "metrics.jsonl")]
    lines = shown(tmp_path)
    assert lines["status"] == ["running"] and lines["steps"] == [str(recorded[-1])]
    assert lines["events"] == [str(len(recorded))]


def test_a_resumed_run_gets_an_index_of_what_it_kept(tmp_path):
    run = trackkit.start(["jsonl"], output_dir=tmp_path, handle_signals=False)
    for step in range(1, 31):
        run.log_train({"loss": 30.0 - step}, step=step)
    run.flush()
    run_id = run.info.id
    del run  # as if killed: never finished
    with trackkit.start(["jsonl"], output_dir=tmp_path, resume_from_step=20, run_id=run_id,
                        handle_signals=False) as resumed:
        resumed.log_train({"loss": 100.0}, step=21)
    index = record_index.load(tmp_path / "trackkit" / "metrics.jsonl")
    assert index.bytes == (tmp_path / "trackkit" / "metrics.jsonl").stat().st_size
    assert (index.last_train_step, index.last["train/loss"], index.low["train/loss"]) == (21, 100.0, 10.0)
    assert index.counts == {"train": 21, "resume": 1}


def test_a_loop_that_logs_only_train_loss_is_listed_compared_plotted_and_shown(tmp_path):
    for name, scale in (("a", 1.0), ("b", 2.0)):
        with trackkit.start(["jsonl"], output_dir=tmp_path / name, handle_signals=False) as run:
            for step in range(1, 11):
                run.log_train({"loss": scale / step}, step=step)
    listed = cli("runs", "list", tmp_path)
    assert listed.exit_code == 0, listed.output
    assert [line.split()[:4] for line in listed.output.splitlines()] == [
        ["NAME", "STATUS", "STEPS", "BEST_EVAL_PPL"], ["a", "success", "10", "-"], ["b", "success", "10", "-"]]
    by_loss = cli("runs", "list", tmp_path, "--best", "train/loss")
    assert [line.split()[3] for line in by_loss.output.splitlines()] == ["BEST_TRAIN_LOSS", "0.1", "0.2"]
    rows = json.loads(cli("runs", "compare", tmp_path / "b", tmp_path / "a", "--best", "train/loss",
                          "--sort", "best_loss", "--json").output)
    assert [(row["name"], row["best_loss"]) for row in rows] == [("a", 0.1), ("b", 0.2)]
    highest = json.loads(cli("runs", "compare", tmp_path / "a", "--best", "train/loss", "--highest", "--json").output)
    assert highest[0]["best_loss"] == 1.0
    plotted = cli("runs", "plot", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "c.png")
    assert plotted.exit_code == 0, plotted.output
    assert shown(tmp_path / "a")["best checkpoint"] == ["-"]
    missing = cli("runs", "plot", tmp_path / "a", "--metric", "eval/loss", "-o", tmp_path / "d.png")
    assert missing.exit_code == 2 and "logged eval/loss" in missing.output and not (tmp_path / "d.png").exists()


def test_the_best_checkpoint_is_the_artifact_recorded_as_best_else_the_last_model(tmp_path):
    weights = [tmp_path / f"w{i}.pt" for i in range(3)]
    for path in weights:
        path.write_text("w")
    with trackkit.start(["jsonl"], output_dir=tmp_path / "run", handle_signals=False) as run:
        run.log_train({"loss": 1.0}, step=5)
        run.log_artifact(weights[0], name="epoch-1", kind="model", metadata={"val_loss": 2.0})
        run.log_train({"loss": 0.5}, step=9)
        run.log_artifact(weights[1], name="last", kind="model", metadata={"val_loss": 1.5})
    lines = shown(tmp_path / "run")
    assert lines["best checkpoint"] == [str(weights[1])] and lines["step"] == ["9"]
    assert lines["metadata.val_loss"] == ["1.5"]
    with trackkit.start(["jsonl"], output_dir=tmp_path / "run2", handle_signals=False) as run:
        run.log_train({"loss": 1.0}, step=5)
        run.log_artifact(weights[2], name="best", kind="model", metadata={"val_loss": 0.9})
        run.log_train({"loss": 0.5}, step=9)
        run.log_artifact(weights[1], name="last", kind="model")
    lines = shown(tmp_path / "run2")
    assert lines["best checkpoint"] == [str(weights[2])] and lines["step"] == ["5"]
