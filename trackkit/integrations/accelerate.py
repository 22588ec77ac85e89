"""trackkit as an Accelerate tracker: ``Accelerator(log_with=[TrackkitTracker(...)])``.

    tracker = TrackkitTracker("demo", trackers=["console", "jsonl", "wandb"], output_dir="runs/demo")
    accelerator = Accelerator(log_with=[tracker])
    accelerator.init_trackers("demo", config={"learning_rate": 1e-3})
    accelerator.log({"train/loss": loss, "eval/accuracy": acc}, step=step)
    accelerator.end_training()

``accelerator.log`` hands the values to trackkit, whose trackers run on their own threads: the
call costs what a trackkit log call costs, whatever the backends. Names go to namespaces as
``trackkit.integrations._common.route`` says (``train/``, ``val/``/``eval/``, a ``_step`` or
``_epoch`` suffix; other names to ``train/``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

from ..report import report
from ..run import Run
from ._common import (
    Router,
    Trackers,
    check_output_dir,
    check_trackers,
    handled_exception,
    recorded_run_id,
    start_run,
    status_of,
)


class TrackkitTracker(GeneralTracker):
    """An Accelerate tracker that logs through trackkit, and so through every trackkit tracker and plugin.

    ``trackers`` are trackkit tracker names (``["console", "jsonl", "tensorboard", "wandb"]``, or a
    plugin's); the run is recorded in ``output_dir`` (default ``runs/<run_name>``). ``options``
    are trackkit tracker options (``{"wandb_project": "x", "offline": True}``). ``resume_from_step``
    continues the run recorded in ``output_dir`` (after ``accelerator.load_state``).
    """

    name = "trackkit"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, run_name: str, trackers: Trackers = ("console", "jsonl"),
                 output_dir: str | os.PathLike | None = None, *, project: str = "trackkit",
                 options: Mapping[str, Any] | None = None, resume_from_step: int | None = None,
                 system_metrics: float | None = None, handle_signals: bool = True):
        super().__init__()
        self.run_name = run_name
        self._trackers = check_trackers(trackers)
        folder = Path("runs") / run_name if output_dir is None else output_dir
        self.output_dir = check_output_dir(folder) if self._trackers else Path(folder)
        self._start_kwargs: dict[str, Any] = dict(
            name=run_name, project=project, options=dict(options or {}), resume_from_step=resume_from_step,
            run_id=recorded_run_id(self.output_dir, resume_from_step) if self._trackers else None,
            system_metrics=system_metrics, handle_signals=handle_signals)
        self._config: dict[str, Any] = {}
        self._run: Run | None = None
        self._router = Router("accelerate")
        self._router.last_step = resume_from_step or 0

    @property
    def tracker(self) -> Run:
        """The trackkit Run (started here if nothing started it yet)."""
        return self._run or self._start()

    def start(self) -> None:
        # Accelerate calls this before it hands over the config (store_init_configuration), which
        # trackkit takes when a run starts: the run starts there, or at the first log.
        pass

    def store_init_configuration(self, values: dict) -> None:
        """The hyperparameters: the config every trackkit tracker gets (secrets scrubbed)."""
        if self._run is not None:
            report("accelerate_late_config")
            return
        self._config.update(values)
        self._start()

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        """Log ``values`` at ``step`` (without one: one more than the last step logged, as wandb counts)."""
        run = self._run or self._start()
        self._router.log(run, values, self._router.last_step + 1 if step is None else step)

    def finish(self) -> None:
        """End the run: "success", or "failed"/"interrupted" when called while an exception is handled."""
        if self._run is not None:
            self._run.finish(status_of(handled_exception()))

    def _start(self) -> Run:
        self._run = start_run(self._trackers, self.output_dir, config=self._config, **self._start_kwargs)
        return self._run
