"""wandb's own files in a run directory: reading its run files back, and ``trackkit sync``.

Every wandb run, online or offline, writes ``<output_dir>/wandb/<kind>-<time>-<id>/run-<id>.wandb``
(kind ``run`` or ``offline-run``; a resumed run adds a new folder with the same id). The file is a
LevelDB-style record log: a 7-byte file header (``:W&B``, magic 0xBEE1, version), then 32 KiB
blocks of chunks, each with a header (CRC-32 of type and data, length, type FULL/FIRST/MIDDLE/LAST)
and a piece of one serialized ``wandb_internal_pb2.Record``. wandb 0.31 ships no Python reader for
it, so this module has its own; wandb itself is imported only when a file is read.
"""
from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrackkitError

_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> Iterator[Any]:
    """The ``Record`` messages of a run file, in order.

    Reading stops quietly at a torn or corrupt tail (a killed process), keeping what came before.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < _FILE_HEADER.size:
        return
    ident, magic, _version = _FILE_HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise TrackkitError(f"{path} is not a wandb run file")
    pos, pieces = _FILE_HEADER.size, []
    while pos + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # block trailer: padding, no chunk fits
            pos += left_in_block
            continue
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        chunk = data[pos + _CHUNK_HEADER.size: pos + _CHUNK_HEADER.size + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += _CHUNK_HEADER.size + length
        if kind in (_FULL, _FIRST):
            pieces = [chunk]
        elif kind in (_MIDDLE, _LAST) and pieces:
            pieces.append(chunk)
        else:
            return
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(b"".join(pieces))
            pieces = []
            yield record


@dataclass
class RunFile:
    """What one run file holds, decoded: the parts a test or a resume needs."""

    path: Path
    run_id: str = ""
    resumed: bool = False
    start_time: float = 0.0
    project: str = ""
    tags: list[str] = field(default_factory=list)
    group: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per row, with _step
    summary: dict[str, Any] = field(default_factory=dict)
    step_metrics: dict[str, str] = field(default_factory=dict)  # define_metric: glob or name -> step metric
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # name, type, files
    exit_code: int | None = None


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def read_run_file(path: str | Path) -> RunFile:
    """Decode a ``run-<id>.wandb`` file (see ``read_records``)."""
    run = RunFile(Path(path))
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.resumed, run.project = r.run_id, r.resumed or r.resume, r.project
            run.start_time = r.start_time.seconds + r.start_time.nanos / 1e9
            run.tags, run.group = list(r.tags), r.run_group
            run.config.update({_key(u): json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            run.config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
            for item in record.config.remove:
                run.config.pop(_key(item), None)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
        elif kind == "metric" and record.metric.step_metric:
            run.step_metrics[record.metric.glob_name or record.metric.name] = record.metric.step_metric
        elif kind == "artifact":
            a = record.artifact
            files = [entry.path for entry in a.manifest.contents]
            run.artifacts.append({"name": a.name, "type": a.type, "files": files})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def run_files(wandb_dir: str | Path, run_id: str) -> list[RunFile]:
    """Every local fragment of wandb run ``run_id`` (online and offline), oldest first."""
    found = [read_run_file(p) for p in sorted(Path(wandb_dir).glob(f"*run-*/run-{run_id}.wandb"))]
    return sorted(found, key=lambda run: run.start_time)


def is_step_axis(key: str) -> bool:
    """Whether a history key is a step counter the wandb tracker plots a namespace against."""
    return key == "_step" or key.endswith("/step")


def last_steps(wandb_dir: str | Path, run_id: str) -> dict[str, float]:
    """For each step axis (``<ns>/step``, ``_step``), the largest value in the history of every local
    fragment of ``run_id``."""
    last: dict[str, float] = {}
    for run in run_files(wandb_dir, run_id):
        for row in run.history:
            for key, value in row.items():
                if is_step_axis(key) and isinstance(value, (int, float)):
                    last[key] = max(value, last.get(key, value))
    return last


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline wandb folders of a trackkit run directory, oldest first."""
    wandb_dir = Path(run_dir) / "wandb"
    if not wandb_dir.is_dir():
        raise TrackkitError(f"{run_dir} has no wandb folder (was it run with --tracker wandb?)")
    folders = sorted(p.parent for p in wandb_dir.glob("offline-run-*/run-*.wandb"))
    if not folders:
        raise TrackkitError(f"{wandb_dir} holds no offline wandb runs; online runs are uploaded as they go")
    return folders


def sync(run_dir: str | Path) -> int:
    """Upload a run directory's offline wandb runs with ``wandb sync``; its exit code.

    Fragments of one resumed run share an id; ``wandb sync`` uploads them in order of start time
    and skips folders it has already uploaded.
    """
    folders = offline_runs(run_dir)
    if importlib.util.find_spec("wandb") is None:
        raise TrackkitError("wandb is not installed (pip install 'trackkit[wandb]')")
    return subprocess.call([sys.executable, "-m", "wandb", "sync", *map(str, folders)])
