"""trackkit under the Hugging Face ``Trainer``: ``Trainer(..., callbacks=[TrackkitCallback(...)])``.

    args = TrainingArguments(output_dir="runs/hf", report_to="none", logging_steps=10)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[TrackkitCallback(trackers=["console", "jsonl", "wandb"])])
    trainer.train()

What the Trainer logs goes to trackkit's namespaces at ``state.global_step``: ``loss``,
``learning_rate``, ``grad_norm`` (and the rest of a training log) to ``train/``; ``eval_*`` to
``eval/`` (prefix dropped); any other ``<p>_*`` logged with a ``<p>_runtime`` (``trainer.predict``'s
``test_*``) to ``<p>/``; the summary of ``train()`` (``train_runtime``, ``train_loss``, ...) to
``final/``; at each epoch's end ``epoch/train_loss`` (the mean of the training losses logged in it),
``epoch/steps`` and ``epoch/val_*`` from an evaluation at that step. ``TrainingArguments`` (and the
model's config, as ``model_config``) are the run's config, secrets scrubbed.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..namespaces import check_custom
from ..report import report
from ..run import Run
from ._common import Trackers, check_output_dir, check_trackers, is_number, start_run, status_of

_SUMMARY_KEY = "train_runtime"  # only the summary of train() has it
_SPEED_SUFFIXES = ("_runtime", "_per_second")  # an evaluation's timings: not what epoch/ compares


class TrackkitCallback(TrainerCallback):
    """Track a Hugging Face Trainer with trackkit (only on the main process, ``state.is_world_process_zero``).

    ``output_dir`` defaults to the Trainer's (``TrainingArguments.output_dir``); the record is
    ``<output_dir>/trackkit``. Resuming with ``trainer.train(resume_from_checkpoint=...)``
    continues the run recorded there: same run id, nothing after the checkpoint's step kept twice.
    The run ends "success" with training; "failed" or "interrupted" when an exception, Ctrl-C or
    SIGTERM ends the process. Where exceptions are caught (a notebook), use ``with callback:``
    around ``trainer.train()`` so that the run ends with their status at once.
    """

    def __init__(self, trackers: Trackers = ("console", "jsonl"), output_dir: str | os.PathLike | None = None, *,
                 name: str | None = None, project: str = "trackkit", config: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None, system_metrics: float | None = None):
        self._trackers = check_trackers(trackers)
        self._output_dir = check_output_dir(output_dir) if output_dir is not None and self._trackers else output_dir
        self._start_kwargs: dict[str, Any] = dict(name=name, project=project, options=dict(options or {}),
                                                  system_metrics=system_metrics)
        self._config = dict(config or {})
        self.run: Run | None = None
        self._epoch = _Epoch()
        self._dropped: set[str] = set()

    # -- the Trainer's events ---------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not self._trackers:
            return
        if self.run is not None and self.run.status is None:  # an earlier train() raised and was caught
            report("hf_unfinished")
            self.run.finish("failed")
        folder = Path(self._output_dir) if self._output_dir is not None else check_output_dir(args.output_dir or ".")
        resume = state.global_step or None  # a Trainer starts at step 0 unless it resumed from a checkpoint
        self.run = start_run(self._trackers, folder, config=self._run_config(args, model), resume_from_step=resume,
                             **self._start_kwargs)
        self._epoch = _Epoch(start_step=state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if self.run is None or self.run.status is not None or not logs:
            return
        step = state.global_step
        if self._epoch.ended_at is not None and step > self._epoch.ended_at:
            self._log_epoch()
        groups = self._groups(logs)
        if _SUMMARY_KEY in logs:
            self._log_epoch()
            self.run.log_final(groups.pop("train"), step)
        for ns, metrics in groups.items():
            if ns == "train":
                self.run.log_train(metrics, step)
                self._epoch.add_loss(metrics.get("loss"), step)
            elif ns == "eval":
                self.run.log_eval(metrics, step)
                self._epoch.add_eval(metrics, step)
            else:
                self.run.log_metrics(ns, metrics, step)
        if control.should_save and not control.should_evaluate:
            self.run.flush()  # a checkpoint follows: have everything up to its step in the record first

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.run is not None and self.run.status is None and control.should_save:
            self.run.flush()

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self.run is not None and self.run.status is None:
            self._log_epoch()
            self._epoch = _Epoch(start_step=state.global_step)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        # Logged once the evaluation at this step (if any) has come in: it follows this event.
        if self.run is not None and self.run.status is None:
            # state.epoch is the progress (1.0 at the first epoch's end, 1.4 when max_steps stops in the second)
            self._epoch.end(max(1, math.ceil((state.epoch or 0) - 1e-6)), state.global_step)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.finish("success")

    # -- ending the run ---------------------------------------------------------------------------
    def finish(self, status: str = "success") -> None:
        """End the run now with ``status`` ("success", "failed" or "interrupted"); nothing if none is open."""
        if self.run is not None and self.run.status is None:
            if status == "success":
                self._log_epoch()
            self.run.finish(status)

    def __enter__(self) -> TrackkitCallback:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.finish(status_of(exc))

    # -- helpers ----------------------------------------------------------------------------------
    def _run_config(self, args: TrainingArguments, model: Any) -> dict[str, Any]:
        config: dict[str, Any] = args.to_dict()
        to_dict = getattr(getattr(model, "config", None), "to_dict", None)
        if callable(to_dict):
            config["model_config"] = to_dict()
        return {**config, **self._config}

    def _groups(self, logs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The log's numbers by namespace: eval_x -> eval, <p>_x beside a <p>_runtime -> p, the rest -> train."""
        prefixes = [p for p in (k[: -len("_runtime")] for k in logs if k.endswith("_runtime") and k != _SUMMARY_KEY)
                    if _is_namespace(p)]
        groups: dict[str, dict[str, Any]] = {}
        for key, value in logs.items():
            if not is_number(value):
                if key not in self._dropped:
                    self._dropped.add(key)
                    report("not_a_number", framework="hf", key=key, kind=type(value).__name__)
                continue
            prefix = next((p for p in prefixes if key.startswith(p + "_")), None)
            if prefix is None:
                groups.setdefault("train", {})[key] = value
            else:
                groups.setdefault(prefix, {})[key[len(prefix) + 1:]] = value
        if "epoch" in groups.get("train", {}) and len(groups) > 1 and _SUMMARY_KEY not in logs:
            epoch = groups["train"].pop("epoch")  # the progress stamped on every log goes with its own metrics
            for ns, metrics in groups.items():
                if ns != "train":
                    metrics.setdefault("epoch", epoch)
            groups = {ns: m for ns, m in groups.items() if m}
        return groups

    def _log_epoch(self) -> None:
        if self.run is not None and self._epoch.ended_at is not None:
            self.run.log_epoch(self._epoch.metrics(), self._epoch.number, self._epoch.ended_at)
            self._epoch.ended_at = None


