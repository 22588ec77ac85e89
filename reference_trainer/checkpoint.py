"""Checkpoints: folders written whole, published by an atomic index and links, never lost.

    <output_dir>/checkpoints/step-00000500/   the engine's files: model.pt, optimizer.pt and
                                              trainer.pt (RNG states, loss accumulators), or
                                              DeepSpeed's (with model.pt for sampling);
                                              tokenizer.json; meta.json (step, epoch, position,
                                              best loss, run id, model shape, options, and the
                                              size of every other file: what "complete" means)
    <output_dir>/checkpoints/index.json       {"last": "step-00000500", "best": "step-00000250"}
    <output_dir>/checkpoints/last -> step-00000500   the newest
    <output_dir>/checkpoints/best -> step-00000250   the lowest validation loss so far

A checkpoint is written into a hidden temporary folder, renamed to its step's name, and only
then do the index (a small file replaced whole) and the links switch to it. A kill at any moment
leaves the index and every link naming a complete checkpoint.

Links are not the only index: ``cp -r`` turns them into folders, ``rsync`` without ``-l`` and
object stores drop them. ``latest`` therefore reads the index first, then the ``last`` link, and
else takes the complete ``step-*`` folder of the highest step in its meta.json.

A process deletes only folders it wrote itself, once nothing names them any more: checkpoints of
earlier processes, files of the user's and unfinished folders of a killed process stay. In a
multi-process run every rank takes part in the engine's part (DeepSpeed writes one shard per
rank); rank 0 alone does everything else.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import distributed
from .errors import InputError
from .faults import say

if TYPE_CHECKING:
    from .engine import Engine

FORMAT = 1
DIRNAME = "checkpoints"
INDEX = "index.json"
LINKS = ("last", "best")
TRAINER_STATE = "trainer.pt"  # the loop's state, where the engine keeps no state of its own (engine.py)
STEP_FOLDER = re.compile(r"step-\d{8}(\.\d+)?")  # a step written again by a later process gets .1, .2, ...
UNFINISHED = ".tmp-step-"  # the prefix of a folder still being written (or left by a killed process)
REQUIRED_META = {"step", "epoch", "position", "model", "config"}


@dataclass
class Checkpoint:
    """A checkpoint found on disk (its meta.json read; the tensors are loaded on demand)."""

    path: Path
    meta: dict[str, Any]
    note: str | None = None  # why `latest` did not take the one the index or link names, if it did not

    @property
    def step(self) -> int:
        return self.meta["step"]

    @property
    def run_dir(self) -> Path | None:
        """The run folder the checkpoint lives in, if it is in one (``<run>/checkpoints/<name>``)."""
        real = self.path.resolve()
        return real.parent.parent if real.parent.name == DIRNAME else None


def checkpoints_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / DIRNAME


# -- finding -------------------------------------------------------------------------------------
def find(resume: str | None, output_dir: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint ``--resume`` names: a folder, or ``auto`` for the latest in ``output_dir``.

    ``auto`` with no checkpoint there means a fresh start (so a preempted job can simply be
    started again with the same command); a named folder that is missing is an error.
    """
    if resume is None:
        return None
    if resume == "auto":
        return latest(output_dir)
    return read(Path(resume))


def latest(output_dir: str | os.PathLike) -> Checkpoint | None:
    """``last`` as the index or the link names it, else the complete step folder of the highest step.

    None where ``output_dir`` has no checkpoint at all; InputError where it has only broken ones.
    """
    found = named(output_dir, "last")
    if found is not None:
        return found
    root = checkpoints_dir(output_dir)
    pointers, folders = _claims(root)
    found = _newest_complete(root)
    if found is None:
        if pointers or folders:
            broken = (pointers or folders)[0]
            raise InputError(f"checkpoint {str(broken)!r} {problem(broken)}")
        return None
    why = f"{DIRNAME}/{pointers[0].name} {problem(pointers[0])}" if pointers else \
        f"{DIRNAME}/last is missing (a copy that dropped links?)"
    found.note = why  # said with where it resumes from (lines.py: resume_fallback)
    return found


