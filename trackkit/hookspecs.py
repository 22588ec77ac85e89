"""The tracker contract (v1): every hook a tracker may implement, and what a tracker class declares.

A tracker is a class registered in the ``trackkit.trackers`` entry-point group (or given as
``package.module:Class``). Its instances implement any subset of the hooks below, each marked
``@trackkit.hookimpl``. A hook may take fewer arguments than its spec (pluggy passes only those
it names), so a tracker written for an older spec keeps working; an argument name that is not in
the spec makes ``trackkit.start`` fail with the valid names.

The smallest complete tracker implements ``trackkit_start``, ``trackkit_log_metrics`` (the
catch-all: it receives every namespace whose own hook the tracker does not implement) and
``trackkit_finish``; ``trackkit_flush`` where the backend is slow (see below).

**The class may declare** (all optional):

- ``options``: a list of ``click.Option``. They appear in the ``--help`` of every command with
  trackkit's tracker options, in both spellings (``--csv-dir`` and ``--csv_dir``); the value
  reaches the constructor parameter of the option's name. Prefix names with the tracker's name:
  two installed trackers declaring one option name is an error naming both.
- ``requires``: names of the backend packages (``("mlflow",)``). The layer imports them on the
  thread that starts the run, and refuses the tracker with an install hint when one is missing.
- constructor parameters: one per option, with its default (``trackkit.start`` callers pass
  options as a dict and never run click), plus any of the layer's own: ``offline: bool``
  (``--offline`` or ``TRACKKIT_OFFLINE=1``: keep off the network) and ``backend_timeout: float``
  (``--backend-timeout``: the longest one backend call may block; configure the client's own
  timeouts and retries from it, so that a backend that is down fails within seconds).

**Threads.** ``__init__`` runs on the thread that calls ``trackkit.start``; every hook,
``trackkit_start`` included, runs on the tracker's own thread, one hook at a time, in the order
the loop logged. So import lazily loaded backend submodules in ``__init__``, and open
thread-bound handles (an sqlite connection) in ``trackkit_start``.

**What the layer guarantees.** Metric values are plain ``float`` or ``int`` with namespaced keys
(``train/loss``); NaN and inf pass through. ``step`` is the global optimizer step in every
namespace; ``timestamp`` is the Unix time of the log call on the caller's thread (record it,
not the time your thread got to the record); ``seq`` numbers the run's records, increasing across
resumes (what the local record is indexed by). Only rank 0 of a distributed run has trackers.

**Failures and catch-up.** A hook that raises did not take its record; a ``trackkit_flush`` that
raises still holds what it held. After either, the layer keeps the tracker's records (from the
local record, or a bounded buffer), probes it again with a growing backoff by calling
``trackkit_flush`` and then the hooks of the records it missed, in order, while training goes
on. So: take a record only when it is safe with you, and keep your buffer when a send fails.
A record counts as delivered once its hook returned and, for a tracker with ``trackkit_flush``,
a flush after it returned too.

**Resume.** When ``run.resumed_from_step`` is set, the backend may hold records of an earlier
process: drop what it holds after that step where the backend can, and skip every metric at a
step it already holds (``trackkit sync RUN --to NAME`` relies on this to send only what a backend
lacks). A backend id that must survive goes into ``run.backend_ids[<name>]`` in
``trackkit_start``; the layer keeps it in run.json and hands it back.
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
    """The run starts, or resumes (``run.resumed_from_step`` is then the checkpoint's step).

    ``config`` holds the hyperparameters, secrets masked at every depth.
    """


@hookspec
def trackkit_log_train(metrics: Mapping[str, float], step: int, timestamp: float, seq: int) -> None:
    """A logged training step: keys ``train/...``."""


@hookspec
def trackkit_log_eval(metrics: Mapping[str, float], step: int, timestamp: float, seq: int) -> None:
    """An evaluation: keys ``eval/...``."""


@hookspec
def trackkit_log_epoch(metrics: Mapping[str, float], epoch: int, step: int, timestamp: float, seq: int) -> None:
    """The end of an epoch (``epoch`` counts from 1): keys ``epoch/...``, at the step it ended at."""


@hookspec
def trackkit_log_final(metrics: Mapping[str, float], step: int, timestamp: float, seq: int) -> None:
    """Once, at the end of training: keys ``final/...``; ``step`` is the last training step logged."""


@hookspec
def trackkit_log_metrics(
    namespace: str, metrics: Mapping[str, float], step: int, timestamp: float, seq: int
) -> None:
    """Any other namespace (``system``, or one a user made up): keys ``<namespace>/...``.

    Also the catch-all: a tracker that implements this hook and not a namespace's own one
    receives that namespace here (``namespace`` is then "train", "eval", "epoch" or "final").
    """


@hookspec
def trackkit_log_artifact(
    path: Path, name: str, kind: str, metadata: Mapping[str, Any], step: int, timestamp: float, seq: int
) -> None:
    """A file or folder worth keeping, such as the best checkpoint (``kind="model"``).

    ``path`` can be read until the hook returns, even where the loop has deleted its original
    since (the layer keeps a hard-linked copy while a tracker still has the record).
    """


@hookspec
def trackkit_flush() -> None:
    """Send or write what the log hooks gathered. Called after each round of records (about once
    a second), on ``run.flush()`` and before ``trackkit_finish``; a slow backend should gather in
    its log hooks and send here, in as few requests as it allows."""


@hookspec
def trackkit_finish(status: str, summary: Mapping[str, Any]) -> None:
    """The run ends, also after a failed start: close only what you opened.

    ``status`` is "success", "failed" or "interrupted". ``summary`` holds ``final`` (the final/
    metrics), ``artifacts`` (the last artifact logged under each name, with its path, kind, step
    and metadata: where the best checkpoint is) and ``trackers`` (what each delivered and lost).
    """
