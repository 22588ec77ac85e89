"""The tracker contract: every hook a tracker may implement.

A tracker is a class registered in the ``trackkit.trackers`` entry-point group. Its instances
implement any subset of the hooks below, each marked with ``@trackkit.hookimpl``; a hook may
accept fewer arguments than the spec names (pluggy passes only those it asks for).

What the layer guarantees to every tracker:

- Hooks are called on the tracker's own thread, never the training thread, in the order the
  training loop logged them. ``trackkit_start`` comes first and ``trackkit_finish`` last.
- Metric values are plain Python floats or ints (tensors are converted before the hook is
  called); NaN and inf are passed through as they are.
- An exception in a hook is reported once and the run goes on; a tracker that keeps failing
  is switched off. Other trackers never see it.
- Only rank 0 of a distributed run calls trackers.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy

from .runinfo import RunInfo

hookspec = pluggy.HookspecMarker("trackkit")
hookimpl = pluggy.HookimplMarker("trackkit")


@hookspec
def trackkit_start(run: RunInfo, config: Mapping[str, Any]) -> None:
    """The run starts (or resumes: ``run.resumed_from_step`` is then the checkpoint's step).

    ``config`` is the flat dict of hyperparameters. A tracker that keeps a backend id (a wandb
    run id, say) stores it in ``run.backend_ids[<name>]``; it is saved in run.json and handed
    back on resume.
    """


@hookspec
def trackkit_log_train(metrics: Mapping[str, float], step: int) -> None:
    """A logged training step: keys ``train/...``, ``step`` is the global optimizer step."""


@hookspec
def trackkit_log_eval(metrics: Mapping[str, float], step: int) -> None:
    """An evaluation: keys ``eval/...`` at global step ``step``."""


@hookspec
def trackkit_log_epoch(metrics: Mapping[str, float], epoch: int, step: int) -> None:
    """The end of an epoch (``epoch`` counts from 1): keys ``epoch/...``."""


@hookspec
def trackkit_log_final(metrics: Mapping[str, float]) -> None:
    """Once, at the end of training: keys ``final/...`` for the run's summary."""


@hookspec
def trackkit_log_metrics(namespace: str, metrics: Mapping[str, float], step: int) -> None:
    """Any other namespace (``system``, or one a user made up): keys ``<namespace>/...``."""


@hookspec
def trackkit_log_artifact(path: Path, name: str, kind: str, metadata: Mapping[str, Any]) -> None:
    """A file or folder worth keeping, such as the best checkpoint (``kind="model"``)."""


@hookspec
def trackkit_flush() -> None:
    """Push buffered records to storage. Called after each round of records (about once a
    second) and when the loop calls ``run.flush()``: a tracker need not time its own flushes."""


@hookspec
def trackkit_finish(status: str, summary: Mapping[str, Any]) -> None:
    """The run ends. ``status`` is "success", "failed" or "interrupted".

    ``summary`` holds the final/ metrics, the best values seen, and a ``trackers`` entry with
    what each tracker delivered and lost.
    """

