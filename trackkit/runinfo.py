"""RunInfo: who the run is, as every tracker sees it in ``trackkit_start``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunInfo:
    name: str
    id: str
    project: str
    dir: Path
    resumed_from_step: int | None = None
    rank: int = 0
    world_size: int = 1
    # Backend ids a tracker wants back on resume (e.g. {"wandb": "abc123"}); saved in run.json.
    backend_ids: dict[str, str] = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return self.resumed_from_step is not None
