"""The CSV tracker: driven through ``trackkit.start`` and checked by reading metrics.csv back."""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import click
from click.testing import CliRunner

import trackkit
from trackkit.cli import main as trackkit_cli
from trackkit.options import tracker_options


def rows(path: Path) -> list[tuple[str, str, str]]:
    """(step, metric, repr of the value) per data row; repr makes NaN comparable."""
    with open(path, newline="", encoding="utf-8") as f:
        header, *data = csv.reader(f)
    assert header == ["step", "time", "metric", "value"]
    return [(step, metric, repr(float(value))) for step, _, metric, value in data]


def test_trackkit_plugins_lists_csv_with_its_distribution() -> None:
    result = CliRunner().invoke(trackkit_cli, ["plugins"])
    row = next(line.split() for line in result.output.splitlines() if line.startswith("csv "))
    assert row == ["csv", "trackkit-csv", "0.2.0", "trackkit_csv:CsvTracker", "ok"]


def test_every_logged_value_is_a_row(tmp_path: Path) -> None:
    with trackkit.start(["csv"], output_dir=tmp_path) as run:
        run.log_train({"loss": 1 / 3, "learning_rate": 3e-4}, step=1)
        run.log_train({"loss": math.nan, "learning_rate": 3e-4}, step=2)
        run.log_eval({"loss": 2.5, "perplexity": math.inf}, step=2)
        run.log_epoch({"train_loss": 0.7, "number": 1}, epoch=1, step=2)
        run.log_metrics("system", {"cpu_percent": 37}, step=2)
        run.log_final({"best_perplexity": 12.25})
    assert rows(tmp_path / "csv" / "metrics.csv") == [
        ("1", "train/loss", repr(1 / 3)), ("1", "train/learning_rate", "0.0003"),
        ("2", "train/loss", "nan"), ("2", "train/learning_rate", "0.0003"),
        ("2", "eval/loss", "2.5"), ("2", "eval/perplexity", "inf"),
        ("2", "epoch/train_loss", "0.7"), ("2", "epoch/number", "1.0"),
        ("2", "system/cpu_percent", "37.0"),
        ("2", "final/best_perplexity", "12.25"),  # at the last training step
    ]


def test_csv_dir_option_reaches_the_tracker(tmp_path: Path) -> None:
    @click.command()
    @tracker_options()
    def command(tracking) -> None:
        with tracking.start(output_dir=tmp_path / "run") as run:
            run.log_train({"loss": 1.5}, step=1)

    assert "--csv-dir" in CliRunner().invoke(command, ["--help"]).output
    result = CliRunner().invoke(command, ["--tracker", "csv", "--csv-dir", str(tmp_path / "elsewhere")])
    assert result.exit_code == 0, result.output
    assert rows(tmp_path / "elsewhere" / "metrics.csv") == [("1", "train/loss", "1.5")]


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path: Path) -> None:
    first = trackkit.start(["csv"], output_dir=tmp_path)
    for step in range(1, 7):
        first.log_train({"loss": float(step)}, step=step)
    first.finish("interrupted")  # the last checkpoint was step 4
    with trackkit.start(["csv"], output_dir=tmp_path, resume_from_step=4) as second:
        for step in range(5, 8):
            second.log_train({"loss": 10.0 * step}, step=step)
    assert rows(tmp_path / "csv" / "metrics.csv") == [
        ("1", "train/loss", "1.0"), ("2", "train/loss", "2.0"), ("3", "train/loss", "3.0"), ("4", "train/loss", "4.0"),
        ("5", "train/loss", "50.0"), ("6", "train/loss", "60.0"), ("7", "train/loss", "70.0"),
    ]


def test_a_row_has_the_time_of_the_log_call(tmp_path: Path) -> None:
    with trackkit.start(["csv"], output_dir=tmp_path) as run:
        before = time.time()
        run.log_train({"loss": 1.5}, step=1)
        after = time.time()
    with open(tmp_path / "csv" / "metrics.csv", newline="", encoding="utf-8") as f:
        (_, when, _, _), = list(csv.reader(f))[1:]
    assert before - 0.001 <= float(when) <= after + 0.001
