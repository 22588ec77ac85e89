"""trackkit-mlflow: record a trackkit run as one MLflow run (``--tracker mlflow``).

Where it records:

- by default, a local SQLite store, no server: ``<output_dir>/mlflow/mlflow.db`` with the
  artifacts in ``<output_dir>/mlflow/artifacts``. Browse it with
  ``mlflow ui --backend-store-uri sqlite:///<absolute output_dir>/mlflow/mlflow.db``.
- ``--mlflow-tracking-uri URI`` or ``MLFLOW_TRACKING_URI``: any MLflow tracking URI, such as a
  tracking server ``http://host:5000``. With ``--offline`` a remote URI is set aside for the
  local store.

What it records: every metric with its step (``epoch/...`` against the epoch number, ``final/...``
at the last step seen), the config as params (values cut to MLflow's 6000 characters), tags
(``trackkit.*`` plus ``--mlflow-tag KEY=VALUE``), artifacts (a file as ``<kind>/<file name>``, a
folder as ``<kind>/<name>/``, so the best checkpoint is under ``model/``), and the status:
FINISHED, FAILED or KILLED for success, failed, interrupted.

Resume continues the same MLflow run (its id is kept in run.json under ``backend_ids["mlflow"]``).
MLflow cannot delete metric points, so a step that the run already holds for a metric is not
logged again: replayed steps up to the checkpoint are skipped, and points an interrupted process
logged after its checkpoint stay as they were.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click

import trackkit

__all__ = ["MlflowTracker"]

# What MLflow 3 servers accept; longer values are cut here so that a resumed run compares like
# with like (MLflow stores the cut value).
PARAM_VALUE_LIMIT = 6000
STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def _tags_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        tags[key] = text
    return tags


class MlflowTracker:
    """One MLflow run per trackkit run, through ``MlflowClient`` with explicit run ids (the
    fluent API keeps a global active run, which does not suit a tracker on its own thread)."""

    requires = ("mlflow",)
    options = [
        click.Option(
            ["--mlflow-tracking-uri", "mlflow_tracking_uri"], metavar="URI", default=None,
            help="MLflow tracking URI, e.g. http://127.0.0.1:5000 "
            "(default: $MLFLOW_TRACKING_URI, else a SQLite store in <output-dir>/mlflow).",
        ),
        click.Option(
            ["--mlflow-experiment", "mlflow_experiment"], metavar="NAME", default=None,
            help="MLflow experiment (default: the run's project).",
        ),
        click.Option(
            ["--mlflow-tag", "mlflow_tags"], metavar="KEY=VALUE", multiple=True, callback=_tags_option,
            help="Tag for the MLflow run, repeatable.",
        ),
    ]

    def __init__(
        self,
        mlflow_tracking_uri: str | None = None,
        mlflow_experiment: str | None = None,
        mlflow_tags: Mapping[str, str] | None = None,
        offline: bool = False,
    ) -> None:
        self.tracking_uri = mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.experiment = mlflow_experiment
        self.tags = dict(mlflow_tags or {})
        self.offline = offline
        self.run_id: str | None = None
        self.held: dict[str, set[int]] = {}  # steps each metric already had when this process resumed
        self.last_step = 0

    # -- start -----------------------------------------------------------------------------
    @trackkit.hookimpl
    def trackkit_start(self, run: trackkit.RunInfo, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        store = run.dir.resolve() / "mlflow"
        uri = self.tracking_uri
        if uri and self.offline and urlparse(uri).scheme not in ("", "file", "sqlite"):
            _notice(f"offline: recording to the local store in {store} instead of {uri}")
            uri = None
        artifacts = None  # where a new experiment keeps artifacts: MLflow's choice, except in our store
        if uri is None:
            store.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{store.as_posix()}/mlflow.db", (store / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)

        held_params: dict[str, str] = {}
        previous = self._reopen(run.backend_ids.get("mlflow")) if run.resumed else None
        if previous is not None:
            self.run_id = previous.info.run_id
            held_params = previous.data.params
            self.held = {key: self._steps(key) for key in previous.data.metrics}
            self.last_step = run.resumed_from_step
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment_id = self._experiment_id(self.experiment or run.project, artifacts)
            identity = {"trackkit.run_id": run.id, "trackkit.output_dir": str(run.dir.resolve()),
                        "trackkit.world_size": str(run.world_size)}
            self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=identity).info.run_id
        run.backend_ids["mlflow"] = self.run_id

        params = {key: str(value)[:PARAM_VALUE_LIMIT] for key, value in config.items()}
        changed = sorted(k for k, v in params.items() if k in held_params and held_params[k] != v)
        if changed:
            _notice(f"MLflow params cannot change; run {self.run_id} keeps the first values of {', '.join(changed)}")
        tags = dict(self.tags)
        if previous is not None:
            tags["trackkit.resumed_from_step"] = str(run.resumed_from_step)
        self.client.log_batch(
            self.run_id,
            params=[Param(k, v) for k, v in params.items() if k not in held_params],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

    def _reopen(self, run_id: str | None) -> Any:
        """The MLflow run to continue, or None (and a notice) where this store does not hold it."""
        if run_id is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # a store we cannot reach must not quietly fork the run
            found = None
        if found is None or found.info.lifecycle_stage == "deleted":
            _notice(f"MLflow run {run_id} is not in {self.client.tracking_uri}; starting a new one")
            return None
        return found

    def _steps(self, key: str) -> set[int]:
        return {point.step for point in self.client.get_metric_history(self.run_id, key)}

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location)

    # -- metrics: one log_batch request per record -----------------------------------------
    def _log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, step) for k, v in metrics.items() if step not in self.held.get(k, ())]
        if points:
            self.client.log_batch(self.run_id, metrics=points)

    @trackkit.hookimpl
    def trackkit_log_train(self, metrics: Mapping[str, float], step: int) -> None:
        self.last_step = step
        self._log(metrics, step)

    @trackkit.hookimpl
    def trackkit_log_eval(self, metrics: Mapping[str, float], step: int) -> None:
        self.last_step = step
        self._log(metrics, step)

    @trackkit.hookimpl
    def trackkit_log_epoch(self, metrics: Mapping[str, float], epoch: int, step: int) -> None:
        self.last_step = step
        self._log(metrics, epoch)  # plotted against the epoch number

    @trackkit.hookimpl
    def trackkit_log_metrics(self, namespace: str, metrics: Mapping[str, float], step: int) -> None:
        self.last_step = step
        self._log(metrics, step)

    @trackkit.hookimpl
    def trackkit_log_final(self, metrics: Mapping[str, float]) -> None:
        self._log(metrics, self.last_step)

    # -- artifacts and the end -------------------------------------------------------------
    @trackkit.hookimpl
    def trackkit_log_artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any]) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=f"{kind}/{name}")
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=kind)
        # The latest artifact of each kind (the best checkpoint so far) with its metadata, at a glance.
        described = json.dumps({"name": name, "file": path.name, **metadata}, default=str)
        self.client.set_tag(self.run_id, f"trackkit.artifact.{kind}", described)

    @trackkit.hookimpl
    def trackkit_finish(self, status: str, summary: Mapping[str, Any]) -> None:
        if self.run_id is not None:  # called even when trackkit_start failed
            self.client.set_terminated(self.run_id, STATUS[status])


def _notice(message: str) -> None:
    click.echo(f"trackkit-mlflow: {message}", err=True)
