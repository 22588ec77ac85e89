"""Reading back what the integrations' runs left in each backend: the local record, TensorBoard, wandb."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from trackkit.record import read_run_json
from trackkit.wandb_files import is_step_axis, run_files

TRACKERS = ["console", "jsonl", "tensorboard", "wandb"]


def events(out: Path) -> list[dict]:
    """The local record's events, read with json."""
    with open(out / "trackkit" / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def record_steps(out: Path) -> dict[str, list[int]]:
    """Each metric of the local record and the steps it was logged at, in order."""
    steps = defaultdict(list)
    for event in events(out):
        for key in event.get("metrics", {}):
            steps[key].append(event["step"])
    return dict(steps)


def record_values(out: Path) -> dict[str, list[float]]:
    values = defaultdict(list)
    for event in events(out):
        for key, value in event.get("metrics", {}).items():
            values[key].append(value)
    return dict(values)


def tensorboard_steps(out: Path) -> dict[str, list[int]]:
    """Each scalar tag of the run's TensorBoard folder and its steps, read with TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_steps(out: Path) -> tuple[dict[str, list[int]], dict]:
    """Each metric in the wandb run's history (every local part, oldest first) at its namespace's step axis,
    and the run's summary."""
    parts = run_files(out / "wandb", read_run_json(out)["backend_ids"]["wandb"])
    steps, summary = defaultdict(list), {}
    for part in parts:
        summary.update(part.summary)
        for row in part.history:
            for key in row:
                if not key.startswith("_") and not is_step_axis(key):
                    steps[key].append(row[key.split("/")[0] + "/step"])
    return dict(steps), summary


def assert_every_backend_holds(out: Path, expected: dict[str, list[int]]) -> None:
    """The record, TensorBoard and wandb hold each metric of ``expected`` at exactly those steps
    (final/ metrics: in wandb's summary)."""
    recorded = record_steps(out)
    board = tensorboard_steps(out)
    history, summary = wandb_steps(out)
    values = record_values(out)
    for key, steps in expected.items():
        assert recorded.get(key) == steps, (key, recorded.get(key))
        assert board.get(key) == steps, (key, board.get(key))
        if key.startswith("final/"):
            assert summary[key] == values[key][-1], key
        else:
            assert history.get(key) == steps, (key, history.get(key))


def run_json(out: Path) -> dict:
    return read_run_json(out)
