"""The Run: what a training loop talks to.

    run = trackkit.start(["console", "jsonl"], output_dir="runs/a", config=hparams)
    with run:
        run.log_train({"loss": loss, "learning_rate": lr}, step=step)
        run.log_eval({"loss": val_loss, "perplexity": val_ppl}, step=step)
    # leaving the block finishes the run: "success", "failed" on an exception,
    # "interrupted" on Ctrl-C or SIGTERM.

A log call checks its arguments, makes one record (record.py) and appends it to every
tracker's queue; each tracker's worker does the rest on its own thread (dispatch.py).
"""
from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import messages
from .dispatch import Limits, TrackerWorker, plugin_manager_for
from .errors import TrackkitError
from .metrics import MAX_STEP, NonFinite, checked, checked_step, qualified
from .namespaces import EPOCH, EVAL, FINAL, TRAIN, check_custom, namespace
from .plugins import parse_names, source_for
from .record import Artifact, Identity, Record, last_seq, metrics_path, record_dir, scrub
from .report import report
from .system import SystemSampler

STATUSES = ("success", "failed", "interrupted")


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
    runs; the step of the checkpoint it resumes from); ``run_id`` given with it must match.
    ``handle_signals=False`` leaves SIGTERM to the caller (a trainer that checkpoints first).
    ``system_metrics`` samples CPU, memory, disk, network and GPU every that many seconds into ``system/``.
    On a rank other than 0 of a distributed run, the returned run does nothing.
    """
    names = parse_names(trackers)
    if not names or _rank() != 0:
        return NullRun()
    if resume_from_step is not None:
        resume_from_step = checked_step(resume_from_step, "resume_from_step")
    options = dict(options or {})
    messages.set_lang(options.get("console_lang"))  # every line trackkit prints, not only the console tracker's
    created, specs = {}, []
    for spec in names:
        source = source_for(spec)
        created[source.name] = source.create(options)
        specs.append(spec)  # what --tracker and `trackkit sync --to` take: a name or package.module:Class
    managers = {n: plugin_manager_for(n, tracker) for n, tracker in created.items()}  # wrong hooks fail here
    output_dir = Path(output_dir)
    identity = Identity.establish(output_dir, specs, options, name=name, project=project, run_id=run_id,
                                  resume_from_step=resume_from_step, world_size=_world_size())
    from .trackers.jsonl import JsonlTracker

    recorder = next((n for n, t in created.items() if isinstance(t, JsonlTracker)), None)  # writes the local record
    return Run(identity, scrub(dict(config or {})), managers, limits or Limits(), handle_signals, system_metrics,
               recorder)


class Run:
    """A started run. Create it with ``trackkit.start``."""

    def __init__(self, identity: Identity, config: dict[str, Any], managers: dict[str, Any], limits: Limits,
                 handle_signals: bool, system_metrics: float | None, recorder: str | None):
        self.info = identity.info
        self.config = config
        self._identity = identity
        self._recorder = recorder  # the tracker that writes the local record, which the others catch up from
        local_record = metrics_path(self.info.dir) if recorder is not None else None
        self._run_json_lock = threading.Lock()
        self._first_seq = last_seq(self.info.dir) + 1 if self.info.resumed else 1
        # Records are numbered without a lock: next() on a count is one step for the interpreter,
        # so the training thread and the system-metrics thread (or a user's own) can both log.
        self._numbers = itertools.count(self._first_seq)
        self._draws = 0  # numbers _logged() drew to read the count
        self._drawing = threading.Lock()
        self._staging = record_dir(self.info.dir) / "staged"  # hard-linked copies of artifacts trackers still need
        shutil.rmtree(self._staging, ignore_errors=True)  # what a killed process left
        self._holders: dict[int, int] = {}  # artifact record -> trackers that still need its staged copy
        self._holders_lock = threading.Lock()
        self.last_train_step = self._last_step = self.info.resumed_from_step or 0
        self.summary: dict[str, Any] = {"final": {}, "artifacts": {}}
        self._finish_lock = threading.Lock()
        self.status: str | None = None
        self._exit_status: str | None = None  # what atexit should record if finish is never called
        self._write_run_json("running")
        start_kwargs = {"run": self.info, "config": config}
        nonfinite = NonFinite(report)
        self._workers = [
            TrackerWorker(n, pm, start_kwargs, limits, None if n == recorder else local_record,
                          self._done, self._save_backend_ids, nonfinite if i == 0 else None)
            for i, (n, pm) in enumerate(managers.items())
        ]
        # Between two looks at the trackers' queues and states, a record goes straight into every
        # tracker's queue that is not stalled: one C call each, which keeps a log call near a microsecond.
        # A queue may hold up to this many records over its limit.
        self._check_every = max(1, min(64, limits.queue_size // 16))
        self._enqueues = [worker.enqueue for worker in self._workers]
        self._stalled: list[TrackerWorker] = []
        self._last_checked = self._first_seq - 1
        self._install_exit_handlers(handle_signals)
        self._sampler = SystemSampler(self, system_metrics) if system_metrics else None

    # -- logging ---------------------------------------------------------------------------
    def log_train(self, metrics: Mapping[str, Any], step: int) -> None:
        """Metrics of a training step (``loss`` becomes ``train/loss``) at the global optimizer step."""
        step = step if type(step) is int and 0 <= step <= MAX_STEP else checked_step(step)
        self._record(Record(0, TRAIN, checked("train", metrics), step, time.time()))
        self.last_train_step = self._last_step = step

    def log_eval(self, metrics: Mapping[str, Any], step: int) -> None:
        """Metrics of an evaluation at the global step it was made."""
        self._last_step = checked_step(step)
        self._record(Record(0, EVAL, checked("eval", metrics), self._last_step, time.time()))

    def log_epoch(self, metrics: Mapping[str, Any], epoch: int, step: int) -> None:
        """Metrics of a finished epoch (counting from 1) at the global step it ended at."""
        self._last_step = checked_step(step)
        self._record(Record(0, EPOCH, checked("epoch", metrics), self._last_step, time.time(),
                            checked_step(epoch, "epoch")))

    def log_final(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """The run's summary metrics, at ``step`` (default: the last training step logged)."""
        final = checked("final", metrics)
        step = self.last_train_step if step is None else checked_step(step)
        self.summary["final"].update(qualified("final", final))
        self._record(Record(0, FINAL, final, step, time.time()))

    def log_metrics(self, namespace: str, metrics: Mapping[str, Any], step: int) -> None:
        """Metrics of any other namespace, e.g. ``log_metrics("system", {"cpu_percent": 12}, step)``."""
        check_custom(namespace)
        ns = _namespace(namespace)
        self._record(Record(0, ns, checked(namespace, metrics), checked_step(step), time.time()))

    def log_artifact(self, path: str | os.PathLike, name: str | None = None, kind: str = "file",
                     metadata: Mapping[str, Any] | None = None, step: int | None = None) -> None:
        """A file or folder worth keeping (``kind="model"`` for a checkpoint), at ``step`` (default: the step
        of the last record logged). Trackers may get to it seconds later: a hard-linked copy outlives its deletion."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {str(path)!r} does not exist")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        step = self._last_step if step is None else checked_step(step)
        artifact = Artifact(0, path.resolve(), name or path.name, str(kind), scrub(dict(metadata or {})), step,
                            time.time())
        self.summary["artifacts"][artifact.name] = artifact.summary()
        self._record(artifact)

    def _record(self, record: Record | Artifact) -> None:
        """Number ``record`` and queue it for every tracker."""
        if self.status is not None:
            raise RuntimeError(f"run {self.info.name!r} is already finished ({self.status})")
        record.seq = seq = next(self._numbers)
        if seq % self._check_every and type(record) is Record:  # an artifact is staged, below
            for enqueue in self._enqueues:
                enqueue(record)
            return
        if isinstance(record, Artifact):
            record.staged = self._stage(record)
        taken = sum(worker.put(record) for worker in self._workers)  # waits for room; a stalled one notes it
        if isinstance(record, Artifact) and record.staged is not None:
            with self._holders_lock:
                self._holders[seq] = taken
            if not taken:
                self._done(record)
        for worker in self._stalled:  # what the quick path did not offer them since the last look
            if seq - 1 > self._last_checked:
                worker.note_dropped(self._last_checked + 1, seq - 1)
        self._stalled = [w for w in self._workers if w.state == "stalled"]
        self._enqueues = [w.enqueue for w in self._workers if w.state != "stalled"]
        self._last_checked = seq

    # -- artifacts' staged copies -------------------------------------------------------------------
    def _stage(self, artifact: Artifact) -> Path | None:
        """A hard-linked copy of the artifact (no data copied), so that the loop may delete the original."""
        target = self._staging / str(artifact.seq) / artifact.path.name
        try:
            if artifact.path.is_dir():
                shutil.copytree(artifact.path, target, copy_function=os.link)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(artifact.path, target)
        except OSError as exc:  # another filesystem (EXDEV), or one without hard links
            shutil.rmtree(target.parent, ignore_errors=True)
            report("not_staged", name=artifact.name, error=exc.strerror or exc)
            return None
        return target

    def _done(self, record: Record | Artifact) -> None:
        """A tracker delivered ``record`` or gave up on it: free a staged copy nobody needs any more."""
        if not isinstance(record, Artifact) or record.staged is None:
            return
        with self._holders_lock:
            left = self._holders.get(record.seq, 1) - 1
            self._holders[record.seq] = left
        if left <= 0:
            self._holders.pop(record.seq, None)
            shutil.rmtree(record.staged.parent, ignore_errors=True)

    # -- flushing and finishing ------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> dict[str, int]:
        """Wait until every tracker has handled and flushed what was logged so far.

        Returns the number of records each tracker still had after ``timeout`` (empty when all
        caught up), and says so on stderr. A tracker still behind an earlier flush is neither
        waited for nor reported again, and one that is failing (its backend down) answers at
        once: a backend outage delays the caller once at most, not at every flush. After
        ``finish`` it returns at once.
        """
        if self.status is not None:
            return {}
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
            self.summary.update(status=status, trackers=self._health())
            finish = {"status": status, "summary": self.summary}
            self.status = status
            waits = [worker.request(finish, deadline) for worker in self._workers]
            for wait in waits:
                wait(max(0.1, deadline - time.monotonic()))
            self.summary["trackers"] = health = self._health()
            self._write_run_json(status, health, quiet=True)
            self._name_what_is_missing(health)
            shutil.rmtree(self._staging, ignore_errors=True)
            self._uninstall_exit_handlers()
            return self.summary

    def _drain(self, timeout: float, what: str) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        left = {}
        asked = [(w, w.behind or w.state != "ok", w.request()) for w in self._workers]
        for worker, said, wait in asked:  # said: reported before; a flush does not repeat it
            if not wait(max(0.0, deadline - time.monotonic())):
                left[worker.name] = self._logged() - worker.delivered
                if what == "finish" or not said:
                    report("still_had", what=what, name=worker.name, count=left[worker.name], timeout=timeout)
        return left

    def _name_what_is_missing(self, health: Mapping[str, Mapping[str, Any]]) -> None:
        """Say which command delivers later what a tracker did not get (from the local record)."""
        recorded = self._recorder is not None and health[self._recorder]["lost"] == 0
        for (name, h), spec in zip(health.items(), self._identity.trackers):
            if h["lost"] and name != self._recorder:
                report("missing_later" if recorded else "missing_lost", name=name, count=h["lost"], dir=self.info.dir,
                       spec=spec)

    def _health(self) -> dict[str, dict[str, Any]]:
        logged = self._logged()
        return {worker.name: worker.health(logged) for worker in self._workers}

    def _logged(self) -> int:
        """How many records were logged so far: what each tracker's health is counted against."""
        with self._drawing:
            drawn = next(self._numbers)
            logged = drawn - self._first_seq - self._draws
            self._draws += 1
            return logged

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
    def _save_backend_ids(self) -> None:
        """A tracker started (on its thread) and may have set a backend id: keep it in run.json."""
        if self.status is None:
            self._write_run_json("running", quiet=True)

    def _write_run_json(self, status: str, health: Mapping[str, Any] | None = None, quiet: bool = False) -> None:
        """Write run.json; once the run has started, a failure is said, not raised (the run goes on)."""
        with self._run_json_lock:
            try:
                self._identity.write(status, health)
            except TrackkitError as exc:
                if not quiet and self.status is None and status == "running":
                    raise  # at the start: refuse a folder that cannot hold the run's record
                report("run_json", error=exc)


class NullRun(Run):
    """The run of a rank other than 0, or of ``--tracker none``: every call returns at once."""

    info = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.status = None
        self.summary = {}
        self.last_train_step = 0

    def log_train(self, metrics, step): pass
    def log_eval(self, metrics, step): pass
    def log_epoch(self, metrics, epoch, step): pass
    def log_final(self, metrics, step=None): pass
    def log_metrics(self, namespace, metrics, step): pass
    def log_artifact(self, path, name=None, kind="file", metadata=None, step=None): pass
    def flush(self, timeout=10.0): return {}

    def finish(self, status="success", timeout=30.0):
        self.status = status
        return self.summary

    def __exit__(self, exc_type, exc, tb): pass


# -- helpers -------------------------------------------------------------------------------
_NAMESPACES: dict[str, Any] = {}  # custom namespaces made so far, so that a log call does not make one


def _namespace(name: str):
    found = _NAMESPACES.get(name)
    if found is None:
        found = _NAMESPACES.setdefault(name, namespace(name))
    return found


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
