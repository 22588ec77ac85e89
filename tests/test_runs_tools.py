"""`trackkit runs ...` and `trackkit sync --to`: the local record read back, compared, plotted, replayed."""
import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BIN
from trainer_util import write_corpus

from trackkit.cli import main as trackkit_cli
from trackkit.reading import read_events

LEARNING_RATES = {"lr-small": 1e-3, "lr-large": 3e-3}
# A model that trains a step in milliseconds, on a corpus short enough that 12 steps cross an
# epoch: the record then holds every namespace (train, eval, epoch, system, final) and artifacts.
TRAIN_ARGS = ["--max-steps", "12", "--eval-interval", "4", "--log-interval", "1", "--tracker", "jsonl",
              "--system-metrics", "0.2", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
              "--batch-size", "4", "--eval-batches", "4", "--warmup-steps", "5"]


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    """Two real `trackkit-train` runs that differ in their learning rate, trained once."""
    root = tmp_path_factory.mktemp("runs")
    corpus = write_corpus(root, chars=700)
    for name, lr in LEARNING_RATES.items():
        done = subprocess.run(
            [str(BIN / "trackkit-train"), "--output-dir", str(root / name), "--learning-rate", str(lr),
             "--wandb-run-name", name,  # the run's name in every backend, wandb or not
             "--data", str(corpus), *TRAIN_ARGS],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture
def run_copy(runs_root, tmp_path):
    """A private copy of one run, for tests that write into it or damage it."""
    return shutil.copytree(runs_root / "lr-small", tmp_path / "lr-small")


def cli(*args):
    return CliRunner().invoke(trackkit_cli, [str(a) for a in args])


def events(run_dir):
    return list(read_events(run_dir / "trackkit" / "metrics.jsonl"))


def recorded_best(run_dir):
    return min(e["metrics"]["eval/perplexity"] for e in events(run_dir) if e["event"] == "eval")


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ")
    for fragment in fragments:
        assert fragment in line


# -- list, show, compare -------------------------------------------------------------------------
def test_list_shows_every_run_with_its_status_steps_and_best_perplexity(runs_root):
    result = cli("runs", "list", runs_root)
    assert result.exit_code == 0, result.output
    header, *lines = result.output.strip().splitlines()
    assert header.split() == ["NAME", "STATUS", "STEPS", "BEST_EVAL_PPL", "TRACKERS", "STARTED", "DIR"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert set(rows) == set(LEARNING_RATES)
    for name, row in rows.items():
        assert row[1:5] == ["success", "12", f"{recorded_best(runs_root / name):.4g}", "jsonl"]
        assert row[-1] == str(runs_root / name)


def show_sections(output):
    """`runs show`'s output as {section title ("" for the head): {first cell: the other cells}}."""
    sections, title = {"": {}}, ""
    for line in output.splitlines():
        if line.strip().endswith(":") and not line.startswith(" "):
            title = line.strip()[:-1]
            sections[title] = {}
        elif line.strip():
            first, *rest = re.split(r"\s{2,}", line.strip())
            sections[title][first] = rest
    return sections


def test_show_gives_config_final_metrics_last_values_and_the_best_checkpoint(runs_root):
    run_dir = runs_root / "lr-large"
    result = cli("runs", "show", run_dir)
    assert result.exit_code == 0, result.output
    shown = show_sections(result.output)
    head, config, final, last = shown[""], shown["config"], shown["final"], shown["last metrics"]
    assert config["learning_rate"] == ["0.003"] and config["max_steps"] == ["12"]
    last_best = [e for e in events(run_dir) if e["event"] == "artifact" and e["name"] == "best"][-1]
    assert head["best checkpoint"] == [last_best["path"]]  # the trainer's checkpoints/best at that step
    best_eval = min((e for e in events(run_dir) if e["event"] == "eval"), key=lambda e: e["metrics"]["eval/perplexity"])
    assert head["best eval/perplexity"] == [f"{recorded_best(run_dir):.4g} (step {best_eval['step']})"]
    last_train = [e for e in events(run_dir) if e["event"] == "train"][-1]
    assert last["train/loss"] == ["step 12", f"{last_train['metrics']['train/loss']:.4g}"]
    assert final["final/total_steps"] == ["12"] and "final/total_steps" not in last
    assert head["trackers"][0].startswith("jsonl (ok, ")
    # the best checkpoint as recorded: where, at which step, and the metadata it was logged with
    checkpoint = shown["best checkpoint"]
    assert checkpoint["path"] == [last_best["path"]] and checkpoint["step"] == [str(last_best["step"])]
    assert (checkpoint["name"], checkpoint["kind"]) == (["best"], ["model"])
    assert checkpoint["metadata.val_loss"] == [f"{last_best['metadata']['val_loss']:.4g}"]


def test_show_says_when_the_recorded_best_checkpoint_is_gone(run_copy):
    metrics = run_copy / "trackkit" / "metrics.jsonl"
    gone = run_copy / "checkpoints" / "step-99999999"
    moved = [{**e, "path": str(gone)} if e["event"] == "artifact" else e for e in events(run_copy)]
    metrics.write_text("".join(json.dumps(e) + "\n" for e in moved))
    result = cli("runs", "show", run_copy)
    assert result.exit_code == 0, result.output
    shown = next(line for line in result.output.splitlines() if line.startswith("best checkpoint"))
    assert shown.split(None, 2)[2] == f"{gone} (gone)"  # the record says which; no folder is guessed


def test_compare_shows_the_differing_hyperparameter_and_both_best_perplexities(runs_root):
    small, large = runs_root / "lr-small", runs_root / "lr-large"
    result = cli("runs", "compare", small, large)
    assert result.exit_code == 0, result.output
    header, *lines = [line.split() for line in result.output.strip().splitlines()]
    assert header[0] == "RUN" and "learning_rate" in header and "best_perplexity" in header
    assert "batch_size" not in header and "max_steps" not in header  # the same in both runs
    rows = {line[0]: dict(zip(header, line)) for line in lines}
    assert (rows["lr-small"]["learning_rate"], rows["lr-large"]["learning_rate"]) == ("0.001", "0.003")
    assert rows["lr-small"]["best_perplexity"] == f"{recorded_best(small):.4g}"
    assert rows["lr-large"]["best_perplexity"] == f"{recorded_best(large):.4g}"
    assert recorded_best(small) != recorded_best(large)

    as_json = json.loads(cli("runs", "compare", small, large, "--json", "--sort", "final/best_perplexity").output)
    by_name = {row["name"]: row for row in as_json}
    assert by_name["lr-small"]["config"]["learning_rate"] == 1e-3
    assert by_name["lr-large"]["config"]["learning_rate"] == 3e-3
    assert "batch_size" not in by_name["lr-small"]["config"]
    assert {name: row["best_perplexity"] for name, row in by_name.items()} == {
        n: recorded_best(runs_root / n) for n in by_name
    }
    finals = [row["final"]["final/best_perplexity"] for row in as_json]
    assert finals == sorted(finals) and as_json[0]["final"]["final/total_steps"] == 12


def test_compare_sort_by_an_unknown_key_is_one_line(runs_root):
    result = cli("runs", "compare", runs_root / "lr-small", "--sort", "final/nope")
    assert_one_line_error(result, "cannot sort by 'final/nope'", "best_perplexity")


# -- plot ------------------------------------------------------------------------------------------
RUN_COLOURS = ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E))  # matplotlib's C0 and C1: the first and second run


