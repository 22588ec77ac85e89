"""The on-disk layout of a run's local record, and reading it back.

    <output_dir>/trackkit/run.json       identity, trackers, backend ids, status
    <output_dir>/trackkit/config.json    hyperparameters, secrets scrubbed
    <output_dir>/trackkit/metrics.jsonl  one JSON object per logged event
    <output_dir>/trackkit/summary.json   written when the run finishes
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import TrackkitError

RUN_FORMAT = 1
SECRET_MARKERS = ("key", "token", "secret", "password")


def scrub(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with the value of every key that looks like a credential masked."""
    return {k: "***" if _looks_secret(k) else v for k, v in config.items()}


def _looks_secret(key: str) -> bool:
    # A word of the key ends with a marker: wandb_api_key, HF_TOKEN, apikey, secret_sauce. Not
    # every key containing one: tokenizer, train_tokens and keep_last are hyperparameters.
    return any(word.endswith(SECRET_MARKERS) for word in re.split(r"[^a-z0-9]+", key.lower()))


def record_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "trackkit"


def run_json_path(output_dir: str | os.PathLike) -> Path:
    return record_dir(output_dir) / "run.json"


def read_run_json(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's identity, or None where no run was recorded."""
    path = run_json_path(output_dir)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrackkitError(f"{path} is unreadable: {exc}") from None
    if not isinstance(record, dict) or "id" not in record:
        raise TrackkitError(f"{path} is not a trackkit run record")
    if record.get("format", 0) > RUN_FORMAT:
        raise TrackkitError(
            f"{path} has format {record['format']}, newer than this trackkit reads ({RUN_FORMAT}); upgrade trackkit"
        )
    return record


# A recorded event's kind -> (the hook that logged it, the event's fields that were its arguments)
EVENT_HOOKS = {
    "train": ("trackkit_log_train", ("metrics", "step")),
    "eval": ("trackkit_log_eval", ("metrics", "step")),
    "epoch": ("trackkit_log_epoch", ("metrics", "epoch", "step")),
    "final": ("trackkit_log_final", ("metrics",)),
    "metrics": ("trackkit_log_metrics", ("namespace", "metrics", "step")),
    "artifact": ("trackkit_log_artifact", ("path", "name", "kind", "metadata")),
}


def hook_call(event: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The hook and keyword arguments that logged a recorded event (of a kind in EVENT_HOOKS)."""
    hook, fields = EVENT_HOOKS[event["event"]]
    return hook, {name: event[name] for name in fields}


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` whole, so that a reader (or a kill -9) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
