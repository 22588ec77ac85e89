"""Replaying a run's local record into a backend it was not trained with.

The backend's own tracker class does the writing: it is fed the recorded events through its
hooks, in the recorded order, with the recorded steps and values, exactly as a live run would
have fed it (``trackkit_start``, one hook per event, ``trackkit_flush``, ``trackkit_finish``).
Only the wall-clock times are new.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrackkitError
from .plugins import plugin_manager, source_for
from .record import EVENT_HOOKS, hook_call
from .run import STATUSES
from .runinfo import RunInfo
from .runs import load_run

# Backends a run can be replayed into: DESIGN.md fixes the folder each writes in a run's home.
TARGETS = ("tensorboard", "wandb")

@dataclass
class Replayed:
    """What a replay did."""

    folder: Path  # where the backend wrote
    events: int = 0  # events handed to the tracker
    skipped: list[str] = field(default_factory=list)  # why some events were not (one line each)
    backend_ids: dict[str, str] = field(default_factory=dict)  # ids the tracker set (a wandb run id)


def replay(run_dir: str | os.PathLike, target: str) -> Replayed:
    """Feed the run recorded in ``run_dir`` to the ``target`` tracker; it writes into ``run_dir/<target>``.

    wandb runs offline (its project: ``$WANDB_PROJECT`` or the tracker's default). Refuses when
    that folder already holds something: the run was trained with the backend, or replayed
    into it before.
    """
    if target not in TARGETS:
        raise TrackkitError(f"cannot replay into {target!r}; choose one of {', '.join(TARGETS)}")
    run = load_run(run_dir)
    folder = run.dir / target
    if folder.exists() and any(folder.iterdir()):
        raise TrackkitError(
            f"{folder} already exists (trained with {target}, or synced before); remove it to replay again"
        )
    events = run.events()  # streamed: a record can hold millions of events
    first = next(events, None)
    if first is None:
        raise TrackkitError(f"{run.dir} has no recorded metrics to replay (was the jsonl tracker on?)")
    tracker = source_for(target).create({"offline": True})
    pm = plugin_manager()
    pm.register(tracker, name=target)
    info = RunInfo(
        name=run.name, id=run.info["id"], project=run.info.get("project", "trackkit"), dir=run.dir,
        world_size=run.info.get("world_size", 1),
    )
    result = Replayed(folder)
    final: dict[str, Any] = {}
    try:
        pm.hook.trackkit_start(run=info, config=run.config)
        for number, event in enumerate(itertools.chain([first], events), 1):
            if event["event"] == "final":
                final.update(event["metrics"])
            _replay_event(pm, number, event, result)
        pm.hook.trackkit_flush()
    except Exception as exc:
        with contextlib.suppress(Exception):  # let the backend close its files; the first error is the news
            pm.hook.trackkit_finish(status="failed", summary={"status": "failed"})
        if isinstance(exc, TrackkitError):  # the record's own FILE:LINE error
            raise
        raise TrackkitError(f"the {target} tracker failed replaying {run.dir}: {exc}") from exc
    status = run.info.get("status") if run.info.get("status") in STATUSES else "interrupted"
    summary = {
        "status": status, "final": final,
        "trackers": {target: {"state": "ok", "delivered": result.events, "lost": 0}},
    }
    pm.hook.trackkit_finish(status=status, summary=summary)
    result.backend_ids = dict(info.backend_ids)
    return result


def _replay_event(pm, number: int, event: dict[str, Any], result: Replayed) -> None:
    kind = event["event"]
    if kind not in EVENT_HOOKS:
        if kind != "resume":  # a resumed run's record is already continuous
            result.skipped.append(f"event {number}: unknown kind {kind!r}")
        return
    hook, kwargs = hook_call(event)
    if kind == "artifact":
        kwargs["path"] = Path(kwargs["path"])
        if not kwargs["path"].exists():
            result.skipped.append(f"event {number}: artifact {event['name']!r} is gone ({event['path']})")
            return
    getattr(pm.hook, hook)(**kwargs)
    result.events += 1
