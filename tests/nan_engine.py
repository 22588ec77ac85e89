"""``trackkit-train`` whose training loss turns NaN at one optimizer step: for the tests of --nan-policy.

    python tests/nan_engine.py STEP [trackkit-train options...]

The engine the trainer builds is wrapped so that the loss of every micro-batch of step STEP is
the real loss times NaN: the backward pass, the update, the loss sums and every check after it
run the trainer's own code, as they would for a loss that diverged.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import torch

from reference_trainer import train as train_module
from reference_trainer.cli import main
from reference_trainer.engine import Engine


class NanAtStep:
    """An engine whose training loss at optimizer step ``at`` (counted from this process's start) is NaN."""

    def __init__(self, engine: Engine, at: int):
        self._engine = engine
        self._at = at
        self._steps = 0  # step() and skip_step() calls so far

    def __getattr__(self, name: str) -> Any:  # every other member: the real engine's
        return getattr(self._engine, name)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self._engine.forward(x, y)
        if self._engine.model.training and self._steps + 1 == self._at:  # evaluation stays clean
            loss = loss * math.nan
        return loss

    def step(self) -> torch.Tensor | float | None:
        self._steps += 1
        return self._engine.step()

    def skip_step(self) -> None:
        self._steps += 1
        self._engine.skip_step()


def install(at: int) -> None:
    """Make the trainer wrap every engine it builds from now on."""
    build = train_module.build_engine
    train_module.build_engine = lambda *args, **kwargs: NanAtStep(build(*args, **kwargs), at)


if __name__ == "__main__":
    install(int(sys.argv[1]))
    main(sys.argv[2:], prog_name="trackkit-train")
