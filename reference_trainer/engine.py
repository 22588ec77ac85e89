"""Engines: what runs the model's math, so that the training loop does not care how.

The loop talks to an ``Engine`` (the Protocol below): ``TorchEngine`` here is plain PyTorch,
``DeepSpeedEngine`` (deepspeed_engine.py) is DeepSpeed's. Every process of a multi-process run
calls each member.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint as ckpt
from . import distributed
from .errors import InputError
from .model import GPT
from .optim import Optimization


class Engine(Protocol):
    """What the training loop needs of an engine (mypy checks that both engines provide it)."""

    name: str  # "torch" or "deepspeed": recorded with each checkpoint, which only that engine can resume
    model: GPT  # the bare model (evaluation mode, sampling)
    device: torch.device
    num_parameters: int

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss of one micro-batch (CPU tensors in; the engine moves them)."""

    def backward(self, loss: torch.Tensor) -> None:
        """Once per micro-batch; scaled for gradient accumulation."""

    def step(self) -> torch.Tensor | float | None:
        """Once per optimizer step: clip, update, advance the schedule; the gradient norm if clipping."""

    def skip_step(self) -> None:
        """Instead of ``step``, where --nan-policy skip-step leaves the update out."""

    @property
    def learning_rate(self) -> float:
        """The learning rate the next ``step`` uses."""

    def save(self, folder: Path, trainer_state: dict[str, Any]) -> None:
        """The model, the optimizer, the schedule and ``trainer_state`` (the loop's) into ``folder``."""

    def load(self, folder: Path) -> dict[str, Any]:
        """Restore what ``save`` wrote; returns ``trainer_state``."""


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA if present, else Apple's MPS, else the CPU; otherwise the device named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} asked for, but this torch sees no CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name} asked for, but MPS is not available here")
    return device


class TorchEngine:
    """Plain PyTorch: AdamW, LambdaLR, bf16 autocast on CUDA, optional torch.compile; under torchrun, DDP."""

    name = "torch"

    def __init__(
        self, model: GPT, device: torch.device, optimization: Optimization, *, grad_clip: float, grad_accum: int,
        compile: bool = False,
    ):
        self.device = device
        self.model = model.to(device)
        self.num_parameters = model.num_parameters()
        self.optimizer, self.scheduler = optimization.build(model, device)
        self.grad_clip = grad_clip
        self.grad_accum = grad_accum
        # The wrapped module shares its parameters with self.model; checkpoints use self.model
        # so that their keys do not depend on whether --compile or DDP was used. The model has no
        # buffers, so DDP need not broadcast them (a collective in every forward, evaluation's too).
        self._ddp = DistributedDataParallel(model, broadcast_buffers=False) if distributed.world_size() > 1 else None
        module = self._ddp or model
        self._forward = torch.compile(module) if compile else module
        self._micro_batches = 0  # backward() calls so far: the next forward is a step's last when it completes one
        # bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling.
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self._autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
        )
        # Pinned host memory lets the copy to the GPU run asynchronously (no sync per batch).
        self._pin = device.type == "cuda"

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self._pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # DDP averages gradients across processes in the backward of a forward run outside
        # no_sync(); only a step's last micro-batch needs that.
        last = (self._micro_batches + 1) % self.grad_accum == 0
        sync = contextlib.nullcontext() if self._ddp is None or last else self._ddp.no_sync()
        with sync, self._autocast():
            _, loss = self._forward(self._to_device(x), self._to_device(y))
        return loss

    def backward(self, loss: torch.Tensor) -> None:
        # Gradients add up over micro-batches; dividing makes their sum the mean over the step.
        (loss / self.grad_accum).backward()
        self._micro_batches += 1

    def step(self) -> torch.Tensor | None:
        """Update the weights; returns the gradient norm before clipping (a device tensor) if clipping."""
        norm = None
        if self.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def skip_step(self) -> None:
        """Leave this step's update out (--nan-policy skip-step): weights and optimizer state stay as
        they are, the gradients go, and the learning-rate schedule moves on with the step count."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def save(self, folder: Path, trainer_state: dict[str, Any]) -> None:
        """model.pt, optimizer.pt (with the scheduler) and trainer.pt, by rank 0: DDP keeps every rank's copy equal."""
        if not distributed.is_main():
            return
        torch.save(self.model.state_dict(), folder / "model.pt")
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   folder / "optimizer.pt")
        torch.save(trainer_state, folder / ckpt.TRAINER_STATE)

    def load(self, folder: Path) -> dict[str, Any]:
        """Restore what ``save`` wrote; returns the loop's state."""
        trainer_state = ckpt.load_trainer_state(folder, self.device)
        self.model.load_state_dict(torch.load(folder / "model.pt", map_location=self.device, weights_only=True))
        state = torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return trainer_state
