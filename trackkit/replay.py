"""``trackkit sync RUN --to NAME``: deliver what a backend lacks, from the run's local record.

Any tracker, plugins included, is fed the recorded events through its hooks, in order, exactly
as a live run fed it, as a resume of the run at its last step: it continues the backend run
named in run.json (its backend id) and skips every metric at a step that run already holds (the
contract's resume rule, hookspecs.py). So the command can follow any outage, run twice, or run
after a partial catch-up, and never sends a step twice. A replay that fails removes what it
wrote into the run's folder, so that it leaves nothing behind, and can simply be run again.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dispatch import Tracker, plugin_manager_for
from .errors import TrackkitError
from .plugins import source_for
from .reading import read_events
from .record import (
    MASK,
    Artifact,
    from_event,
    metrics_path,
    read_run_json,
    run_json_path,
    scrub,
    write_json_atomic,
)
from .runinfo import RunInfo

FLUSH_EVERY = 1000  # records between flushes: a slow backend gets batches, memory stays flat
LOCAL_RECORD = "jsonl"  # the tracker that writes the record being replayed: it has everything already


@dataclass
class Replayed:
    """What a replay did."""

    target: str
    records: int = 0  # records handed to the tracker (it skipped those its backend held)
    skipped: list[str] = field(default_factory=list)  # why some were not handed over (one line each)
    backend_ids: dict[str, str] = field(default_factory=dict)


def replay(run_dir: str | os.PathLike, target: str, options: Mapping[str, Any] | None = None) -> Replayed:
    """Feed the run recorded in ``run_dir`` to the ``target`` tracker.

    ``options`` are tracker options given now; the run's recorded ones fill in the rest.
    """
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    if info is None:
        raise TrackkitError(f"{run_dir} is not a trackkit run (no trackkit/run.json)")
    if target == LOCAL_RECORD:
        raise TrackkitError(f"the {LOCAL_RECORD} tracker wrote the local record that sync sends from")
    path = metrics_path(run_dir)
    if not path.exists():
        raise TrackkitError(f"{run_dir} has no local record to send from (was the jsonl tracker on?)")
    last_step = max((e.get("step", 0) for e in read_events(path) if isinstance(e.get("step"), int)), default=0)
    given = {k: v for k, v in (options or {}).items() if v is not None and v != () and v != {}}
    recorded = {k: v for k, v in (info.get("options") or {}).items() if v != MASK}  # a masked secret: not a value
    chosen = {**recorded, **given}
    source = source_for(target)
    tracker = Tracker(source.name, plugin_manager_for(source.name, source.create(chosen)))
    run = RunInfo(name=info["name"], id=info["id"], project=info.get("project", "trackkit"), dir=run_dir,
                  resumed_from_step=last_step, world_size=info.get("world_size", 1),
                  backend_ids=dict(info.get("backend_ids") or {}))
    before = set(run_dir.iterdir())
    result = Replayed(source.name)
    try:
        tracker.hook.trackkit_start(run=run, config=_config(run_dir))
        _send(tracker, path, result)
    except Exception as exc:
        _undo(tracker, run_dir, before)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackkitError(f"the {source.name} tracker failed replaying {run_dir}: {reason}") from None
    status = info.get("status") if info.get("status") in ("success", "failed", "interrupted") else "interrupted"
    tracker.hook.trackkit_finish(status=status, summary={"status": status, "final": {}, "artifacts": {},
                                                         "trackers": {}})
    result.backend_ids = dict(run.backend_ids)
    write_json_atomic(run_json_path(run_dir), {**info, "backend_ids": result.backend_ids})
    return result


def _send(tracker: Tracker, path: Path, result: Replayed) -> None:
    for number, event in enumerate(read_events(path), 1):
        record = from_event(event)
        if record is None:
            continue  # a marker, such as where a resumed process began
        if isinstance(record, Artifact) and not record.path.exists():
            result.skipped.append(f"line {number}: artifact {record.name!r} is gone ({record.path})")
            continue
        tracker.deliver(record)
        result.records += 1
        if tracker.flushes and result.records % FLUSH_EVERY == 0:
            tracker.hook.trackkit_flush()
    if tracker.flushes:
        tracker.hook.trackkit_flush()


def _config(run_dir: Path) -> dict[str, Any]:
    import json

    path = run_dir / "trackkit" / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError as exc:
        raise TrackkitError(f"{path} is unreadable: {exc}") from None
    return scrub(config) if isinstance(config, dict) else {}


def _undo(tracker: Tracker, run_dir: Path, before: set[Path]) -> None:
    """Close the tracker and remove what the failed replay added to the run's folder."""
    try:
        tracker.hook.trackkit_finish(status="failed", summary={"status": "failed"})
    except Exception:
        pass  # the first error is the news; closing its files is all that is wanted here
    for path in set(run_dir.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
