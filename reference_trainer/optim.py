"""AdamW with weight decay on matrices only, and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn


@dataclass(frozen=True)
class Optimization:
    """AdamW's settings and the schedule's: what an engine needs to build its optimizer and scheduler."""

    learning_rate: float  # the peak, after warmup
    min_lr: float  # the end of the cosine decay
    warmup_steps: int
    decay_steps: int  # the step at which the decay reaches min_lr
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8

    def build(
        self, model: nn.Module, device: torch.device
    ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        optimizer = build_optimizer(model, self.learning_rate, self.weight_decay, device, self.betas, self.eps)
        return optimizer, build_scheduler(optimizer, self.warmup_steps, self.decay_steps,
                                          self.min_lr / self.learning_rate)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices (linear layers, embeddings); leave biases and LayerNorm gains alone.

    Decaying a gain or bias pulls it towards 0, which is not a simpler model, just a worse one.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # the tied embedding appears once
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, learning_rate: float, weight_decay: float, device: torch.device,
    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, weight_decay), lr=learning_rate, betas=betas, eps=eps, fused=device.type == "cuda"
    )


def lr_factor(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """The multiple of the peak learning rate used for optimizer step ``step + 1``.

    Linear warmup over ``warmup_steps`` (large early updates on random weights are harmful), then
    a cosine from 1 down to ``min_ratio`` at ``decay_steps``, flat after that.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = partial(lr_factor, warmup_steps=warmup_steps, decay_steps=decay_steps, min_ratio=min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
