"""Tracker selection as any click command gets it, and the `trackkit plugins` listing."""
import click
import pytest
from click.testing import CliRunner

from trackkit.cli import main as trackkit_cli
from trackkit.options import Tracking, tracker_options


@click.command()
@click.option("--steps", default=1)
@tracker_options()
def demo(tracking: Tracking, steps: int) -> None:
    click.echo(f"trackers={','.join(tracking.trackers)} lang={tracking.options.get('console_lang')} "
               f"offline={tracking.options['offline']} steps={steps}")


def invoke(*args, env=None):
    return CliRunner().invoke(demo, list(args), env=env or {})


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "console,jsonl"),
        (["--tracker", "jsonl"], "jsonl"),
        (["--tracker", "console,jsonl", "--tracker", "jsonl"], "console,jsonl"),
        (["--tracker", "none"], ""),
        (["--tracker", "trackers_for_tests:Recording"], "trackers_for_tests:Recording"),
        (["--tracker", "none", "--use_wandb"], "wandb"),
        (["--use_wandb"], "console,jsonl,wandb"),
    ],
)
def test_selection(args, expected):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"trackers={expected} " in result.output


def test_environment_variable_is_the_default():
    assert "trackers=jsonl " in invoke(env={"TRACKKIT_TRACKERS": "jsonl"}).output
    assert "trackers=console " in invoke("--tracker", "console", env={"TRACKKIT_TRACKERS": "jsonl"}).output


def test_unknown_tracker_is_one_line_listing_what_is_available():
    result = invoke("--tracker", "console,nope")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: unknown tracker 'nope'; available: ")
    assert {"console", "jsonl", "none (or package.module:Class)"} <= set(line.split("available: ")[1].split(", "))


def test_none_cannot_be_combined():
    result = invoke("--tracker", "none,jsonl")
    assert result.exit_code == 2 and "cannot be combined" in result.output


def test_offline_is_every_backends_and_wandb_mode_is_wandbs_alone():
    assert "offline=True" in invoke("--offline").output
    assert "offline=True" in invoke(env={"TRACKKIT_OFFLINE": "Yes"}).output
    assert "offline=None" in invoke(env={"TRACKKIT_OFFLINE": "0"}).output
    # None: each tracker decides; the wandb tracker reads WANDB_MODE, no other tracker does.
    assert "offline=None" in invoke(env={"WANDB_MODE": "offline"}).output
    result = invoke(env={"TRACKKIT_OFFLINE": "maybe"})
    assert result.exit_code == 2 and "Error: $TRACKKIT_OFFLINE must be true or false" in result.output


def test_tracker_contributed_options_appear_in_help_and_reach_the_tracker():
    assert "--console-lang" in invoke("--help").output
    assert "lang=zh" in invoke("--console-lang", "zh").output


def test_plugins_lists_built_ins_with_their_distribution():
    result = CliRunner().invoke(trackkit_cli, ["plugins"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert rows["console"][1:3] == ["trackkit", "0.2.0"]
    assert rows["jsonl"][3] == "trackkit.trackers.jsonl:JsonlTracker"
    assert rows["jsonl"][4] == "ok"
