"""A run's records, and its identity on disk.

A *record* is what one log call produced: a ``Record`` (metrics of one namespace at one step) or
an ``Artifact``. It travels as one object from ``Run`` to every tracker's worker, and it is
written to the local record as one JSON line (an *event*). ``Record.event()`` and
``from_event()`` are the one mapping between the two, used by the jsonl tracker, by the catch-up
of a tracker that fell behind, and by ``trackkit sync --to``.

    <output_dir>/trackkit/run.json       identity, trackers and their options, backend ids, status, health
    <output_dir>/trackkit/config.json    hyperparameters, secrets scrubbed at every depth (jsonl tracker)
    <output_dir>/trackkit/metrics.jsonl  one event per record (jsonl tracker)
    <output_dir>/trackkit/summary.json   written when the run finishes (jsonl tracker)

An event: ``{"event": "train", "seq": 12, "step": 10, "time": 1732712345.1, "metrics":
{"train/loss": 2.31}}``. ``event`` is the namespace for train, eval, epoch (with ``epoch``) and
final, ``metrics`` for any other namespace (with ``namespace``), or ``artifact`` (with ``path``,
``name``, ``kind``, ``metadata``); ``resume`` marks where a resumed process began. ``seq``
numbers the records of a run, increasing across resumes; ``time`` is the log call's.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TrackkitError
from .metrics import qualified
from .namespaces import BUILTIN, Namespace, namespace
from .runinfo import RunInfo

RUN_FORMAT = 1
SECRET_MARKERS = ("key", "token", "secret", "password")
MASK = "***"


# -- records ---------------------------------------------------------------------------------------
class Record:
    """Metrics of one namespace at one step, as logged (keys as given, values maybe 0-d tensors).

    ``ready()`` gives the namespaced keys and plain numbers, computed by the first tracker thread
    that asks (reading a tensor may wait for the device; never on the training thread).
    """

    __slots__ = ("seq", "namespace", "metrics", "step", "timestamp", "epoch", "_ready")

    def __init__(self, seq: int, ns: Namespace, metrics: dict[str, Any], step: int, timestamp: float,
                 epoch: int | None = None):
        self.seq, self.namespace, self.metrics = seq, ns, metrics
        self.step, self.timestamp, self.epoch = step, timestamp, epoch
        self._ready: dict[str, float | int] | None = None

    def ready(self) -> dict[str, float | int]:
        # Two threads may compute it at once; both get the same numbers, one of them is kept.
        if self._ready is None:
            self._ready = qualified(self.namespace.name, self.metrics)
        return self._ready

    def kwargs(self, catch_all: bool) -> dict[str, Any]:
        """The hook's arguments: of the namespace's own hook, or of the catch-all."""
        out: dict[str, Any] = {"metrics": self.ready(), "step": self.step, "timestamp": self.timestamp,
                               "seq": self.seq}
        if catch_all:
            out["namespace"] = self.namespace.name
        elif self.epoch is not None:
            out["epoch"] = self.epoch
        return out

    def event(self) -> dict[str, Any]:
        return metrics_event(self.namespace.name, self.ready(), self.step, self.timestamp, self.seq, self.epoch)


class Artifact:
    """A file or folder worth keeping. ``staged`` is a hard-linked copy that outlives the original."""

    __slots__ = ("seq", "path", "name", "kind", "metadata", "step", "timestamp", "staged")

    def __init__(self, seq: int, path: Path, name: str, kind: str, metadata: dict[str, Any], step: int,
                 timestamp: float, staged: Path | None = None):
        self.seq, self.path, self.name, self.kind, self.metadata = seq, path, name, kind, metadata
        self.step, self.timestamp, self.staged = step, timestamp, staged

    def kwargs(self) -> dict[str, Any]:
        readable = self.path if self.staged is None or self.path.exists() else self.staged
        return {"path": readable, "name": self.name, "kind": self.kind, "metadata": self.metadata,
                "step": self.step, "timestamp": self.timestamp, "seq": self.seq}

    def event(self) -> dict[str, Any]:
        return artifact_event(self.path, self.name, self.kind, self.metadata, self.step, self.timestamp, self.seq)

    def summary(self) -> dict[str, Any]:
        """What a run's summary says of it (``summary["artifacts"][name]``)."""
        return {"path": str(self.path), "kind": self.kind, "step": self.step, "metadata": self.metadata}


def metrics_event(namespace_name: str, metrics: Mapping[str, Any], step: int, timestamp: float, seq: int,
                  epoch: int | None = None) -> dict[str, Any]:
    """The local record's line for a record of metrics (as a hook receives them)."""
    kind = namespace_name if namespace_name in BUILTIN else "metrics"
    out: dict[str, Any] = {"event": kind, "seq": seq, "step": step, "time": timestamp}
    if epoch is not None:
        out["epoch"] = epoch
    if kind == "metrics":
        out["namespace"] = namespace_name
    out["metrics"] = metrics
    return out


def artifact_event(path: Path, name: str, kind: str, metadata: Mapping[str, Any], step: int, timestamp: float,
                   seq: int) -> dict[str, Any]:
    """The local record's line for an artifact."""
    return {"event": "artifact", "seq": seq, "step": step, "time": timestamp, "path": str(path), "name": name,
            "kind": kind, "metadata": dict(metadata)}


