"""``trackkit-train`` started by a launcher, watched: what each process changes on disk, and a fault on one rank.

    torchrun ... tests/rank_probe.py [trackkit-train options...]

PROBE_WRITES=DIR: every process appends, to DIR/rank-<RANK>-<pid>.jsonl, each change it makes
through Python under PROBE_ROOT (a file opened for writing, a folder made, a rename, a link, a
removal) and each program it starts. It sees what Python does (the trainer's checkpoint index and
links, trackkit's record, TensorBoard's files); tensors written by torch's C++ writer do not show.

PROBE_FAULT=RANK:ACTION@STEP: the process of global rank RANK kills itself (``kill``, as kill -9
or the OOM killer would) or freezes (``stop``, as a hung node would) as its optimizer step STEP
begins, in the launcher's first attempt only (TORCHELASTIC_RESTART_COUNT 0), so that an elastic
restart then runs clean. Like nan_engine.py, it wraps the engine the trainer builds: no hook in
the trainer itself.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import torch

from reference_trainer import train as train_module
from reference_trainer.cli import main

# audit event -> the positions of its path arguments
PATH_EVENTS = {"os.mkdir": (0,), "os.rename": (0, 1), "os.symlink": (1,), "os.remove": (0,), "os.rmdir": (0,),
               "shutil.rmtree": (0,), "os.truncate": (0,), "os.link": (1,), "shutil.copyfile": (1,)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _paths(event: str, args: tuple) -> list[str]:
    """The paths an audit event changes, absolute; none for a read."""
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
        positions = (0,) if writes else ()
    else:
        positions = PATH_EVENTS.get(event, ())
    found = [args[i] for i in positions if isinstance(args[i], (str, bytes, os.PathLike))]
    return [os.path.abspath(os.fsdecode(p)) for p in found]


def watch_writes(folder: str, root: str) -> None:
    """Record this process's changes under ``root`` (and the programs it starts) in ``folder``."""
    rank = os.environ.get("RANK", "?")
    fd = os.open(os.path.join(folder, f"rank-{rank}-{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    root = os.path.abspath(root) + os.sep
    busy = False

    def hook(event: str, args: tuple) -> None:
        nonlocal busy
        if busy or (event not in PATH_EVENTS and event not in ("open", "subprocess.Popen")):
            return
        busy = True
        try:
            if event == "subprocess.Popen":
                argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
                record: dict[str, Any] = {"event": event, "command": " ".join(map(os.fsdecode, argv))}
            else:
                paths = [p for p in _paths(event, args) if (p + os.sep).startswith(root)]
                record = {"event": event, "paths": paths} if paths else {}
            if record:
                os.write(fd, (json.dumps({"rank": int(rank), **record}) + "\n").encode())
        finally:
            busy = False

    sys.addaudithook(hook)


class FaultAt:
    """The engine the trainer built; ``action`` happens to this process as its optimizer step ``at`` begins."""

    def __init__(self, engine: Any, action: str, at: int):
        self._engine, self._action, self._at = engine, action, at
        self._steps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._engine.model.training and self._steps + 1 == self._at:
            os.kill(os.getpid(), signal.SIGKILL if self._action == "kill" else signal.SIGSTOP)
        return self._engine.forward(x, y)

    def step(self) -> Any:
        self._steps += 1
        return self._engine.step()


def install_fault(spec: str) -> None:
    """PROBE_FAULT's ``RANK:ACTION@STEP``, for this process if it is that rank in a first attempt."""
    rank, rest = spec.split(":")
    action, step = rest.split("@")
    if os.environ.get("RANK") != rank or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    build = train_module.build_engine
    train_module.build_engine = lambda *args, **kwargs: FaultAt(build(*args, **kwargs), action, int(step))


if __name__ == "__main__":
    if os.environ.get("PROBE_WRITES"):
        watch_writes(os.environ["PROBE_WRITES"], os.environ["PROBE_ROOT"])
    if os.environ.get("PROBE_FAULT"):
        install_fault(os.environ["PROBE_FAULT"])
    main(sys.argv[1:], prog_name="trackkit-train")
