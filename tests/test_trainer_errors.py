"""Bad input: one clear line, exit code 2, no traceback, and nothing already recorded is touched."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_util import SMALL_MODEL, train, write_corpus


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # click's exit, not an escaped exception
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file (and link target) under folder, by content: to show nothing changed."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def data_file(tmp_path: Path, content: bytes, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("make_data, message", [
    (lambda t: t / "missing.txt", "data path '{t}/missing.txt' does not exist"),
    (lambda t: str(t / "nothing-*.txt"), "no files match --data '{t}/nothing-*.txt'"),
    (lambda t: (t / "empty-folder").mkdir() or t / "empty-folder",
     "data folder '{t}/empty-folder' has no .txt or .jsonl files"),
    (lambda t: data_file(t, b"  \n\n \n"), "the corpus '{t}/data.txt' is empty: no text in it"),
    (lambda t: data_file(t, b"Hello, world."),
     "the corpus has 13 tokens, shorter than one block (16 + 1); use more text or a smaller --block-size"),
    (lambda t: data_file(t, "caf\u00e9 ok".encode("latin-1")),
     "{t}/data.txt is not UTF-8 text (byte 0xe9 at offset 3)"),
    (lambda t: data_file(t, b'{"text": "a"}\n{"txt": "b"}\n', "d.jsonl"), "{t}/d.jsonl:2 has no string 'text' field"),
])
def test_bad_data_is_one_line(tmp_path, make_data, message):
    data = make_data(tmp_path)
    result = train("--data", data, *SMALL_MODEL, "--output-dir", tmp_path / "run", "--max-steps", 2)
    assert one_line_error(result) == "Error: " + message.format(t=tmp_path)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", 0, "--batch-size must be positive, got 0"),
    ("--batch-size", -4, "--batch-size must be positive, got -4"),
    ("--learning-rate", 0, "--learning-rate must be positive, got 0.0"),
    ("--learning-rate", -0.001, "--learning-rate must be positive, got -0.001"),
])
def test_non_positive_batch_size_or_learning_rate_is_one_line(tmp_path, flag, value, message):
    result = train(flag, value, "--output-dir", tmp_path / "run", "--max-steps", 2)
    assert one_line_error(result) == "Error: " + message
    assert not (tmp_path / "run").exists()


@pytest.fixture
def trained_run(tmp_path) -> Path:
    """A run folder with a record and checkpoints, as a finished (or killed) run leaves it."""
    data = write_corpus(tmp_path, chars=1500)
    out = tmp_path / "run"
    result = train("--data", data, *SMALL_MODEL, "--output-dir", out, "--max-steps", 4, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    return out


def last(run: Path) -> Path:
    return run / "checkpoints" / "last"


def missing_folder(run: Path) -> Path:
    return run / "checkpoints" / "missing"


def truncated_weights(run: Path) -> Path:
    path = last(run).resolve() / "model.pt"
    path.write_bytes(path.read_bytes()[:300])  # as a full disk or a kill of a naive writer leaves it
    return last(run)


def garbage_weights(run: Path) -> Path:
    path = last(run).resolve() / "model.pt"
    path.write_bytes(bytes(path.stat().st_size))  # the size meta.json records, but no torch file
    return last(run)


def garbage_trainer_state(run: Path) -> Path:
    path = last(run).resolve() / "trainer.pt"
    path.write_bytes(b"x" * path.stat().st_size)
    return last(run)


def torn_meta(run: Path) -> Path:
    (last(run).resolve() / "meta.json").write_text('{"step": 4,')
    return last(run)


def lost_optimizer_state(run: Path) -> Path:
    (last(run).resolve() / "optimizer.pt").unlink()
    return last(run)


@pytest.mark.parametrize("damage, message", [
    (missing_folder, "checkpoint '{run}/checkpoints/missing' does not exist"),
    (truncated_weights, "checkpoint '{run}/checkpoints/last' is incomplete: model.pt has 300 bytes, "),
    (garbage_weights, "checkpoint '{run}/checkpoints/last' cannot be loaded: "),
    (garbage_trainer_state, "checkpoint file '{run}/checkpoints/last/trainer.pt' is corrupt: "),
    (torn_meta, "checkpoint '{run}/checkpoints/last' is corrupt: JSONDecodeError: "),
    (lost_optimizer_state, "checkpoint '{run}/checkpoints/last' is incomplete: optimizer.pt is missing"),
])
def test_resuming_from_a_missing_or_corrupt_checkpoint_is_one_line_and_keeps_the_record(trained_run, damage, message):
    resume = damage(trained_run)
    before = fingerprint(trained_run)
    result = train("--resume", resume, "--output-dir", trained_run, "--max-steps", 8, "--tracker", "jsonl")
    assert one_line_error(result).startswith("Error: " + message.format(run=trained_run))
    assert fingerprint(trained_run) == before


def test_resuming_into_another_model_shape_is_one_line_and_keeps_the_record(trained_run):
    before = fingerprint(trained_run)
    result = train("--resume", trained_run / "checkpoints" / "last", "--n-layer", 2, "--n-embd", 32, "--max-steps", 8,
                   "--tracker", "jsonl")
    assert one_line_error(result) == (
        f"Error: checkpoint '{trained_run}/checkpoints/last' holds a model with n_layer=1, this run asks for "
        "n_layer=2; a resumed run keeps its model's shape"
    )
    assert fingerprint(trained_run) == before


def test_the_console_script_exits_2_with_one_line_on_stderr(tmp_path):
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "trackkit-train"), "--batch-size", "0", "--output-dir",
         str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    # Lines from trackkit itself (a tracker plugin it could not load) are not the trainer's.
    own = [line for line in proc.stderr.splitlines() if not line.startswith("trackkit: ")]
    assert own == ["Error: --batch-size must be positive, got 0"]


# -- the output folder: every path the trainer writes is checked before anything is -----------------
def test_an_output_dir_that_is_a_file_is_one_line(tmp_path):
    path = data_file(tmp_path, b"not a folder", "taken")
    result = train("--output-dir", path, "--max-steps", 2)
    assert one_line_error(result) == f"Error: --output-dir {path}: {path} is a file, not a folder"
    assert path.read_bytes() == b"not a folder"
    under = train("--output-dir", path / "run", "--max-steps", 2)
    assert one_line_error(under) == f"Error: --output-dir {path}/run cannot be created: {path} is a file, not a folder"


def test_a_checkpoints_path_that_is_a_file_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    data_file(out, b"", "checkpoints")
    result = train("--output-dir", out, "--max-steps", 2)
    assert one_line_error(result) == f"Error: --output-dir {out}: {out}/checkpoints is a file, not a folder"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]


@pytest.mark.parametrize("under", ["", "sub/run"], ids=["the-folder", "under-it"])
def test_a_read_only_output_dir_or_parent_is_one_line(read_only, tmp_path, under):
    out = read_only / under if under else read_only
    before = sorted(tmp_path.rglob("*"))
    result = train("--output-dir", out, "--max-steps", 2)
    assert one_line_error(result) == f"Error: --output-dir {out} cannot be written: {read_only} is on a read-only " \
                                     "filesystem"
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="permission bits do not stop root; the read-only mount test covers it")
def test_an_output_dir_without_write_permission_is_one_line(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    result = train("--output-dir", folder / "run", "--max-steps", 2)
    assert one_line_error(result) == (f"Error: --output-dir {folder}/run cannot be written: {folder} is not writable "
                                      "(permission denied)")
