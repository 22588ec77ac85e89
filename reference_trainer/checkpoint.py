"""Checkpoints: folders written whole, then published by an atomic link switch.

    <output_dir>/checkpoints/step-00000500/   the engine's files: model.pt, optimizer.pt and
                                              trainer.pt (RNG states, loss accumulators), or
                                              DeepSpeed's (with model.pt for sampling);
                                              meta.json (step, epoch, position, best loss, run id,
                                              model shape, hyperparameters), tokenizer.json
    <output_dir>/checkpoints/last -> step-00000500   the newest
    <output_dir>/checkpoints/best -> step-00000250   the lowest validation loss so far

A checkpoint is written into a hidden temporary folder, renamed to its step's name, and only
then does ``last`` (or ``best``) switch to it, with a rename of a new symbolic link over the old
one. A kill at any moment leaves every link pointing at a complete checkpoint. Folders no link
points at any more are deleted. In a multi-process run every rank takes part in the engine's
part (DeepSpeed writes one shard per rank); rank 0 alone does everything else.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .errors import InputError

FORMAT = 1
DIRNAME = "checkpoints"
LINKS = ("last", "best")
TRAINER_STATE = "trainer.pt"  # the loop's state, where the engine keeps no state of its own (engine.py)


@dataclass
class Checkpoint:
    """A checkpoint found on disk (its meta.json read; the tensors are loaded on demand)."""

    path: Path
    meta: dict[str, Any]

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


def find(resume: str | None, output_dir: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint ``--resume`` names: a folder, or ``auto`` for ``<output_dir>/checkpoints/last``.

    ``auto`` with no checkpoint there means a fresh start (so a preempted job can simply be
    started again with the same command); a named folder that is missing is an error.
    """
    if resume is None:
        return None
    if resume == "auto":
        path = checkpoints_dir(output_dir) / "last"
        return read(path) if path.exists() else None
    return read(Path(resume))


def read(path: Path) -> Checkpoint:
    if not path.exists():
        raise InputError(f"checkpoint {str(path)!r} does not exist")
    missing = [n for n in ("meta.json", "model.pt", "tokenizer.json") if not (path / n).is_file()]
    if missing:
        raise InputError(f"checkpoint {str(path)!r} is incomplete or not a checkpoint: no {', '.join(missing)}")
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        meta["tokenizer"] = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"checkpoint {str(path)!r} is corrupt: {type(exc).__name__}: {exc}") from None
    lacking = {"step", "epoch", "position", "model", "config"} - meta.keys()
    if lacking:
        raise InputError(f"checkpoint {str(path)!r} is corrupt: meta.json lacks {', '.join(sorted(lacking))}")
    if meta.get("format", 0) > FORMAT:
        raise InputError(f"checkpoint {str(path)!r} has format {meta['format']}, newer than this trainer reads")
    return Checkpoint(path, meta)


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


class Writer:
    """Writes a run's checkpoints and keeps ``last`` and ``best`` pointing at complete ones."""

    def __init__(self, output_dir: str | os.PathLike):
        self.root = checkpoints_dir(output_dir)
        self._written: tuple[int, Path] | None = None  # (step, folder) written by this process

    def save(self, step: int, links: tuple[str, ...], engine, trainer_state: dict, meta: dict, tokenizer: dict) -> Path:
        """Write the checkpoint of ``step`` (once per step) and point each of ``links`` at it."""
        if self._written is None or self._written[0] != step:
            self._written = (step, self._write(step, engine, trainer_state, meta, tokenizer))
        if not distributed.is_main():
            return self.root / links[0]
        folder = self._written[1]
        for link in links:
            tmp = self.root / f".{link}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(folder.name)  # relative: the run folder can be moved or copied
            os.replace(tmp, self.root / link)
        self._remove_unlinked()
        return self.root / links[0]

    def _write(self, step: int, engine, trainer_state: dict, meta: dict, tokenizer: dict) -> Path:
        tmp = self.root / f".tmp-step-{step:08d}"
        if distributed.is_main():
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a process killed while writing
            tmp.mkdir()
        distributed.barrier()  # the folder exists before any rank writes into it
        engine.save(tmp, trainer_state)
        distributed.barrier()  # and every rank's part is complete before rank 0 publishes it
        if not distributed.is_main():
            return tmp
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer.json").write_text(json.dumps(tokenizer) + "\n", encoding="utf-8")
        # On disk before the rename makes the folder visible.
        for file in (f for f in tmp.rglob("*") if f.is_file()):
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        # A folder of this step may exist from an earlier process (resumed from an older
        # checkpoint); never overwrite it in place, a link may still point at it.
        folder, n = self.root / f"step-{step:08d}", 1
        while folder.exists():
            folder, n = self.root / f"step-{step:08d}.{n}", n + 1
        os.replace(tmp, folder)
        return folder

    def _remove_unlinked(self) -> None:
        """Delete step folders no link points at, and temporary ones a killed process left."""
        keep = {os.readlink(self.root / link) for link in LINKS if (self.root / link).is_symlink()}
        for folder in [*self.root.glob("step-*"), *self.root.glob(".tmp-step-*")]:
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
