"""The run's folder: checked before anything is written, and cleared for a new run only when asked."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from trackkit import TrackkitError
from trackkit.outputs import write_error
from trackkit.record import read_run_json, run_json_path

from .checkpoint import DIRNAME, holds_checkpoints
from .errors import InputError

RECORD_DIRNAME = run_json_path(".").parent.name  # trackkit's record: <output_dir>/trackkit


def check_writable(output_dir: str | os.PathLike) -> None:
    """InputError (one line naming the path and why) unless the run can write ``output_dir`` and what it holds."""
    folder = Path(output_dir)
    for path in (folder, folder / DIRNAME):
        if path.exists() and not path.is_dir():
            raise InputError(f"--output-dir {folder}: {path} is a file, not a folder")
        existing = path
        while not existing.exists() and existing != existing.parent:  # the folder that the run would create it in
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"--output-dir {folder} cannot be created: {existing} is a file, not a folder")
        error = write_error(existing)
        if error is not None:
            why = ("is on a read-only filesystem" if error.errno == errno.EROFS
                   else f"is not writable ({(error.strerror or str(error)).lower()})")
            raise InputError(f"--output-dir {folder} cannot be written: {existing} {why}")


def holds_run(output_dir: str | os.PathLike) -> bool:
    """Whether ``output_dir`` holds a run: checkpoints, or trackkit's record of one."""
    return holds_checkpoints(output_dir) or run_json_path(output_dir).exists()


def clear(output_dir: str | os.PathLike) -> list[str]:
    """--overwrite-output-dir: delete what a run wrote in ``output_dir``; returns the names deleted.

    That is the checkpoints, trackkit's record, the tokenizer, and the folder each tracker keeps
    there by default (``tensorboard``, ``wandb``, and one named after any other tracker the run
    used, such as ``csv`` or ``mlflow``). Anything else in the folder stays.
    """
    folder = Path(output_dir)
    try:
        trackers = (read_run_json(folder) or {}).get("trackers", [])
    except TrackkitError:  # a record this trackkit cannot read: its own folder goes all the same
        trackers = []
    names = [DIRNAME, RECORD_DIRNAME, "tokenizer.json", "tensorboard", "wandb", *trackers]
    deleted = []
    for name in dict.fromkeys(names):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):  # tokenizer.json, or a link where a folder would be: the link alone goes
            path.unlink()
        else:
            continue
        deleted.append(name)
    return deleted