def named(output_dir: str | os.PathLike, link: str) -> Checkpoint | None:
    """The complete checkpoint the index, else the link, names ``last`` or ``best``; None if neither does."""
    root = checkpoints_dir(output_dir)
    name = read_index(root).get(link)
    for path in ([root / name] if name else []) + [root / link]:
        if path.is_dir() and problem(path) is None:
            if (root / link).is_symlink() and (root / link).resolve() == path.resolve():
                path = root / link  # the same checkpoint, by the name people know it by
            return read(path)
    return None


def holds_checkpoints(output_dir: str | os.PathLike) -> bool:
    """Whether ``output_dir`` has an index, a link or a step folder with a meta.json: a run to resume."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return False
    return (root / INDEX).exists() or any(os.path.lexists(root / link) for link in LINKS) or any(
        (path / "meta.json").exists() for path in root.iterdir() if STEP_FOLDER.fullmatch(path.name))


def read_index(root: Path) -> dict[str, str]:
    """The index's ``{link: folder name}``; empty if it is missing or unreadable (the fallbacks take over)."""
    try:
        index = json.loads((root / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(index, dict):
        return {}
    return {link: name for link, name in index.items()
            if link in LINKS and isinstance(name, str) and STEP_FOLDER.fullmatch(name)}


def read(path: Path) -> Checkpoint:
    """The checkpoint in ``path``; InputError (one line) if it is missing, incomplete or corrupt."""
    why = problem(path)
    if why is not None:
        raise InputError(f"checkpoint {str(path)!r} {why}")
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    meta["tokenizer"] = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    return Checkpoint(path, meta)


def problem(path: Path) -> str | None:
    """What keeps ``path`` from being a complete checkpoint, or None."""
    if not path.exists():
        return "does not exist"
    if not (path / "meta.json").is_file():
        return "is incomplete or not a checkpoint: no meta.json"
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        return f"is incomplete: {Path(str(exc.filename)).name} is missing"
    except (OSError, ValueError) as exc:
        return f"is corrupt: {type(exc).__name__}: {exc}"
    if not isinstance(meta, dict) or REQUIRED_META - meta.keys():
        lacking = sorted(REQUIRED_META - meta.keys()) if isinstance(meta, dict) else ["everything"]
        return f"is corrupt: meta.json lacks {', '.join(lacking)}"
    if meta.get("format", 0) > FORMAT:
        return f"has format {meta['format']}, newer than this trainer reads"
    return _missing_files(path, meta.get("files", {"model.pt": None}))


def _missing_files(path: Path, files: dict[str, int | None]) -> str | None:
    """A file the manifest lists that is gone or has another size (a copy cut short, a full disk)."""
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"is incomplete: {name} is missing"
        if size is not None and file.stat().st_size != size:
            return f"is incomplete: {name} has {file.stat().st_size} bytes, {size} when it was written"
    return None


def _newest_complete(root: Path) -> Checkpoint | None:
    """The complete checkpoint of the highest step among the step folders (and links copied as folders)."""
    if not root.is_dir():
        return None
    found = [read(path) for path in sorted(root.iterdir())
             if (STEP_FOLDER.fullmatch(path.name) or path.name in LINKS) and path.is_dir() and problem(path) is None]
    # The same step twice: the one saved last, and a step folder rather than a copy of a link.
    return max(found, key=lambda c: (c.step, c.meta.get("saved_at", 0), c.path.name not in LINKS), default=None)


def _claims(root: Path) -> tuple[list[Path], list[Path]]:
    """What says it is a checkpoint: the folder the index names ``last`` and the link; step folders with a meta.json."""
    if not root.is_dir():
        return [], []
    name = read_index(root).get("last")
    pointers = [p for p in [*([root / name] if name else []), root / "last"] if os.path.lexists(p)]
    folders = sorted((p for p in root.iterdir() if STEP_FOLDER.fullmatch(p.name) and (p / "meta.json").exists()),
                     reverse=True)
    return pointers, folders


# -- loading -------------------------------------------------------------------------------------
def load_trainer_state(folder: Path, device: torch.device) -> dict[str, Any]:
    return _load(folder / TRAINER_STATE, device)


def _load(path: Path, device: torch.device) -> Any:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several kinds
        raise InputError(f"checkpoint file {str(path)!r} is corrupt: {describe(exc)}") from None


def describe(exc: Exception) -> str:
    """A load error in a few words: torch's messages run to paragraphs of advice."""
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{Path(exc.filename).name} is missing"
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(exc).__name__


def rng_state() -> dict[str, Any]:
    """Every random generator the training loop draws from (dropout uses torch's)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- writing -------------------------------------------------------------------------------------
class Writer:
    """Writes a run's checkpoints and keeps the index, ``last`` and ``best`` naming complete ones."""

    def __init__(self, output_dir: str | os.PathLike):
        self.root = checkpoints_dir(output_dir)
        self._written: tuple[int, Path] | None = None  # (step, folder) of the latest save
        self._mine: set[str] = set()  # the folders this process wrote: the only ones it may delete
        self._index = read_index(self.root) or {  # an older run's links, or what the trainer resumed from
            link: os.readlink(self.root / link) for link in LINKS if (self.root / link).is_symlink()}
        if distributed.is_main():
            left = sorted(p.name for p in self.root.glob(UNFINISHED + "*")) if self.root.is_dir() else []
            if left:
                say("unfinished", dir=DIRNAME, names=", ".join(left))

    def save(self, step: int, links: tuple[str, ...], engine: Engine, trainer_state: dict, meta: dict,
             tokenizer: dict) -> Path:
        """Write the checkpoint of ``step`` (once per step) and point each of ``links`` at it."""
        if self._written is None or self._written[0] != step:
            self._written = (step, self._write(step, engine, trainer_state, meta, tokenizer))
            self._mine.add(self._written[1].name)
        if not distributed.is_main():
            return self.root / links[0]
        self._index.update({link: self._written[1].name for link in links})
        self._index = {link: name for link, name in self._index.items() if (self.root / name).is_dir()}
        _write_json(self.root / INDEX, {"format": FORMAT, **self._index})
        for link, name in self._index.items():
            self._link(link, name)
        for name in self._mine - set(self._index.values()):
            shutil.rmtree(self.root / name, ignore_errors=True)
            self._mine.discard(name)
        return self.root / links[0]

    def _write(self, step: int, engine: Engine, trainer_state: dict, meta: dict, tokenizer: dict) -> Path:
        tmp = None
        if distributed.is_main():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{UNFINISHED}{step:08d}-", dir=self.root))
        tmp = Path(distributed.broadcast(str(tmp)))  # the folder exists before any rank writes into it
        try:
            engine.save(tmp, trainer_state)
            distributed.barrier()  # and every rank's part is complete before rank 0 publishes it
            if not distributed.is_main():
                return tmp
            return _publish(tmp, self.root, step, meta, tokenizer)
        except BaseException:
            if distributed.is_main():
                shutil.rmtree(tmp, ignore_errors=True)  # this process's own half-written folder
            raise

    def _link(self, link: str, name: str) -> None:
        """Point ``link`` at ``name`` by renaming a new link over it; a folder in its way is kept under another name."""
        path = self.root / link
        if path.is_symlink() and os.readlink(path) == name:
            return
        if path.exists() and not path.is_symlink():
            kept = _free_name(self.root, f"{link}.copied")
            os.replace(path, kept)
            say("link_was_folder", dir=DIRNAME, link=link, kept=kept.name, name=name)
        tmp = self.root / f".{link}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)  # this process's own, from a save that failed half way
        tmp.symlink_to(name)  # relative: the run folder can be moved or copied
        os.replace(tmp, path)


def _publish(tmp: Path, root: Path, step: int, meta: dict, tokenizer: dict) -> Path:
    """Add tokenizer.json and meta.json (with the manifest), sync, and rename ``tmp`` to its step's name."""
    (tmp / "tokenizer.json").write_text(json.dumps(tokenizer) + "\n", encoding="utf-8")
    files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
    meta = {"format": FORMAT, **meta, "saved_at": time.time(), "files": files}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for file in (f for f in tmp.rglob("*") if f.is_file()):  # on disk before the rename makes the folder visible
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    # A folder of this step may exist from an earlier process (resumed from an older
    # checkpoint); never overwrite it in place, the index or a link may still name it.
    folder = _free_name(root, f"step-{step:08d}")
    os.replace(tmp, folder)
    return folder


def _free_name(root: Path, name: str) -> Path:
    """``root/name``, or ``name.1``, ``name.2``, ... where that exists."""
    path, n = root / name, 1
    while os.path.lexists(path):
        path, n = root / f"{name}.{n}", n + 1
    return path


def _write_json(path: Path, data: dict) -> None:
    """Replace ``path`` whole: a reader (or a kill) sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
