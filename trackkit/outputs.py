"""Paths the run tools write: checked before any work starts, and never left half-written.

A command creates at most the last part of a path it is given (a file, or export's folder);
the folder above must exist. "Writable" is found out by writing, not from permission bits: as
root, or on a read-only mount, the bits say nothing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import TrackkitError


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a file a command may (over)write: not a folder, in a folder that exists and can be written."""
    path = Path(path)
    if path.is_dir():
        raise TrackkitError(f"cannot write {path}: it is a folder (give a file name)")
    _check_folder_of(path, path.parent)
    return path


def check_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder a command writes files into: an existing folder, or one it may create."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TrackkitError(f"cannot write into {path}: it is a file, not a folder")
    _check_folder_of(path, path if path.is_dir() else path.parent)
    return path


def _check_folder_of(path: Path, folder: Path) -> None:
    if not folder.exists():
        raise TrackkitError(f"cannot write {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise TrackkitError(f"cannot write {path}: {folder} is not a folder")
    error = write_error(folder)
    if error is not None:
        raise TrackkitError(f"cannot write {path}: {error.strerror or error} ({folder})")


def write_error(folder: Path) -> OSError | None:
    """Why files cannot be written in the existing ``folder``, found out by writing one; None when they can."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return exc


@contextlib.contextmanager
def replaced_whole(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it becomes ``path`` only when the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder to write files in; they are moved into ``folder`` (created when missing)
    only when the block succeeds, replacing files of the same names. Nothing is left on failure,
    and no folder is made for no files."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder if folder.is_dir() else folder.parent))
    try:
        yield staging
        written = sorted(staging.iterdir())
        if written:
            folder.mkdir(exist_ok=True)
        for path in written:
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def removed_on_failure(folder: Path) -> Iterator[None]:
    """Whatever the block creates at ``folder`` (missing or empty before it) is removed if it fails."""
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            for path in folder.iterdir():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise
