"""Hostile input to the run tools: records of the wrong shape, and paths that cannot be written.

Every reader (runs list/show/compare/export/plot, sync --to) answers a bad line with one
``Error: FILE:LINE: ...`` line and exit code 2, writes nothing, and loses nothing recorded.
"""
import json
import shutil

import pytest
from click.testing import CliRunner
from conftest import mounted

import trackkit
from trackkit.cli import main as trackkit_cli


def cli(*args):
    return CliRunner().invoke(trackkit_cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: "), line
    for fragment in fragments:
        assert fragment in line, line


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A run of every kind of event, made through the Run API with the jsonl tracker."""
    out = tmp_path_factory.mktemp("good") / "run"
    checkpoint = out.parent / "model.pt"
    checkpoint.write_text("weights")
    with trackkit.start(["jsonl"], output_dir=out, config={"lr": 0.1}, handle_signals=False) as run:
        for step in range(1, 21):
            run.log_train({"loss": 3.0 / step, "learning_rate": 0.1}, step=step)
            if step % 5 == 0:
                run.log_eval({"loss": 2.0 / step, "perplexity": 1.0 + 1.0 / step}, step=step)
        run.log_metrics("system", {"cpu_percent": 12.5}, step=20)
        run.log_epoch({"val_loss": 0.5}, epoch=1, step=20)
        run.log_artifact(checkpoint, name="best", kind="model", metadata={"step": 20})
        run.log_final({"best_perplexity": 1.05})
    return out


def damaged(good_run, tmp_path, line, at=2):
    """A copy of the good run whose metrics.jsonl has ``line`` (bytes or text) inserted as line ``at + 1``."""
    run = shutil.copytree(good_run, tmp_path / "damaged")
    metrics = run / "trackkit" / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    lines.insert(at, (line if isinstance(line, bytes) else line.encode()) + b"\n")
    metrics.write_bytes(b"".join(lines))
    return run


TRAIN = {"event": "train", "step": 3, "time": 1.5, "metrics": {"train/loss": 1.0}}
BAD_LINES = {
    "a list": ("[1, 2]", "not an event"),
    "a string": ('"hello"', "not an event"),
    "a number": ("3", "not an event"),
    "null": ("null", "not an event"),
    "only the kind": ('{"event": "train"}', "has no step"),
    "no kind": ('{"step": 3, "metrics": {}}', "unknown event kind"),
    "an unknown kind": ('{"event": "nope", "step": 3}', "unknown event kind"),
    "a string step": (json.dumps({**TRAIN, "step": "19"}), "step must be a whole number"),
    "a null step": (json.dumps({**TRAIN, "step": None}), "step must be a whole number"),
    "a fractional step": (json.dumps({**TRAIN, "step": 20.5}), "step must be a whole number"),
    "a negative step": (json.dumps({**TRAIN, "step": -5}), "step must be a whole number"),
    "a step past int64": (json.dumps({**TRAIN, "step": 2**63}), "step must be a whole number"),
    "a boolean step": (json.dumps({**TRAIN, "step": True}), "step must be a whole number"),
    "metrics a list": (json.dumps({**TRAIN, "metrics": [1, 2]}), "metrics must be an object"),
    "metrics a number": (json.dumps({**TRAIN, "metrics": 1.0}), "metrics must be an object"),
    "no metrics": (json.dumps({k: v for k, v in TRAIN.items() if k != "metrics"}), "metrics must be an object"),
    "a string value": (json.dumps({**TRAIN, "metrics": {"train/loss": "1.0"}}), "'train/loss' must be a number"),
    "a null value": (json.dumps({**TRAIN, "metrics": {"train/loss": None}}), "'train/loss' must be a number"),
    "a boolean value": (json.dumps({**TRAIN, "metrics": {"train/loss": True}}), "'train/loss' must be a number"),
    "a nested value": (json.dumps({**TRAIN, "metrics": {"train/loss": {"a": 1}}}), "'train/loss' must be a number"),
    "a string time": (json.dumps({**TRAIN, "time": "noon"}), "time must be a number"),
    "an epoch without its number": ('{"event": "epoch", "step": 3, "metrics": {}}', "has no 'epoch'"),
    "an epoch number that is text": (
        '{"event": "epoch", "epoch": "1", "step": 3, "metrics": {}}', "epoch must be a whole number"),
    "metrics without a namespace": ('{"event": "metrics", "step": 3, "metrics": {}}', "has no 'namespace'"),
    "a built-in namespace": ('{"event": "metrics", "namespace": "train", "step": 3, "metrics": {}}', "log_train"),
    "an artifact whose path is a number": (
        '{"event": "artifact", "step": 3, "path": 7, "name": "a", "kind": "file", "metadata": {}}', "path must be"),
    "an artifact without metadata": ('{"event": "artifact", "step": 3, "path": "p", "name": "a", "kind": "k"}',
                                     "has no 'metadata'"),
    "not JSON": ("garbage", "not valid JSON"),
    "not UTF-8": (b'{"event": "train", "step": 3, "metrics": {"\xff": 1.0}}', "not valid JSON"),
    "JSON and more": (json.dumps(TRAIN) + " x", "not valid JSON"),
    "nested ten thousand deep": ("[" * 10_000, "not valid JSON"),
}


def readers(run, tmp_path):
    """Every command that reads a record, and what each would write."""
    return {
        "show": (["runs", "show", run], None),
        "compare": (["runs", "compare", run, run], None),
        "export": (["runs", "export", run, "-o", tmp_path / "csv"], tmp_path / "csv"),
        "plot": (["runs", "plot", run, "-o", tmp_path / "c.png"], tmp_path / "c.png"),
        "sync": (["sync", run, "--to", "tensorboard"], run / "tensorboard"),
    }


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_line_of_the_wrong_shape_is_one_error_line_naming_file_and_line_from_every_reader(good_run, tmp_path, case):
    line, why = BAD_LINES[case]
    run = damaged(good_run, tmp_path, line)
    before = (run / "trackkit" / "metrics.jsonl").read_bytes()
    where = f"{run / 'trackkit' / 'metrics.jsonl'}:3: "
    for name, (command, writes) in readers(run, tmp_path).items():
        result = cli(*command)
        assert_one_line_error(result, where, why)
        assert writes is None or not writes.exists(), f"{name} wrote {writes}"
    assert (run / "trackkit" / "metrics.jsonl").read_bytes() == before  # nothing recorded is lost or changed


@pytest.mark.parametrize("case", ["a list", "a string step", "a string value", "metrics a number"])
def test_a_wrong_shape_on_the_last_line_is_an_error_too(good_run, tmp_path, case):
    # Only a last line that does not parse is taken for a write torn by a kill -9.
    line, why = BAD_LINES[case]
    run = damaged(good_run, tmp_path, line, at=10_000)
    last = len((run / "trackkit" / "metrics.jsonl").read_bytes().splitlines())
    assert_one_line_error(cli("runs", "show", run), f"metrics.jsonl:{last}: ", why)


def test_list_skips_a_bad_run_with_one_line_and_lists_the_good_ones(good_run, tmp_path):
    parent = tmp_path / "sweep"
    for name in ("a", "c"):
        shutil.copytree(good_run, parent / name)
    bad = damaged(good_run, tmp_path, json.dumps({**TRAIN, "step": "19"}))
    shutil.move(bad, parent / "b")
    result = CliRunner().invoke(trackkit_cli, ["runs", "list", str(parent)])
    assert result.exit_code == 0, result.output
    assert [line.split()[-1] for line in result.stdout.splitlines()[1:]] == [str(parent / "a"), str(parent / "c")]
    (skipped,) = result.stderr.splitlines()
    assert skipped.startswith("trackkit: skipped: ") and f"{parent / 'b'}/trackkit/metrics.jsonl:3: step" in skipped


# -- paths a command writes ----------------------------------------------------------------------
def test_plot_into_a_missing_folder_or_onto_a_folder_is_one_line(good_run, tmp_path):
    missing = tmp_path / "missing" / "dir" / "x.png"
    assert_one_line_error(cli("runs", "plot", good_run, "-o", missing), str(missing), "does not exist")
    assert not (tmp_path / "missing").exists()
    assert_one_line_error(cli("runs", "plot", good_run, "-o", tmp_path), str(tmp_path), "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_onto_a_file_or_under_a_missing_folder_is_one_line(good_run, tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    assert_one_line_error(cli("runs", "export", good_run, "-o", existing), str(existing), "is a file, not a folder")
    assert existing.read_text() == "mine"
    deep = tmp_path / "a" / "b" / "out"
    assert_one_line_error(cli("runs", "export", good_run, "-o", deep), str(deep), "does not exist")
    assert not (tmp_path / "a").exists()


def test_export_into_an_existing_folder_replaces_only_its_own_files(good_run, tmp_path):
    (tmp_path / "train.csv").write_text("old")
    (tmp_path / "mine.txt").write_text("mine")
    result = cli("runs", "export", good_run, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch.csv", "eval.csv", "final.csv", "mine.txt", "system.csv", "train.csv"]
    assert (tmp_path / "train.csv").read_text().startswith("step,time,train/loss")


def test_a_read_only_target_is_one_line_and_writes_nothing(good_run, read_only):
    for command in (["runs", "plot", good_run, "-o", read_only / "c.png"],
                    ["runs", "export", good_run, "-o", read_only / "csv"],
                    ["runs", "export", good_run, "-o", read_only]):
        assert_one_line_error(cli(*command), str(read_only), "Read-only file system")
    assert list(read_only.iterdir()) == []


def test_a_run_on_a_read_only_mount_is_read_but_not_synced(good_run, tmp_path):
    source = shutil.copytree(good_run, tmp_path / "source")
    (source / "trackkit" / "index.json").unlink()  # the tools rebuild it, and cannot save it here
    bind = [["mount", "--bind", str(source)], ["mount", "-o", "remount,ro,bind"]]
    with mounted(tmp_path / "ro", *bind) as ro:
        shown = cli("runs", "show", ro)
        assert shown.exit_code == 0, shown.output
        assert next(line.split() for line in shown.output.splitlines() if line.startswith("steps")) == ["steps", "20"]
        assert_one_line_error(cli("sync", ro, "--to", "tensorboard"), str(ro), "Read-only file system")
    assert not (source / "trackkit" / "index.json").exists() and not (source / "tensorboard").exists()


def test_a_failed_sync_leaves_nothing_behind_and_can_be_retried(good_run, tmp_path):
    run = shutil.copytree(good_run, tmp_path / "run")
    metrics = run / "trackkit" / "metrics.jsonl"
    good = metrics.read_bytes()
    lines = good.splitlines(keepends=True)
    # damage near the end: the backend has written most of the record when the reader finds it
    metrics.write_bytes(b"".join(lines[:-3] + [b'{"event": "train", "step": "x"}\n'] + lines[-3:]))
    assert_one_line_error(cli("sync", run, "--to", "tensorboard"), f"metrics.jsonl:{len(lines) - 2}: step must be")
    assert not (run / "tensorboard").exists()
    metrics.write_bytes(good)
    retried = cli("sync", run, "--to", "tensorboard")
    assert retried.exit_code == 0, retried.output
    assert len(list((run / "tensorboard").iterdir())) == 1


def test_an_interrupted_export_leaves_nothing_behind(good_run, tmp_path, monkeypatch):
    from trackkit import export

    def interrupted(self, event):
        raise KeyboardInterrupt

    monkeypatch.setattr(export._Table, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_csv(iter([{"event": "train", "step": 1, "metrics": {"train/loss": 1.0}}]), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