def from_event(event: Mapping[str, Any]) -> Record | Artifact | None:
    """The record a local-record event was written for; None for a marker such as ``resume``."""
    kind = event["event"]
    seq, step, when = event.get("seq", 0), event.get("step", 0), event.get("time", 0.0)
    if kind == "artifact":
        return Artifact(seq, Path(event["path"]), event["name"], event["kind"], dict(event.get("metadata") or {}),
                        step, when)
    if kind not in BUILTIN and kind != "metrics":
        return None
    ns = namespace(event["namespace"] if kind == "metrics" else kind)
    record = Record(seq, ns, dict(event["metrics"]), step, when, event.get("epoch"))
    record._ready = record.metrics  # recorded names are namespaced and values plain already
    return record


# -- secrets ---------------------------------------------------------------------------------------
def scrub(value: Any) -> Any:
    """``value`` with every credential masked, at every depth of dicts, lists and tuples.

    A credential is the value of a key with a word ending in key, token, secret or password
    (wandb_api_key, HF_TOKEN, apikey, db_password), or the password in a URL (``https://u:p@h``).
    """
    if isinstance(value, Mapping):
        return {k: MASK if looks_secret(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    if isinstance(value, str) and "@" in value:
        return _URL_PASSWORD.sub(rf"\1{MASK}@", value)
    return value


def looks_secret(key: str) -> bool:
    """Whether ``key`` names a credential: a word of it ends in key, token, secret or password."""
    # Every word of the key, not every key containing a marker: tokenizer, train_tokens and
    # keep_last are hyperparameters.
    return any(word.endswith(SECRET_MARKERS) for word in re.split(r"[^a-z0-9]+", key.lower()))


_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@", re.IGNORECASE)


# -- the run's folder ------------------------------------------------------------------------------
def record_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "trackkit"


def run_json_path(output_dir: str | os.PathLike) -> Path:
    return record_dir(output_dir) / "run.json"


def metrics_path(output_dir: str | os.PathLike) -> Path:
    return record_dir(output_dir) / "metrics.jsonl"


def read_run_json(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's identity, or None where no run was recorded."""
    path = run_json_path(output_dir)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrackkitError(f"{path} is unreadable: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise TrackkitError(f"{path} is not a trackkit run record")
    if not isinstance(record.get("format", 0), int) or record.get("format", 0) > RUN_FORMAT:
        raise TrackkitError(
            f"{path} has format {record['format']}, newer than this trackkit reads ({RUN_FORMAT}); upgrade trackkit"
        )
    return record


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` whole, so that a reader (or a kill -9) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Identity:
    """Who the run is and what it started with: run.json minus its status and health."""

    info: RunInfo
    started_at: float
    trackers: list[str]
    options: dict[str, Any]  # the tracker options the run started with, secrets scrubbed

    @classmethod
    def establish(cls, output_dir: Path, trackers: list[str], options: Mapping[str, Any], *, name: str | None,
                  project: str, run_id: str | None, resume_from_step: int | None, world_size: int) -> Identity:
        """A new run, or the recorded one continued (``resume_from_step``); refuses to mix two runs."""
        previous = read_run_json(output_dir)
        if previous is not None and resume_from_step is None:
            raise TrackkitError(f"{output_dir} already holds run {previous.get('name')!r} "
                                f"({previous.get('status')}); resume it or choose another output directory")
        if previous is not None and run_id is not None and run_id != previous["id"]:
            raise TrackkitError(f"{output_dir} holds run {previous['id']}, not {run_id}: "
                                "refusing to mix two runs in one folder")
        if previous is not None:
            info = RunInfo(name=previous.get("name") or name or output_dir.resolve().name, id=previous["id"],
                           project=previous.get("project", project), dir=output_dir, resumed_from_step=resume_from_step,
                           world_size=world_size, backend_ids=dict(previous.get("backend_ids") or {}))
            return cls(info, previous.get("started_at") or time.time(), trackers, scrub(dict(options)))
        info = RunInfo(name=name or output_dir.resolve().name, id=run_id or secrets.token_hex(4), project=project,
                       dir=output_dir, resumed_from_step=resume_from_step, world_size=world_size)
        return cls(info, time.time(), trackers, scrub(dict(options)))

    def write(self, status: str, health: Mapping[str, Any] | None = None) -> None:
        """Write run.json; a folder that cannot hold it is a TrackkitError naming it."""
        info = self.info
        data = {
            "format": RUN_FORMAT, "name": info.name, "id": info.id, "project": info.project, "status": status,
            "trackers": self.trackers, "options": self.options, "backend_ids": dict(info.backend_ids),
            "started_at": self.started_at, "updated_at": time.time(), "resumed_from_step": info.resumed_from_step,
            "world_size": info.world_size,
        }
        if health is not None:
            data["tracker_health"] = dict(health)
        try:
            write_json_atomic(run_json_path(info.dir), data)
        except OSError as exc:
            raise TrackkitError(f"cannot write the run's record in {info.dir}: {exc.strerror or exc}") from None


def last_seq(output_dir: str | os.PathLike) -> int:
    """The highest record number in the local record (0 where there is none), read off its end."""
    path = metrics_path(output_dir)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(tail):
        try:
            seq = json.loads(line).get("seq")
        except (ValueError, AttributeError):
            continue  # a line torn by a kill, or the cut-off start of the tail
        if isinstance(seq, int):
            return seq
    return 0