def pixels_of(image, colour):
    rgb = (image[:, :, :3] * 255).round().astype(int)
    return int(np.all(np.abs(rgb - np.array(colour)) <= 2, axis=-1).sum())


def test_plot_writes_a_png_of_the_requested_size_with_a_line_per_run(runs_root, tmp_path):
    import matplotlib.image

    both, one = tmp_path / "both.png", tmp_path / "one.png"
    result = cli("runs", "plot", runs_root / "lr-small", runs_root / "lr-large", "-o", both, "--size", "1200x800")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {both} (1200x800): lr-small, lr-large"
    assert both.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(both)
    assert image.shape[:2] == (800, 1200)
    assert all(pixels_of(image, colour) > 500 for colour in RUN_COLOURS)

    assert cli("runs", "plot", runs_root / "lr-small", "-o", one).exit_code == 0
    image = matplotlib.image.imread(one)
    assert image.shape[:2] == (900, 1500)  # the default size
    assert pixels_of(image, RUN_COLOURS[0]) > 500 and pixels_of(image, RUN_COLOURS[1]) == 0


def test_plot_size_must_be_width_x_height(runs_root, tmp_path):
    result = cli("runs", "plot", runs_root / "lr-small", "-o", tmp_path / "c.png", "--size", "big")
    assert_one_line_error(result, "--size")


