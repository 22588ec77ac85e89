"""Training from Python with the guide's ``PretrainConfig``.

    from reference_trainer import PretrainConfig, pretrain

    final = pretrain(PretrainConfig(output_dir="outputs", batch_size=8, learning_rate=1e-4, num_epochs=10,
                                    wandb_project="my-gpt-project", wandb_run_name="experiment-1"))

Every field of ``TrainConfig`` (one per ``trackkit-train`` option) plus the guide's tracking
fields; the same checks, the same run as ``trackkit-train --use_wandb --wandb_project ...``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from trackkit.options import Tracking

from .config import TrainConfig, option
from .tracking import DEFAULT_PROJECT
from .train import train


@dataclass
class PretrainConfig(TrainConfig):
    """TrainConfig with the guide's tracking fields, and the trackers besides wandb."""

    use_wandb: bool = option(True, "Tracking", "Track with wandb too (offline where no W&B key is configured).")
    wandb_project: str = option(DEFAULT_PROJECT, "Tracking", "W&B project (the run's project in every backend).")
    wandb_entity: str | None = option(None, "Tracking", "W&B team or user.", default_text="your default entity")
    wandb_run_name: str | None = option(None, "Tracking", "The run's name in every backend.",
                                        default_text="model-<size>-lr-<lr>-<YYYYmmdd_HHMMSS>")
    trackers: str = option("console,jsonl", "Tracking", "Trackers besides wandb, comma-separated; 'none' for none.")
    offline: bool | None = option(None, "Tracking", "Keep wandb offline.", default_text="$WANDB_MODE")

    def train_config(self) -> TrainConfig:
        """The training settings alone: what checkpoints record, as for ``trackkit-train``."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})

    def tracking(self) -> Tracking:
        """The trackers and their options, as ``trackkit-train``'s tracking options would give them."""
        names = [n.strip() for n in self.trackers.split(",") if n.strip() and n.strip() != "none"]
        if self.use_wandb and "wandb" not in names:
            names.append("wandb")
        options = {name: getattr(self, name) for name in ("wandb_project", "wandb_entity", "wandb_run_name",
                                                           "offline")}
        return Tracking(names, {k: v for k, v in options.items() if v is not None})


def pretrain(config: PretrainConfig) -> dict[str, Any]:
    """Train with ``config`` as ``trackkit-train`` would; returns the final/ metrics (best_perplexity, ...).

    Bad input raises ``reference_trainer.errors.InputError`` before anything is written.
    """
    config.validate()
    return train(config.train_config(), config.tracking())
