"""Contract v1: what a tracker may declare and receive, and what the layer refuses."""
import csv
import time
from pathlib import Path

import click
import pytest
import trackers_for_tests as t
from click.testing import CliRunner

import trackkit
from trackkit import options as tracking_options
from trackkit.namespaces import BUILTIN
from trackkit.plugins import TrackerSource, discovered


@pytest.fixture(autouse=True)
def _fresh_calls():
    t.CALLS.clear()


def log_every_namespace(run) -> list[float]:
    """One record of each namespace at steps 1-3; the times just before each call."""
    before = []
    for call in (
        lambda: run.log_train({"loss": 2.0}, step=1),
        lambda: run.log_eval({"loss": 1.5}, step=2),
        lambda: run.log_epoch({"val_loss": 1.5, "number": 1}, epoch=1, step=2),
        lambda: run.log_metrics("system", {"cpu_percent": 12.5}, step=2),
        lambda: run.log_metrics("data", {"tokens": 640}, step=3),
        lambda: run.log_final({"best_perplexity": 4.5}),
    ):
        before.append(time.time())
        call()
        time.sleep(0.01)
    return before


def test_a_tracker_with_start_the_catch_all_and_finish_receives_every_namespace(tmp_path):
    with trackkit.start(["trackers_for_tests:Minimal"], output_dir=tmp_path, name="min") as run:
        before = log_every_namespace(run)
    got = [c for c in t.CALLS if c[0] == "metrics"]
    assert [(c[1], c[2], c[4]) for c in got] == [
        ("train", 1, {"train/loss": 2.0}),
        ("eval", 2, {"eval/loss": 1.5}),
        ("epoch", 2, {"epoch/val_loss": 1.5, "epoch/number": 1}),  # at the global step
        ("system", 2, {"system/cpu_percent": 12.5}),
        ("data", 3, {"data/tokens": 640}),
        ("final", 1, {"final/best_perplexity": 4.5}),  # at the last training step logged
    ]
    # The time of each log call, taken on the caller's thread, not when the tracker got to it.
    assert all(0 <= c[3] - b < 0.005 for c, b in zip(got, before))
    assert t.CALLS[0] == ("start", "min") and t.CALLS[-1] == ("finish", "success")


def test_a_tracker_written_for_the_last_release_still_loads_and_receives_everything(tmp_path):
    # The CSV plugin as it shipped before contract v1: a hook per namespace, no timestamp, final without step.
    with trackkit.start(["old_plugins.csv_v0:CsvTracker"], output_dir=tmp_path) as run:
        log_every_namespace(run)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["step", "metric", "value"], ["1", "train/loss", "2.0"], ["2", "eval/loss", "1.5"],
        ["2", "epoch/val_loss", "1.5"], ["2", "epoch/number", "1"], ["2", "system/cpu_percent", "12.5"],
        ["3", "data/tokens", "640"], ["", "final/best_perplexity", "4.5"],
    ]


def test_a_tracker_taking_neither_a_namespaces_hook_nor_the_catch_all_gets_nothing_of_it(tmp_path):
    with trackkit.start(["trackers_for_tests:Slow"], output_dir=tmp_path) as run:  # implements log_train only
        run.log_eval({"loss": 1.0}, step=1)
    assert run.summary["trackers"]["slow"] == {"state": "ok", "delivered": 1, "lost": 0}


def test_a_hook_with_an_argument_not_in_the_spec_fails_at_start_with_the_valid_names(tmp_path):
    with pytest.raises(trackkit.TrackkitError) as caught:
        trackkit.start(["trackers_for_tests:WrongArgument"], output_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith("tracker 'wrongargument': ") and "steps" in message
    assert message.endswith("trackkit_log_train takes metrics, step, timestamp, seq")
    assert not (tmp_path / "trackkit").exists()  # refused before anything was written


def test_namespaces_are_defined_once_with_their_hook_and_axis():
    assert {n: (ns.hook, ns.axis) for n, ns in BUILTIN.items()} == {
        "train": ("trackkit_log_train", "train/step"), "eval": ("trackkit_log_eval", "eval/step"),
        "epoch": ("trackkit_log_epoch", "epoch/step"), "final": ("trackkit_log_final", "final/step"),
    }
    for module in ("run", "dispatch", "record", "trackers/wandb", "metrics"):  # no list of them of their own
        source = (Path(trackkit.__file__).parent / f"{module}.py").read_text()
        assert '"train", "eval", "epoch"' not in source, module


@click.command()
@tracking_options.tracker_options()
def demo(tracking):
    click.echo(repr(sorted((k, v) for k, v in tracking.options.items() if v is not None)))


def test_plugin_options_take_the_underscore_spelling_too(tmp_path):
    result = CliRunner().invoke(demo, ["--tracker", "csv", "--csv_dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert ("csv_dir", str(tmp_path)) in eval(result.output)
    assert "--csv-dir, --csv_dir" in CliRunner().invoke(demo, ["--help"]).output


class Clashing:
    options = [click.Option(["--csv-dir", "csv_dir"], help="the same name as the csv plugin's")]


def test_two_installed_trackers_declaring_one_option_is_an_error_naming_both(monkeypatch):
    installed = {**discovered(), "zzz": TrackerSource("zzz", "test_contract:Clashing", "trackkit-zzz 9.9")}
    monkeypatch.setattr(tracking_options, "discovered", lambda: installed)

    @click.command()
    @tracking_options.tracker_options()
    def command(tracking):
        click.echo("ran")

    result = CliRunner().invoke(command, ["--tracker", "console"])
    assert result.exit_code == 2 and "ran" not in result.output
    assert result.output.strip() == (
        "Error: option --csv-dir (csv_dir) is declared by tracker 'csv' (trackkit-csv 0.2.0) and by tracker "
        "'zzz' (trackkit-zzz 9.9); uninstall one of them"
    )


def test_through_trackkit_train_the_three_hook_tracker_receives_every_namespace_the_trainer_logs(tmp_path):
    from trainer_util import SMALL_MODEL, train, write_corpus

    data = write_corpus(tmp_path, chars=1500)  # an epoch of a few steps
    began = time.time()
    result = train("--data", data, *SMALL_MODEL, "--num-epochs", 2, "--log-interval", 2, "--eval-interval", 4,
                   "--output-dir", tmp_path / "run", "--tracker", "trackers_for_tests:Minimal,jsonl",
                   "--system-metrics", "0.2")
    assert result.exit_code == 0, result.output
    got = [c for c in t.CALLS if c[0] == "metrics"]
    assert {c[1] for c in got} == {"train", "eval", "epoch", "final", "system"}
    epochs = [c for c in got if c[1] == "epoch"]
    assert len(epochs) == 2 and epochs[-1][2] == max(c[2] for c in got if c[1] == "train")  # at the global step
    assert all(began <= c[3] <= time.time() for c in got)  # each record's own time
    # What the tracker got is what the local record holds, namespace by namespace.
    lines = (tmp_path / "run" / "trackkit" / "metrics.jsonl").read_text().splitlines()
    import json
    recorded = [(e.get("namespace") or e["event"], e["step"], e["metrics"]) for e in map(json.loads, lines)
                if "metrics" in e]
    assert [(c[1], c[2], c[4]) for c in got] == recorded