# -- export ----------------------------------------------------------------------------------------
def test_export_writes_one_csv_per_namespace_with_the_recorded_values(run_copy, tmp_path):
    result = cli("runs", "export", run_copy, "--format", "csv", "-o", tmp_path / "csv")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == [
        "epoch.csv", "eval.csv", "final.csv", "system.csv", "train.csv"
    ]
    with open(tmp_path / "csv" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    recorded = [e for e in events(run_copy) if e["event"] == "train"]
    assert [int(r["step"]) for r in rows] == [e["step"] for e in recorded]
    assert [float(r["train/loss"]) for r in rows] == [e["metrics"]["train/loss"] for e in recorded]
    with open(tmp_path / "csv" / "epoch.csv", newline="") as f:
        (epoch,) = csv.DictReader(f)
    (recorded_epoch,) = [e for e in events(run_copy) if e["event"] == "epoch"]
    assert (int(epoch["epoch"]), int(epoch["step"])) == (recorded_epoch["epoch"], recorded_epoch["step"])
    assert float(epoch["epoch/val_loss"]) == recorded_epoch["metrics"]["epoch/val_loss"]

    assert cli("runs", "export", run_copy).exit_code == 0  # default folder: RUN/export
    assert (run_copy / "export" / "eval.csv").exists()


# -- sync --to -------------------------------------------------------------------------------------
def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def expected_scalars(run_dir):
    """What the record says TensorBoard should hold: (step, float32 value) per tag."""
    expected = {}
    for event in events(run_dir):
        for key, value in event.get("metrics", {}).items():  # every namespace at the global step
            expected.setdefault(key, []).append((event["step"], float(np.float32(value))))
    return expected


def test_sync_to_tensorboard_replays_every_scalar_at_its_step(run_copy):
    result = cli("sync", run_copy, "--to", "tensorboard")
    assert result.exit_code == 0, result.output
    scalars = tensorboard_scalars(run_copy / "tensorboard")
    expected = expected_scalars(run_copy)
    assert {tag: scalars[tag] for tag in expected} == expected
    logged = {"train/loss", "eval/perplexity", "epoch/val_loss", "system/cpu_percent", "final/best_perplexity"}
    assert logged <= set(expected)

    again = cli("sync", run_copy, "--to", "tensorboard")  # sends only what TensorBoard lacks: nothing
    assert again.exit_code == 0, again.output
    assert tensorboard_scalars(run_copy / "tensorboard") == scalars


def test_sync_to_wandb_makes_an_offline_run_with_the_recorded_history(run_copy):
    from trackkit.wandb_files import read_run_file

    # A process of its own, as a user runs it: wandb writes the run file's tail when its process
    # ends, and `wandb sync` reads the file after that.
    done = subprocess.run([str(BIN / "trackkit"), "sync", str(run_copy), "--to", "wandb"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (run_copy / "wandb").glob("offline-run-*/run-*.wandb")
    run_file = read_run_file(path)
    assert f"(wandb run {run_file.run_id})" in done.stdout
    # the wandb tracker plots each namespace against its own step axis (trackkit/trackers/wandb.py)
    expected = [
        {**e["metrics"], f"{e.get('namespace') or e['event']}/step": e["step"]}
        for e in events(run_copy) if e["event"] in ("train", "eval", "epoch", "final", "metrics")
    ]
    assert [{k: v for k, v in row.items() if not k.startswith("_")} for row in run_file.history] == expected
    final = next(e["metrics"] for e in events(run_copy) if e["event"] == "final")
    assert {k: run_file.summary[k] for k in final} == final
    assert run_file.config["learning_rate"] == 1e-3 and run_file.exit_code == 0


def test_the_trainers_system_metrics_reach_the_record_at_its_train_steps(runs_root):
    recorded = events(runs_root / "lr-small")
    samples = [e for e in recorded if e["event"] == "metrics"]
    assert samples and {e["namespace"] for e in samples} == {"system"}
    assert {e["step"] for e in samples} <= {0} | {e["step"] for e in recorded if e["event"] == "train"}
    for event in samples:
        assert {"system/cpu_percent", "system/process_rss_mb"} <= set(event["metrics"])
        assert 0 <= event["metrics"]["system/cpu_percent"] <= 100 and event["metrics"]["system/process_rss_mb"] > 10


# -- bad input -------------------------------------------------------------------------------------
def test_a_folder_without_runs_is_one_line(tmp_path):
    assert_one_line_error(cli("runs", "list", tmp_path), "no readable trackkit runs under")
    assert_one_line_error(cli("runs", "list", tmp_path / "missing"), "is not a folder")


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    for command in (["runs", "show"], ["runs", "compare"], ["runs", "export"], ["sync", "--to", "tensorboard"]):
        assert_one_line_error(cli(*command, tmp_path), "is not a trackkit run")


def test_a_torn_last_line_is_skipped_and_everything_before_it_read(run_copy):
    metrics = run_copy / "trackkit" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"event": "train", "step": 13, "metr')  # a kill -9 in the middle of a write
    result = cli("runs", "list", run_copy)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[2] == "12"
    assert cli("runs", "show", run_copy).exit_code == 0
    assert cli("sync", run_copy, "--to", "tensorboard").exit_code == 0
    assert max(step for step, _ in tensorboard_scalars(run_copy / "tensorboard")["train/loss"]) == 12


def test_a_corrupt_line_before_the_last_is_one_line(run_copy):
    metrics = run_copy / "trackkit" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    assert_one_line_error(cli("runs", "show", run_copy), "metrics.jsonl:2: not valid JSON")


def test_a_run_from_a_newer_trackkit_is_one_line(run_copy):
    run_json = run_copy / "trackkit" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "format": 99}))
    for command in (["runs", "show"], ["runs", "compare"], ["runs", "plot"], ["sync", "--to", "tensorboard"]):
        assert_one_line_error(cli(*command, run_copy), "has format 99, newer than this trackkit reads")
    listing = cli("runs", "list", run_copy)
    assert listing.exit_code == 2
    assert "skipped" in listing.output and "format 99" in listing.output
    assert listing.output.strip().splitlines()[-1].startswith("Error: no readable trackkit runs")
