"""trackkit-mlflow: record a trackkit run as one MLflow run (``--tracker mlflow``).

Where it records:

- by default, a local SQLite store, no server: ``<output_dir>/mlflow/mlflow.db`` with the
  artifacts in ``<output_dir>/mlflow/artifacts``. Browse it with
  ``mlflow ui --backend-store-uri sqlite:///<absolute output_dir>/mlflow/mlflow.db``.
- ``--mlflow-tracking-uri URI`` or ``MLFLOW_TRACKING_URI``: any MLflow tracking URI, such as a
  tracking server ``http://host:5000``. With ``--offline`` (every backend's switch, also
  ``TRACKKIT_OFFLINE=1``) a remote URI is set aside for the local store.

What it records: every metric with its global step and the time of the log call, the config as
params (values cut to MLflow's 6000 characters), tags (``trackkit.*`` plus ``--mlflow-tag
KEY=VALUE``), artifacts (a file as ``<kind>/<file name>``, a folder as ``<kind>/<name>/``, so the
best checkpoint is under ``model/``; which one is best, with its step and metrics, as the tag
``trackkit.artifact.<name>``), and the status: FINISHED, FAILED or KILLED for success, failed,
interrupted.

Cost and outages. The log hooks only gather; ``trackkit_flush`` (about once a second) sends what
gathered in as few ``log_batch`` requests as MLflow allows (1,000 metrics each), so a run makes
about one request a second whatever it logs. MLflow's HTTP client is set to give up within
``--backend-timeout`` (its own default retries for minutes): a server that is down fails the
flush within seconds, the layer keeps the records and probes again, and what went out before the
failure is not sent twice.

Resume continues the same MLflow run (its id is kept in run.json under ``backend_ids["mlflow"]``).
MLflow cannot delete metric points, so a metric's point at a step the run already holds is not
logged again: replayed steps up to the checkpoint are skipped, points an interrupted process
logged after its checkpoint stay as they were, and ``trackkit sync RUN --to mlflow`` sends only
what the MLflow run lacks.
"""
from __future__ import annotations

import json
import os
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
METRICS_PER_REQUEST, PARAMS_PER_REQUEST, TAGS_PER_REQUEST = 1000, 100, 100  # log_batch's limits
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
        offline: bool | None = False,
        backend_timeout: float = 10.0,
    ) -> None:
        self.tracking_uri = mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.experiment = mlflow_experiment
        self.tags = dict(mlflow_tags or {})
        self.offline = bool(offline)
        _bound_http_calls(backend_timeout)
        self.client: Any = None
        self.run_id: str | None = None
        self.held: dict[str, int] = {}  # metric -> the last step the MLflow run held when this process began
        self.points: list[Any] = []  # metric points gathered since the last flush that sent them
        self.run_tags: list[Any] = []  # tags to send with the next points (which artifact is the best)
        self.artifacts: list[tuple[Path, str, str, dict[str, Any]]] = []  # (path, name, kind, metadata) to upload

    # -- start -----------------------------------------------------------------------------
    @trackkit.hookimpl
    def trackkit_start(self, run: trackkit.RunInfo, config: Mapping[str, Any]) -> None:
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
        # Called again after a start that failed (the server was down): the run it made is kept.
        held_params = self._open_run(run, artifacts) if self.run_id is None else {}
        run.backend_ids["mlflow"] = self.run_id
        params = {key: str(value)[:PARAM_VALUE_LIMIT] for key, value in config.items()}
        changed = sorted(k for k, v in params.items() if k in held_params and held_params[k] != v)
        if changed:
            _notice(f"MLflow params cannot change; run {self.run_id} keeps the first values of {', '.join(changed)}")
        tags = dict(self.tags)
        if run.resumed_from_step is not None:
            tags["trackkit.resumed_from_step"] = str(run.resumed_from_step)
        self._send_params_and_tags({k: v for k, v in params.items() if k not in held_params}, tags)

    def _open_run(self, run: trackkit.RunInfo, artifacts: str | None) -> dict[str, str]:
        """Continue the run's MLflow run, or make one; the params it already holds."""
        previous = self._reopen(run.backend_ids.get("mlflow")) if run.resumed_from_step is not None else None
        if previous is not None:
            self.run_id = previous.info.run_id
            self.held = {key: self._last_step(key) for key in previous.data.metrics}
            self.client.update_run(self.run_id, status="RUNNING")
            return dict(previous.data.params)
        experiment_id = self._experiment_id(self.experiment or run.project, artifacts)
        identity = {"trackkit.run_id": run.id, "trackkit.output_dir": str(run.dir.resolve()),
                    "trackkit.world_size": str(run.world_size)}
        self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=identity).info.run_id
        return {}

    def _send_params_and_tags(self, params: Mapping[str, str], tags: Mapping[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        params_left = [Param(k, v) for k, v in params.items()]
        tags_left = [RunTag(k, v) for k, v in tags.items()]
        while params_left or tags_left:  # both in one request, as many of each as a request takes
            self.client.log_batch(self.run_id, params=params_left[:PARAMS_PER_REQUEST],
                                  tags=tags_left[:TAGS_PER_REQUEST])
            del params_left[:PARAMS_PER_REQUEST], tags_left[:TAGS_PER_REQUEST]

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

    def _last_step(self, key: str) -> int:
        return max((point.step for point in self.client.get_metric_history(self.run_id, key)), default=-1)

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location)

    # -- records: gathered in the hooks, sent in trackkit_flush ------------------------------
    @trackkit.hookimpl
    def trackkit_log_metrics(self, metrics: Mapping[str, float], step: int, timestamp: float) -> None:
        from mlflow.entities import Metric

        when = int(timestamp * 1000)
        self.points += [Metric(k, float(v), when, step) for k, v in metrics.items() if step > self.held.get(k, -1)]

    @trackkit.hookimpl
    def trackkit_log_artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any], step: int) -> None:
        self.artifacts.append((path, name, kind, {"step": step, **metadata}))

    @trackkit.hookimpl
    def trackkit_flush(self) -> None:
        # What went out is dropped from the lists before the next request: a request that fails
        # raises with the rest still here, and the layer's next flush sends only that.
        while self.artifacts:
            self._upload(*self.artifacts[0])
            del self.artifacts[0]
        while self.points or self.run_tags:
            metrics, tags = self.points[:METRICS_PER_REQUEST - TAGS_PER_REQUEST], self.run_tags[:TAGS_PER_REQUEST]
            self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
            del self.points[:len(metrics)], self.run_tags[:len(tags)]

    def _upload(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=f"{kind}/{name}")
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=kind)
        # The latest artifact of each name (the best checkpoint so far) with its step and metrics, at a
        # glance; it goes with the next points.
        described = json.dumps({"kind": kind, "file": path.name, **metadata}, default=str)
        self.run_tags.append(RunTag(f"trackkit.artifact.{name}", described))

    @trackkit.hookimpl
    def trackkit_finish(self, status: str) -> None:
        if self.run_id is not None:  # called even when trackkit_start failed
            self.client.set_terminated(self.run_id, STATUS[status])


def _bound_http_calls(seconds: float) -> None:
    """Make MLflow's HTTP client give up within about ``seconds`` (its defaults retry for minutes).

    MLflow reads these variables at each request; a value the user set stays theirs.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(seconds / 2))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def _notice(message: str) -> None:
    click.echo(f"trackkit-mlflow: {message}", err=True)
