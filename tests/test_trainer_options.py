"""trackkit-train's options come from TrainConfig alone: spellings, --help groups, checks, the README table."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from trainer_util import SMALL_MODEL, train, write_corpus

from reference_trainer.cli import main
from reference_trainer.config import (
    GROUPS,
    TrainConfig,
    check_value,
    flag,
    option_fields,
    options_table,
    spec,
    value_type,
)
from reference_trainer.errors import InputError

REPO = Path(__file__).resolve().parents[1]
FLOATS = [f for f in option_fields() if value_type(TrainConfig, f.name) is float]
RANGED = [f for f in option_fields() if spec(f).range is not None]


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # click's exit, not an escaped exception
    (line,) = result.output.splitlines()
    assert line.startswith("Error: ")
    return line


def test_the_readme_table_is_the_one_the_config_makes():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- trackkit-train options: .*? -->\n(.*?)<!-- end of trackkit-train options -->", readme,
                      re.S)
    assert found, "the README lost its options table markers"
    assert found.group(1) == options_table(), "the README's options table drifted from TrainConfig; paste:\n" + \
        options_table()


def test_every_field_is_an_option_in_both_spellings_under_its_group():
    params = {p.name: p for p in main.params}
    help_text = train("--help").output
    sections = dict(re.findall(r"^(\w+) options:\n(.*?)(?=^\w+ options:|^Commands:|\Z)", help_text, re.M | re.S))
    assert list(sections) == [*GROUPS, "Other"]
    for f in option_fields():
        option = params[f.name]
        assert flag(f.name) in option.opts, f.name
        if "_" in f.name:
            assert "--" + f.name in option.opts, f.name  # the guide's spelling
        assert flag(f.name) in sections[spec(f).group], f.name
    assert "--tracker" in sections["Tracking"] and "--config" in sections["Other"]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("field", FLOATS, ids=lambda f: f.name)
def test_every_float_option_must_be_finite(tmp_path, field, value):
    result = train(flag(field.name), value, "--output-dir", tmp_path / "run", "--max-steps", 2)
    assert one_line_error(result) == f"Error: {flag(field.name)} must be a finite number, got {float(value)}"
    assert not (tmp_path / "run").exists()


def outside(f) -> float:
    """A value just outside the field's range."""
    bounds = spec(f).range
    if bounds.low is not None:
        return bounds.low if bounds.low_open else bounds.low - 1
    return bounds.high if bounds.high_open else bounds.high + 1


@pytest.mark.parametrize("field", RANGED, ids=lambda f: f.name)
def test_every_range_is_checked_in_one_place(tmp_path, field):
    kind = value_type(TrainConfig, field.name)
    value = kind(outside(field))
    result = train("--output-dir", tmp_path / "run", "--max-steps", 2, flag(field.name), value)  # the last wins
    assert one_line_error(result) == "Error: " + spec(field).range.error(flag(field.name), value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError):  # the same check for a config made in Python
        TrainConfig(**{field.name: value}).validate()


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", math.inf, "--learning-rate must be a finite number, got inf"),
    ("batch_size", "8", "--batch-size must be a whole number, got '8'"),
    ("batch_size", 8.0, "--batch-size must be a whole number, got 8.0"),
    ("learning_rate", True, "--learning-rate must be a number, got True"),
    ("compile", "yes", "--compile must be true or false, got 'yes'"),
    ("model", "huge", "unknown --model 'huge'; choose one of tiny, gpt2-124m"),
    ("val_fraction", 1, "--val-fraction must be between 0 and 1, got 1"),
    ("dropout", 1.0, "--dropout must be in [0, 1), got 1.0"),
    ("bpe_vocab_size", 256, "--bpe-vocab-size must be above 256, got 256: the byte alphabet has 256"),
    ("warmup_steps", -1, "--warmup-steps must not be negative, got -1"),
])
def test_a_config_made_in_python_is_checked_like_the_command_line(field, value, message):
    with pytest.raises(InputError) as caught:
        TrainConfig(**{field: value}).validate()
    assert str(caught.value) == message


def inside(f) -> float:
    """A value inside the field's range."""
    bounds = spec(f).range
    if bounds.low is None:
        return bounds.high - 1
    value = bounds.low + (1 if bounds.low_open else 0)
    return value if bounds.allows(value) else (bounds.low + bounds.high) / 2


@pytest.mark.parametrize("field", RANGED, ids=lambda f: f.name)
def test_a_value_inside_the_range_passes(field):
    check_value(TrainConfig, field, value_type(TrainConfig, field.name)(inside(field)))


@pytest.mark.parametrize("args, message", [
    (["--learning-rate", "abc"], "Error: Invalid value for '--learning-rate' / '--learning_rate': 'abc' is not a "
                                 "valid float."),
    (["--batch-sise", "4"], "Error: No such option '--batch-sise'. (Did you mean one of: '--batch-size', "
                            "'--batch_size', '--block-size'?)"),
    (["--model", "huge"], "Error: Invalid value for '--model': 'huge' is not one of 'tiny', 'gpt2-124m'."),
    (["sample"], "Error: Missing option '--checkpoint'."),
])
def test_a_command_line_click_cannot_parse_is_one_line_too(tmp_path, args, message):
    assert one_line_error(train(*args)) == message


def test_a_non_finite_number_in_a_config_file_is_refused(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text("learning_rate = inf\n")
    result = train("--config", config_file, "--output-dir", tmp_path / "run")
    assert one_line_error(result) == "Error: --learning-rate must be a finite number, got inf"
    assert not (tmp_path / "run").exists()


def adam(run: Path) -> dict:
    """The AdamW settings in the run's last checkpoint."""
    state = torch.load(run / "checkpoints" / "last" / "optimizer.pt", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    return {"betas": tuple(group["betas"]), "eps": group["eps"]}


def test_adams_betas_and_epsilon_are_options_recorded_like_the_rest(tmp_path):
    data = write_corpus(tmp_path, chars=1500)
    common = ["--data", data, *SMALL_MODEL, "--max-steps", 2, "--tracker", "jsonl"]
    assert train(*common, "--output-dir", tmp_path / "default").exit_code == 0
    assert adam(tmp_path / "default") == {"betas": (0.9, 0.95), "eps": 1e-8}  # what the trainer always used
    result = train(*common, "--output-dir", tmp_path / "set", "--beta1", 0.8, "--beta2", 0.99, "--adam_eps", 1e-6)
    assert result.exit_code == 0, result.output
    assert adam(tmp_path / "set") == {"betas": (0.8, 0.99), "eps": 1e-6}
    config = json.loads((tmp_path / "set" / "trackkit" / "config.json").read_text())
    assert (config["beta1"], config["beta2"], config["adam_eps"]) == (0.8, 0.99, 1e-6)
    # A resumed run keeps them; given again, they win.
    resumed = train("--output-dir", tmp_path / "set", "--resume", "--max-steps", 3, "--tracker", "jsonl")
    assert resumed.exit_code == 0, resumed.output
    assert adam(tmp_path / "set") == {"betas": (0.8, 0.99), "eps": 1e-6}