def _is_namespace(prefix: str) -> bool:
    """Whether an evaluation's ``metric_key_prefix`` can be its namespace (else its metrics stay in train/)."""
    if prefix == "eval":
        return True
    try:
        check_custom(prefix)
    except ValueError:
        return False
    return True


class _Epoch:
    """What one epoch logged: its training losses (weighted by the steps each covers) and the evaluation at its end."""

    def __init__(self, start_step: int = 0):
        self.start_step = self.last_step = start_step
        self.loss_sum, self.loss_steps = 0.0, 0
        self.evals: dict[str, float] = {}  # the last evaluation's metrics, as val_<name>
        self.eval_step: int | None = None
        self.number = 1
        self.ended_at: int | None = None  # the step the epoch ended at, until its record is logged

    def add_loss(self, loss: Any, step: int) -> None:
        if loss is not None and step > self.last_step:
            self.loss_sum += float(loss) * (step - self.last_step)  # the Trainer's loss is the mean since its last log
            self.loss_steps += step - self.last_step
            self.last_step = step

    def add_eval(self, metrics: Mapping[str, Any], step: int) -> None:
        # The evaluation at an epoch's last step comes before on_epoch_end (eval_strategy="steps") or after ("epoch").
        self.eval_step = step
        self.evals = {f"val_{k}": v for k, v in metrics.items() if k != "epoch" and not k.endswith(_SPEED_SUFFIXES)}

    def end(self, number: int, step: int) -> None:
        self.number, self.ended_at = number, step

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": (self.ended_at or 0) - self.start_step}
        if self.loss_steps:
            out["train_loss"] = self.loss_sum / self.loss_steps
        return {**out, **self.evals} if self.eval_step == self.ended_at else out
