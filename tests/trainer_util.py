"""Shared by the tests of the reference trainer: a small real corpus, a small model, the CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from click.testing import CliRunner, Result

from reference_trainer.cli import main

# Models this small gain nothing from a second thread, and on a shared machine threads that wait
# for a busy core make every step slow.
torch.set_num_threads(1)

# A model that trains a step in milliseconds on a CPU; real text, real gradients.
SMALL_MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
               "--eval-batches", "4", "--warmup-steps", "5"]


def english(chars: int) -> str:
    """The start of the built-in corpus: real English prose."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))[:chars]


def write_corpus(folder: Path, chars: int = 6000, name: str = "corpus.txt") -> Path:
    path = folder / name
    path.write_text(english(chars), encoding="utf-8")
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a trainer started as a process of its own: this one's, less wandb's service token.

    wandb records in WANDB_SERVICE, in the environment of the process that started its service
    process, how to reach it (tests that train in this process with wandb start one). A child
    that inherited it would hand its runs to this process's service instead of starting its own,
    which neither a kill -9 of the child nor its exit would then end.
    """
    return {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, **extra}


def train(*args: str) -> Result:
    """``trackkit-train ARGS`` in this process; the result has exit_code and output."""
    return CliRunner().invoke(main, [str(a) for a in args])


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    lines = (Path(run_dir) / "trackkit" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    found = [json.loads(line) for line in lines]
    return [e for e in found if kind is None or e["event"] == kind]
