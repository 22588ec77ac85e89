"""Several processes, one run: joining the process group, who is rank 0, averaging across ranks.

torchrun and DeepSpeed's launcher start one process per device and tell each its place in
RANK, LOCAL_RANK and WORLD_SIZE. A process started any other way is a world of one, and every
helper here then returns at once.
"""
from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether a launcher (torchrun, deepspeed) started this process as one of a group."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes the run's files and talks to trackers."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """This process's device: with several processes on one machine, GPU number LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def set_single_process_env() -> None:
    """The variables a launcher would set, for a world of one (DeepSpeed needs a process group even then)."""
    if launched():
        return
    with socket.socket() as s:  # a free port: two single-process runs on one machine must not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def initialized() -> bool:
    """Whether this process has joined its process group."""
    return dist.is_initialized()


def init(device: torch.device, timeout: float) -> None:
    """Join the launcher's process group (NCCL on GPUs, gloo on the CPU); nothing to do for a world of one.

    ``timeout`` (seconds, --dist-timeout) bounds every wait for the other processes: joining, and
    each exchange after it.
    """
    if launched() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout))


def lost_contact(exc: BaseException) -> bool:
    """Whether ``exc`` says that another process did not answer: it died, hangs, or never joined.

    torch raises DistError and its kinds (store, network, backend) for these; gloo's own errors
    (a peer that closed its connection, a receive that timed out) come as plain RuntimeErrors.
    """
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and "/gloo/" in str(exc))


def reason(exc: BaseException) -> str:
    """The backend's message in a few words: no source location, no advice paragraph."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h)(:\d+)?\]\s*", "", text)  # gloo's "[.../pair.cc:537] "
    return text.split(" This is typically caused by")[0].rstrip(". ")


def mean(value: torch.Tensor) -> torch.Tensor:
    """``value`` averaged over the ranks (every rank calls it)."""
    if world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def total(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks (every rank calls it)."""
    if world_size() == 1:
        return value
    summed = value.detach().clone()
    dist.all_reduce(summed)
    return summed


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group: a process that exits without it sometimes aborts in gloo's teardown.

    No barrier first: after an error on one rank the others may be inside another collective.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
