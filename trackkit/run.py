"""The Run: what a training loop talks to.

    run = trackkit.start(["console", "jsonl"], output_dir="runs/a", config=hparams)
    with run:
        run.log_train({"loss": loss, "learning_rate": lr}, step=step)
        run.log_eval({"loss": val_loss, "perplexity": val_ppl}, step=step)
    # leaving the block finishes the run: "success", "failed" on an exception,
    # "interrupted" on Ctrl-C or SIGTERM.

Every log call validates its arguments and appends one record to each tracker's queue; the
trackers do the rest on their own threads (see dispatch.py).
"""
from __future__ import annotations

import atexit
import itertools
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import hookspecs
from .dispatch import Limits, TrackerWorker
from .errors import TrackkitError
from .metrics import checked, qualified
from .plugins import parse_names, plugin_manager, source_for
from .record import RUN_FORMAT, read_run_json, run_json_path, scrub, write_json_atomic
from .report import report
from .runinfo import RunInfo
from .system import SystemSampler

STATUSES = ("success", "failed", "interrupted")
HOOKS = tuple(name for name in dir(hookspecs) if name.startswith("trackkit_"))


def start(
    trackers: list[str] | tuple[str, ...] | str = ("console", "jsonl"),
    *,
    output_dir: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    name: str | None = None,
    project: str = "trackkit",
    run_id: str | None = None,
    resume_from_step: int | None = None,
    options: Mapping[str, Any] | None = None,
    limits: Limits | None = None,
    handle_signals: bool = True,
    system_metrics: float | None = None,
) -> Run:
    """Start a run and its trackers.

    ``trackers`` are entry-point names, ``package.module:Class`` paths, or ``"none"``.
    ``options`` are tracker options by parameter name (``{"wandb_project": "x", "offline": True}``);
    each tracker's constructor receives those it declares.
    ``resume_from_step`` continues the run recorded in ``output_dir`` (same id, same backend
    runs); ``run_id`` given with it must match the recorded id.
    ``system_metrics`` samples CPU, memory and GPU every that many seconds into ``system/`` (system.py).
    On a rank other than 0 of a distributed run, the returned run does nothing.
    """
    names = parse_names(trackers)
    if not names or _rank() != 0:
        return NullRun()
    trackers_by_name = {}
    for tracker_name in names:
        source = source_for(tracker_name)
        trackers_by_name[source.name] = source.create(options or {})
    previous = read_run_json(Path(output_dir))
    info = _identity(Path(output_dir), previous, name, project, run_id, resume_from_step)
    started_at = previous["started_at"] if info.resumed and previous else time.time()
    return Run(info, scrub(config or {}), trackers_by_name, limits or Limits(), handle_signals, started_at, system_metrics)


