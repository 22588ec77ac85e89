"""The DeepSpeed engine: engine.py's ``Engine`` on top of ``deepspeed.initialize``.

ZeRO stage, precision, gradient accumulation and clipping come from the DeepSpeed config
(deepspeed_config.py); the optimizer and learning-rate schedule are the trainer's own (optim.py),
stepped by DeepSpeed. Checkpoints are DeepSpeed's (``save_checkpoint`` / ``load_checkpoint`` on
every rank, the loop's state in ``client_state``) plus a plain ``model.pt`` for sampling.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from . import distributed
from .deepspeed_config import precision_of
from .model import GPT
from .optim import Optimization


def import_deepspeed(device_type: str) -> ModuleType:
    """The ``deepspeed`` module, set up for ``device_type`` ("cpu" or "cuda")."""
    if device_type == "cpu":
        # Otherwise DeepSpeed probes for accelerators and warns on every import that it fell back to the CPU.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.ops

    # DeepSpeed still calls torch.distributed functions that torch 2.13 deprecates: a warning for
    # DeepSpeed's authors, printed twice per process to our users.
    warnings.filterwarnings("ignore", r"`torch\.distributed\.\w+` is deprecated", FutureWarning)
    if device_type == "cpu":
        # As soon as a process group exists DeepSpeed compiles its shared-memory CPU all-reduce (a C++
        # build of 30 s or more, repeated whenever another ninja is first on PATH); only
        # tensor-parallel inference uses it, and training needs no compiler without it.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def init_distributed(device_type: str) -> None:
    """Join the launcher's process group, or make a group of one: DeepSpeed needs one either way."""
    deepspeed = import_deepspeed(device_type)
    distributed.set_single_process_env()
    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo", verbose=False)


class DeepSpeedEngine:
    """engine.py's ``Engine`` on a DeepSpeed engine; in a multi-process run every rank calls each member."""

    name = "deepspeed"

    def __init__(self, model: GPT, ds_config: dict[str, Any], device_type: str, optimization: Optimization):
        deepspeed = import_deepspeed(device_type)
        self.num_parameters = model.num_parameters()  # counted now: ZeRO-3 leaves each rank a slice
        self.zero_stage = ds_config["zero_optimization"]["stage"]
        self._clip = ds_config["gradient_clipping"]
        # At stage 0 in fp32 DeepSpeed clips parameter by parameter and drops the norm; the engine
        # clips instead, as TorchEngine does, where the norm is kept (and the clipping faster).
        self._clips_itself = self.zero_stage == 0 and precision_of(ds_config) == "fp32"
        if self._clips_itself:
            ds_config = {**ds_config, "gradient_clipping": 0.0}
        self.optimizer, scheduler = optimization.build(model, torch.device(device_type))
        self.ds, _, _, _ = deepspeed.initialize(model=model, optimizer=self.optimizer, lr_scheduler=scheduler,
                                                config=ds_config)
        if self.zero_stage == 0 and distributed.world_size() == 1:
            # A world of one has no gradients to average; DeepSpeed would still copy them through a bucket.
            self.ds.enable_backward_allreduce = False
        self.model = self.ds.module
        self.device = self.ds.device

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, loss = self.ds(x.to(self.device), y.to(self.device))
        return loss

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)  # scaled for gradient accumulation by DeepSpeed
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()  # DeepSpeed wants a step() after every micro-batch; this one only counts it

    def step(self) -> torch.Tensor | float | None:
        """The optimizer step, clipping and schedule included; the gradient norm before clipping, if clipping."""
        if self._clip <= 0:
            self.ds.step()
            return None
        if self._clips_itself:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self._clip)
            self.ds.step()
            return norm
        self.ds.step()
        return self.ds.get_global_grad_norm()

    def skip_step(self) -> None:
        # DeepSpeed counts micro-batches in its own step(): an update cannot be left out from outside.
        raise NotImplementedError("--nan-policy skip-step is not available with --deepspeed (config.py refuses it)")

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def save(self, folder: Path, trainer_state: dict[str, Any]) -> None:
        """DeepSpeed's checkpoint in ``folder`` with ``trainer_state`` as its client state, and model.pt."""
        folder = Path(folder)
        self.ds.save_checkpoint(str(folder.parent), tag=folder.name, client_state=trainer_state, save_latest=False)
        weights = self._full_state_dict()
        if distributed.is_main():
            torch.save(weights, folder / "model.pt")

    def load(self, folder: Path) -> dict[str, Any]:
        """Restore what ``save`` wrote; returns the loop's state."""
        folder = Path(folder).resolve()  # checkpoints/last is a link; DeepSpeed takes a folder and a tag
        path, client_state = self.ds.load_checkpoint(str(folder.parent), tag=folder.name)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {folder}")
        return client_state

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights in fp32 and on the CPU, as TorchEngine saves them (rank 0's are complete)."""
        if self.zero_stage < 3:
            return {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}
        import deepspeed

        # ZeRO-3 keeps a slice of each tensor per rank: gather them (a collective), copy, release.
        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            return {k: v.detach().float().cpu().clone() for k, v in self.model.state_dict().items()}
