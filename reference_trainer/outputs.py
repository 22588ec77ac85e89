"""The run's folder, checked before anything is written: every path the trainer writes must be writable."""
from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import DIRNAME
from .errors import InputError


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
        if not os.access(existing, os.W_OK | os.X_OK):
            why = "is on a read-only filesystem" if _read_only(existing) else "is not writable (permission denied)"
            raise InputError(f"--output-dir {folder} cannot be written: {existing} {why}")


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