class Run:
    """A started run. Create it with ``trackkit.start``."""

    def __init__(
        self,
        info: RunInfo,
        config: dict[str, Any],
        trackers: dict[str, object],
        limits: Limits,
        handle_signals: bool,
        started_at: float,
        system_metrics: float | None = None,
    ):
        self.info = info
        self._started_at = started_at
        self._run_json_lock = threading.Lock()
        self.config = config
        self._pm = plugin_manager()
        for tracker_name, tracker in trackers.items():
            self._pm.register(tracker, name=tracker_name)
        self._pm.check_pending()  # a misspelt trackkit_* hook fails here, not silently
        self._flagged: set[str] = set()
        # Records are numbered without a lock: next() on a count is one step for the interpreter,
        # so the training thread and the system-metrics thread (or a user's own) can both log.
        # _logged() draws a number to read the count, and keeps track of the numbers it drew.
        self._numbers = itertools.count(1)
        self._numbers_drawn = 0
        self._drawing = threading.Lock()
        self._workers = [
            TrackerWorker(n, self._caller_for(n), limits, self._flag_nonfinite, self._flushes(n)) for n in trackers
        ]
        # Between two looks at the trackers' queues and states, a record goes straight into every
        # healthy tracker's queue: one C call each, which keeps a log call near a microsecond.
        # A queue may hold up to this many records over its limit.
        self._check_every = max(1, min(64, limits.queue_size // 16))
        self._enqueues = [worker.enqueue for worker in self._workers]
        self._final: dict[str, Any] = {}
        self._finish_lock = threading.Lock()
        self.status: str | None = None
        self._exit_status: str | None = None  # what atexit should record if finish is never called
        self._write_run_json("running")
        self._control("trackkit_start", {"run": info, "config": config})
        self._install_exit_handlers(handle_signals)
        self.last_train_step = info.resumed_from_step or 0  # the step system metrics are logged at
        self._sampler = SystemSampler(self, system_metrics) if system_metrics else None

    # -- logging ---------------------------------------------------------------------------
    def log_train(self, metrics: Mapping[str, Any], step: int) -> None:
        self._record(("trackkit_log_train", {"metrics": checked("train", metrics), "step": step}))
        self.last_train_step = step

    def log_eval(self, metrics: Mapping[str, Any], step: int) -> None:
        self._record(("trackkit_log_eval", {"metrics": checked("eval", metrics), "step": step}))

    def log_epoch(self, metrics: Mapping[str, Any], epoch: int, step: int) -> None:
        self._record(("trackkit_log_epoch", {"metrics": checked("epoch", metrics), "epoch": epoch, "step": step}))

    def log_final(self, metrics: Mapping[str, Any]) -> None:
        final = checked("final", metrics)
        self._final.update(qualified("final", final))
        self._record(("trackkit_log_final", {"metrics": final}))

    def log_metrics(self, namespace: str, metrics: Mapping[str, Any], step: int) -> None:
        """Metrics of any other namespace, e.g. ``log_metrics("system", {"cpu_percent": 12}, step)``."""
        if namespace in ("train", "eval", "epoch", "final") or not namespace or "/" in namespace:
            raise ValueError(f"log_metrics takes a custom namespace, not {namespace!r}; use log_{namespace}")
        self._record(
            ("trackkit_log_metrics", {"namespace": namespace, "metrics": checked(namespace, metrics), "step": step})
        )

    def log_artifact(
        self, path: str | os.PathLike, name: str | None = None, kind: str = "file", metadata: Mapping[str, Any] | None = None
    ) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {str(path)!r} does not exist")
        self._record((
            "trackkit_log_artifact",
            {"path": path.resolve(), "name": name or path.name, "kind": kind, "metadata": dict(metadata or {})},
        ))

    def _record(self, item: tuple[str, dict[str, Any]]) -> None:
        """Queue a record, ``(hook, kwargs)``, for every tracker."""
        if self.status is not None:
            raise RuntimeError(f"run {self.info.name!r} is already finished ({self.status})")
        if next(self._numbers) % self._check_every:
            for enqueue in self._enqueues:
                enqueue(item)
        else:
            self._put_checked(item)

    def _control(self, hook: str, kwargs: dict[str, Any]) -> None:
        """Queue trackkit_start or trackkit_finish, which are not records, for every tracker."""
        self._put_checked((hook, kwargs))

    def _put_checked(self, item: tuple[str, dict[str, Any]]) -> None:
        for worker in self._workers:
            worker.put(item)  # waits for room, or drops the record of a switched-off tracker
        self._enqueues = [worker.enqueue for worker in self._workers if worker.state == "ok"]

    # -- flushing and finishing ------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> dict[str, int]:
        """Wait until every tracker has handled and flushed what was logged so far.

        Returns the number of records each tracker still had after ``timeout`` (empty when all
        caught up), and says so on stderr. A tracker still behind an earlier flush is neither
        waited for nor reported again: a hung backend delays the caller once, not at every flush.
        """
        return self._drain(timeout, "flush")

    def finish(self, status: str = "success", timeout: float = 30.0) -> dict[str, Any]:
        """Drain every tracker, call ``trackkit_finish`` and record the status in run.json.

        Returns the summary handed to the trackers. Calling it again does nothing.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        if self._sampler is not None:
            self._sampler.stop()
        with self._finish_lock:
            if self.status is not None:
                return self.summary
            deadline = time.monotonic() + timeout
            self._drain(timeout, "finish")
            self.summary = {"status": status, "final": dict(self._final), "trackers": self._health()}
            self._control("trackkit_finish", {"status": status, "summary": self.summary})
            self.status = status
            for wait in [worker.request(flush=False, stop=True) for worker in self._workers]:
                wait(max(0.1, deadline - time.monotonic()))
            self._write_run_json(status)
            self._uninstall_exit_handlers()
            return self.summary

    def _drain(self, timeout: float, what: str) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        left = {}
        asked = [(w, w.behind or w.state != "ok", w.request(flush=True)) for w in self._workers]
        for worker, said, wait in asked:  # said: reported before; a flush does not repeat it
            if not wait(max(0.0, deadline - time.monotonic())):
                left[worker.name] = self._logged() - worker.delivered
                if what == "finish" or not said:
                    report(f"{what}: tracker {worker.name!r} still had {left[worker.name]} records after {timeout:g}s")
        return left

    def _flag_nonfinite(self, key: str, value: float, step: int | None) -> None:
        # Called from every worker thread; the set makes it once per key, whichever comes first.
        if key not in self._flagged:
            self._flagged.add(key)
            at = f" at step {step}" if step is not None else ""
            report(f"{key} is {value}{at}; recorded as is (further non-finite values of it are not flagged)")

    def _health(self) -> dict[str, dict[str, Any]]:
        logged = self._logged()
        return {worker.name: worker.health(logged) for worker in self._workers}

    def _logged(self) -> int:
        """How many records were logged so far: what each tracker's health is counted against."""
        with self._drawing:
            self._numbers_drawn += 1
            return next(self._numbers) - self._numbers_drawn

    # -- context manager, Ctrl-C, SIGTERM, atexit ------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            status = "success"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        elif issubclass(exc_type, SystemExit):
            status = self._exit_status or ("success" if exc.code in (0, None) else "failed")
        else:
            status = "failed"
        self.finish(status)

    def _install_exit_handlers(self, handle_signals: bool) -> None:
        atexit.register(self._at_exit)
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        self._previous_sigterm = None
        if handle_signals and threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _uninstall_exit_handlers(self) -> None:
        atexit.unregister(self._at_exit)
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_excepthook
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self._exit_status = "interrupted"
        raise SystemExit(128 + signal.SIGTERM)

    def _excepthook(self, exc_type, exc, tb) -> None:
        self._exit_status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        self._previous_excepthook(exc_type, exc, tb)

    def _at_exit(self) -> None:
        self.finish(self._exit_status or "success")

    # -- run.json ------------------------------------------------------------------------------
    def _flushes(self, tracker_name: str) -> bool:
        tracker = self._pm.get_plugin(tracker_name)
        return any(impl.plugin is tracker for impl in self._pm.hook.trackkit_flush.get_hookimpls())

    def _caller_for(self, tracker_name: str):
        others = [p for n, p in self._pm.list_name_plugin() if n != tracker_name]
        callers = {hook: self._pm.subset_hook_caller(hook, remove_plugins=others) for hook in HOOKS}

        def call(hook: str, kwargs: dict[str, Any]) -> None:
            callers[hook](**kwargs)
            if hook == "trackkit_start":
                self._write_run_json("running")  # persist backend ids the tracker just set

        return call

    def _write_run_json(self, status: str) -> None:
        info = self.info
        record = {
            "format": RUN_FORMAT,
            "name": info.name,
            "id": info.id,
            "project": info.project,
            "status": status,
            "trackers": [w.name for w in self._workers],
            "backend_ids": dict(info.backend_ids),
            "started_at": self._started_at,
            "updated_at": time.time(),
            "resumed_from_step": info.resumed_from_step,
            "world_size": info.world_size,
        }
        if status != "running":
            record["tracker_health"] = self._health()
        with self._run_json_lock:
            write_json_atomic(run_json_path(info.dir), record)


class NullRun(Run):
    """The run of a rank other than 0, or of ``--tracker none``: every call returns at once."""

    info = None

    def __init__(self) -> None:
        self.status = None
        self.summary: dict[str, Any] = {}

    def log_train(self, metrics, step): pass
    def log_eval(self, metrics, step): pass
    def log_epoch(self, metrics, epoch, step): pass
    def log_final(self, metrics): pass
    def log_metrics(self, namespace, metrics, step): pass
    def log_artifact(self, path, name=None, kind="file", metadata=None): pass
    def flush(self, timeout=10.0): return {}

    def finish(self, status="success", timeout=30.0):
        self.status = status
        return self.summary

    def __exit__(self, exc_type, exc, tb): pass


# -- helpers -------------------------------------------------------------------------------
def _identity(output_dir: Path, previous, name, project, run_id, resume_from_step) -> RunInfo:
    if resume_from_step is not None and previous is not None:
        if run_id is not None and run_id != previous["id"]:
            raise TrackkitError(
                f"{output_dir} holds run {previous['id']}, not {run_id}: refusing to mix two runs in one folder"
            )
        return RunInfo(
            name=previous["name"], id=previous["id"], project=previous.get("project", project), dir=output_dir,
            resumed_from_step=resume_from_step, rank=0, world_size=_world_size(),
            backend_ids=dict(previous.get("backend_ids", {})),
        )
    if previous is not None and resume_from_step is None:
        raise TrackkitError(
            f"{output_dir} already holds run {previous['name']!r} ({previous['status']}); "
            "resume it or choose another output directory"
        )
    return RunInfo(
        name=name or output_dir.resolve().name, id=run_id or secrets.token_hex(4), project=project,
        dir=output_dir, resumed_from_step=resume_from_step, rank=0, world_size=_world_size(),
    )


def _rank() -> int:
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _world_size() -> int:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))
