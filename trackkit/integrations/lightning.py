"""trackkit as a Lightning logger: ``Trainer(logger=TrackkitLogger(...))``.

    logger = TrackkitLogger(trackers=["console", "jsonl", "wandb"], output_dir="runs/lit")
    trainer = lightning.Trainer(logger=logger, max_epochs=3)
    trainer.fit(model, train_loader, val_loader)

Names go to namespaces as ``trackkit.integrations._common.route`` says: ``train/x`` and ``train_x``
to ``train/``; ``val/x``, ``val_x``, ``eval/x``, ``eval_x`` to ``eval/``; a ``_step`` suffix is
dropped and a ``_epoch`` suffix goes to ``epoch/`` (``self.log("train_loss", ..., on_step=True,
on_epoch=True)`` gives ``train/loss`` and ``epoch/train_loss``); ``<other>/x`` to the namespace
``<other>``; a name without a prefix to ``train/``. Steps are the ones Lightning hands its loggers.
"""
from __future__ import annotations

import os
import secrets
import time
from argparse import Namespace
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

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


class TrackkitLogger(Logger):
    """A Lightning logger that logs through trackkit (rank zero only, as Lightning's loggers do).

    ``output_dir`` (default ``runs/<date>-<time>``) holds the record, ``<output_dir>/trackkit``;
    checkpoints of a ``ModelCheckpoint`` without a ``dirpath`` go to
    ``<output_dir>/<name>/<run id>/checkpoints``, and each one saved is logged as an artifact
    (``kind="model"``; the monitored best also as ``best``) unless ``log_checkpoints=False``.
    The run starts at the first metric, so that the hyperparameters Lightning logs at the start
    of ``fit`` are its config. A logger used again after ``fit`` (``trainer.test``) continues its run.
    """

    def __init__(self, trackers: Trackers = ("console", "jsonl"), output_dir: str | os.PathLike | None = None, *,
                 name: str | None = None, project: str = "trackkit", config: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None, log_checkpoints: bool = True,
                 resume_from_step: int | None = None, system_metrics: float | None = None):
        super().__init__()
        self._trackers = check_trackers(trackers)
        folder = Path("runs", time.strftime("%Y%m%d-%H%M%S")) if output_dir is None else Path(output_dir)
        self._output_dir = check_output_dir(folder) if self._trackers else folder
        recorded = recorded_run_id(self._output_dir, resume_from_step) if self._trackers else None
        self._run_id = recorded or secrets.token_hex(4)
        self._name = name or self._output_dir.resolve().name
        # Lightning handles SIGTERM itself (it stops at the next step): trackkit leaves the signal to it.
        self._start_kwargs: dict[str, Any] = dict(project=project, options=dict(options or {}),
                                                  system_metrics=system_metrics, handle_signals=False)
        self._resume_from_step = resume_from_step
        self._config = dict(config or {})
        self._log_checkpoints = log_checkpoints
        self._run: Run | None = None
        self._started = False  # a run was started: a later one continues it
        self._router = Router("lightning")
        self._router.last_step = resume_from_step or 0
        self._saved: set[tuple[str, int]] = set()  # checkpoint files logged, with their modification time
        self._best: str | None = None

    # -- what Lightning asks a logger ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        """The trackkit run id (chosen before the run starts, so that checkpoint folders can use it)."""
        return self._run_id

    @property
    def save_dir(self) -> str:
        return str(self._output_dir)

    @property
    def root_dir(self) -> str:
        return str(self._output_dir)

    @property
    def log_dir(self) -> str:
        return str(self._output_dir)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The trackkit Run; it starts when first used (Lightning asks for it before handing over hyperparameters)."""
        return _RunHandle(self._ensure_run)

    # -- logging -------------------------------------------------------------------------------------
    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The run's config (secrets scrubbed); what comes after the run started is reported and left out."""
        params = vars(params) if isinstance(params, Namespace) else dict(params)
        if self._run is not None:
            report("lightning_late_config", names=", ".join(map(str, params)))
            return
        self._config.update(params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._trackers:
            return
        run = self._run or self._ensure_run()
        self._router.log(run, metrics, self._router.last_step if step is None else step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """Log each checkpoint file the callback saved (``kind="model"``), and a new monitored best as ``best``."""
        if not self._trackers or not self._log_checkpoints:
            return
        run = self._run or self._ensure_run()
        scores = checkpoint_callback.best_k_models
        monitor = checkpoint_callback.monitor
        for path in dict.fromkeys([*scores, checkpoint_callback.last_model_path]):
            try:
                stamp = Path(path).stat().st_mtime_ns if path else None
            except OSError:  # rotated away already
                continue
            if stamp is None or (path, stamp) in self._saved:
                continue
            self._saved.add((path, stamp))
            run.log_artifact(path, name=Path(path).stem, kind="model", metadata=_score(monitor, scores.get(path)))
        best = checkpoint_callback.best_model_path
        if monitor and best and best != self._best and Path(best).exists():
            self._best = best
            metadata = {**_score(monitor, scores.get(best)), "file": Path(best).name}
            run.log_artifact(best, name="best", kind="model", metadata=metadata)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run: "success"; "failed", or "interrupted" for Ctrl-C and SIGTERM; Lightning's "finished"
        (a SLURM requeue) as "interrupted"."""
        if not self._trackers:
            return
        run = self._run or self._ensure_run()
        if status == "failed":
            exc = handled_exception()  # Lightning finalizes inside its except block, with the exception at hand
            status = status_of(exc) if exc is not None else "failed"
        elif status == "finished":
            status = "interrupted"
        run.finish(status if status in ("success", "failed", "interrupted") else "failed")
        self._run = None

    # -- the run -------------------------------------------------------------------------------------
    def _ensure_run(self) -> Run:
        """The open run: started now, or continued (same id) after an earlier ``finalize``."""
        if self._run is None:
            resume = self._router.last_step if self._started else self._resume_from_step
            self._run = start_run(self._trackers, self._output_dir, config=self._config, name=self._name,
                                  run_id=self._run_id, resume_from_step=resume, **self._start_kwargs)
            self._started = True
        return self._run


class _RunHandle:
    """What ``logger.experiment`` gives: the trackkit Run, started on first use of any of its attributes."""

    def __init__(self, run: Callable[[], Run]):
        self._run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run(), name)


def _score(monitor: str | None, score: Any) -> dict[str, Any]:
    return {"monitor": monitor, "score": float(score)} if monitor and score is not None else {}
