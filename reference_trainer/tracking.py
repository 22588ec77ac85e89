"""The user's tracking choices: which trackers, with which options. Recorded, and restored on --resume.

They are saved in every checkpoint's meta.json and given to every tracker in the run's config
(flat keys: ``trackers``, ``wandb_project``, ...). A resumed run tracks with them again; what the
command line gives again wins, and a change is said in one line. A key that looks like a
credential (a word of it ending in key, token, secret or password) is never recorded.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from trackkit.options import Tracking
from trackkit.record import looks_secret

from .config import TrainConfig

DEFAULT_PROJECT = "gpt-pretrain"  # the guide's


@dataclass
class TrackingChoices:
    """Tracker names and the tracker options the user gave (secrets left out)."""

    trackers: list[str]
    options: dict[str, Any]
    system_metrics: float | None = None

    @classmethod
    def of(cls, tracking: Tracking, given: Collection[str] | None = None) -> TrackingChoices:
        """The choices in ``tracking``: its options named in ``given`` (None: every one that is set)."""
        options = {k: v for k, v in tracking.options.items()
                   if v is not None and (given is None or k in given) and not looks_secret(k)}
        # As JSON has them (tuples become lists): what meta.json gives back on resume.
        return cls(list(tracking.trackers), json.loads(json.dumps(options, default=str)), tracking.system_metrics)

    @classmethod
    def saved(cls, meta: dict[str, Any]) -> TrackingChoices | None:
        """The choices a checkpoint's meta.json recorded (None for a checkpoint of an older trainer)."""
        saved = meta.get("tracking")
        return cls(**saved) if isinstance(saved, dict) else None

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    def config(self) -> dict[str, Any]:
        """Flat keys for the config every tracker receives."""
        config: dict[str, Any] = {"trackers": ",".join(self.trackers) or "none", **self.options}
        if self.system_metrics is not None:
            config["system_metrics"] = self.system_metrics
        return config

    def changes_from(self, before: TrackingChoices) -> str | None:
        """``trackers a,b -> a,c; wandb_project 'x' -> 'y'``, or None where nothing changed."""
        changes = []
        if self.trackers != before.trackers:
            changes.append(f"trackers {','.join(before.trackers) or 'none'} -> {','.join(self.trackers) or 'none'}")
        for key in sorted(self.options.keys() | before.options.keys()):
            if self.options.get(key) != before.options.get(key):
                changes.append(f"{key} {before.options.get(key)!r} -> {self.options.get(key)!r}")
        if self.system_metrics != before.system_metrics:
            changes.append(f"system_metrics {before.system_metrics!r} -> {self.system_metrics!r}")
        return "; ".join(changes) or None


def on_resume(
    tracking: Tracking, given: Collection[str] | None, saved: TrackingChoices | None
) -> tuple[Tracking, TrackingChoices, str | None]:
    """What a run tracks with: the choices given, completed from those the checkpoint saved.

    ``given`` names what the user gave: ``trackers`` (--tracker or $TRACKKIT_TRACKERS),
    ``use_wandb``, ``system_metrics`` and tracker options; None: all of it (a run started from
    Python). Returns the Tracking to start, the choices to record, and the change in words.
    """
    chosen = TrackingChoices.of(tracking, given)
    if saved is None:
        return tracking, chosen, None
    given = set(chosen.options) | {"trackers", "system_metrics"} if given is None else set(given)
    trackers = chosen.trackers if "trackers" in given else [
        *saved.trackers, *(["wandb"] if "use_wandb" in given and "wandb" not in saved.trackers else [])]
    merged = TrackingChoices(
        trackers, {**saved.options, **chosen.options},
        chosen.system_metrics if "system_metrics" in given else saved.system_metrics)
    restored = Tracking(merged.trackers, {**tracking.options, **merged.options}, merged.system_metrics)
    change = merged.changes_from(saved)
    return restored, merged, change


def run_name(cfg: TrainConfig, tracking: Tracking, recorded: str | None) -> str:
    """The run's name in every backend: the one recorded (a resumed run keeps it), else --wandb-run-name
    or $WANDB_RUN_NAME, else the guide's ``model-<size>-lr-<lr>-<YYYYmmdd_HHMMSS>``."""
    given = recorded or tracking.options.get("wandb_run_name") or os.environ.get("WANDB_RUN_NAME")
    if given:
        return given
    size = f"{cfg.n_layer}layer" if cfg.n_layer is not None else cfg.model
    return f"model-{size}-lr-{compact(cfg.learning_rate)}-{time.strftime('%Y%m%d_%H%M%S')}"


def compact(number: float) -> str:
    """A learning rate as people write it: ``1e-3``, ``3e-4``, ``2.5e-4``."""
    mantissa, exponent = f"{number:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def project_of(tracking: Tracking) -> str:
    """The run's project, one for every backend: the wandb project's."""
    return tracking.options.get("wandb_project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
