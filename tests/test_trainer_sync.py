"""No device read on a step that does not log: what keeps a GPU from waiting on the CPU, checked on a CPU.

A read of a tensor's value (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``) is
``aten._local_scalar_dense``: on a GPU it makes the CPU wait until the device has caught up. A
``TorchDispatchMode`` on the training thread sees every such read the loop makes, on any
device; tracker threads, which read the logged tensors, are not counted, and neither are
AdamW's own reads of its step counters (CPU scalars, inside ``torch.optim``).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from trainer_util import SMALL_MODEL, events, train, write_corpus

from reference_trainer.train import Trainer

OPTIM = str(Path(torch.optim.__file__).parent)  # torch/optim/
STEPS, LOG_INTERVAL = 40, 10


class ValueReads(TorchDispatchMode):
    """Counts the reads of a tensor's value on this thread while a Trainer's loop runs, by its step then."""

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Trainer | None = None
        self.reads: Counter[int] = Counter()  # progress.step at the read -> reads
        self.where: dict[int, str] = {}  # the first read's caller, to say where it came from

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and self.trainer is not None and not _in_optim():
            step = self.trainer.progress.step
            self.reads[step] += 1
            self.where.setdefault(step, _caller())
        return func(*args, **(kwargs or {}))


def _in_optim() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(OPTIM):
            return True
        frame = frame.f_back
    return False


def _caller() -> str:
    """The innermost frame outside torch: the code that asked for the value."""
    frame = sys._getframe(2)
    while frame is not None and "/torch/" in frame.f_code.co_filename:
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"


@pytest.mark.parametrize("policy", ["warn", "stop"])
def test_no_value_is_read_on_a_step_that_does_not_log(tmp_path, monkeypatch, policy):
    data = write_corpus(tmp_path, chars=6000)  # 84 steps per epoch: no epoch ends, no evaluation in the 40
    reads = ValueReads()
    loop = Trainer.loop

    def watched_loop(self: Trainer, until: int | None = None) -> None:
        reads.trainer = self
        try:
            loop(self, until)
        finally:
            reads.trainer = None

    monkeypatch.setattr(Trainer, "loop", watched_loop)
    out = tmp_path / "run"
    with reads:
        result = train("--data", data, *SMALL_MODEL, "--device", "cpu", "--max-steps", STEPS, "--log-interval",
                       LOG_INTERVAL, "--nan-policy", policy, "--output-dir", out,
                       "--tracker", "console,jsonl,tensorboard,wandb", "--offline")
    assert result.exit_code == 0, result.output
    assert [e["step"] for e in events(out, "train")] == list(range(LOG_INTERVAL, STEPS + 1, LOG_INTERVAL))
    assert "train/grad_norm" in events(out, "train")[0]["metrics"]  # a device tensor, read by the trackers
    # A read is counted at the step done when it happened: a step's log read and the next step's work.
    silent = {step: (n, reads.where[step]) for step, n in reads.reads.items() if step % LOG_INTERVAL}
    assert silent == {}, "value reads on steps that do not log (step: reads, first caller)"
    logging = {step: reads.reads[step] for step in range(LOG_INTERVAL, STEPS + 1, LOG_INTERVAL)}
    assert all(n <= 1 for n in logging.values()), {s: (n, reads.where.get(s)) for s, n in logging.items()}
    assert sum(logging.values()) == STEPS // LOG_INTERVAL  # the check sees the one read each log makes


def test_the_count_sees_a_read(tmp_path):
    """The mode counts what ``.item()`` and ``float()`` do, and leaves out torch.optim's own."""
    reads = ValueReads()

    class Step:
        step = 3

    reads.trainer = type("T", (), {"progress": Step})()
    weights = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([weights])
    with reads:
        torch.ones(()).item()
        float(torch.zeros(()))
        weights.sum().backward()
        optimizer.step()  # reads its step counter
    assert reads.reads == Counter({3: 2})
