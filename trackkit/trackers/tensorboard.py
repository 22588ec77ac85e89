"""TensorBoard event files in ``<output_dir>/tensorboard`` (``--tensorboard-dir`` to change it).

- Scalars: every namespace against the global step, at the wall time of the log call; one
  event per record, every metric a value of it.
- HParams dashboard: the config as this run's hyperparameters, with the ``final/*`` metrics as
  its metric columns; the config also as a markdown table in the Text dashboard (tag ``config``),
  and each kept artifact (the best checkpoint: step, path, metrics) as text (tag ``artifact/<name>``).
- Records are framed as they come and written at each flush; a write that fails (a full disk) is
  cut back off the file and tried again at the next flush, so the file never holds half a record.
- Resume: the event files of the interrupted run are rewritten into this run's new file without
  anything logged after the checkpoint's step, and a point at a step a tag already holds is not
  written again (so ``trackkit sync RUN --to tensorboard`` adds only what the folder lacks).

The tracker writes only files whose names end in ``.trackkit``; other event files in the folder
(a SummaryWriter of your own, say) are read by TensorBoard as usual and never touched.
"""
from __future__ import annotations

import importlib
import io
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import click

from ..errors import TrackkitError
from ..hookspecs import hookimpl
from ..record import read_run_json
from ..runinfo import RunInfo

SUFFIX = ".trackkit"
CONFIG_TAG = "config"
ARTIFACT_TAG = "artifact/"
HPARAMS_PREFIX = "_hparams_/"


BACKEND_MODULES = (
    "tensorboard.backend.event_processing.event_file_loader",
    "tensorboard.compat.proto.event_pb2",
    "tensorboard.compat.proto.summary_pb2",
    "tensorboard.plugins.hparams.summary_v2",
    "tensorboard.plugins.text.metadata",
    "tensorboard.summary.writer.record_writer",
    "tensorboard.util.tensor_util",
)


class TensorBoardTracker:
    # Needs the `tensorboard` package alone, not torch.utils.tensorboard.SummaryWriter: the
    # `tensorboard` extra is then all it takes (no torch import, e.g. when replaying a record),
    # records are framed and written on this tracker's own thread with no second writer thread
    # or flush timer to fight the layer's trackkit_flush, and resuming needs a rewrite of the old
    # event files that SummaryWriter's purge_step cannot do (see _kept_records).
    requires = ("tensorboard",)
    options = [
        click.Option(
            ["--tensorboard-dir", "tensorboard_dir"], type=click.Path(file_okay=False), default=None,
            help="Folder for the TensorBoard event files (default: <output-dir>/tensorboard).",
        )
    ]

    def __init__(self, tensorboard_dir: str | os.PathLike | None = None):
        # The `tensorboard` package loads its submodules lazily: import the ones the hooks use
        # now, on the thread that starts the run, not in the hooks on this tracker's thread,
        # where they would race the user's own `from torch.utils.tensorboard import ...`.
        for module in BACKEND_MODULES:
            importlib.import_module(module)
        self._dir_option = tensorboard_dir
        self._file: BinaryIO | None = None
        self._pending = io.BytesIO()  # framed records not yet written
        self._held: dict[str, float] = {}  # tag -> the last step the folder held when this process began
        self._hparams: dict[str, bool | int | float | str] = {}
        self._final_tags: dict[str, None] = {}  # in the order logged

    @hookimpl
    def trackkit_start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self._writer = RecordWriter(self._pending)
        self.dir = Path(self._dir_option) if self._dir_option else Path(run.dir) / "tensorboard"
        old_files = self._old_files()
        if old_files and run.resumed_from_step is None:
            raise TrackkitError(
                f"{self.dir} already holds TensorBoard events of another run ({old_files[0].name}); "
                "choose another --tensorboard-dir or remove them"
            )
        kept = list(_kept_records(old_files, run.resumed_from_step, event_pb2, self._held)) if old_files else []
        path = self.dir / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{run.id}"
        try:
            self._file = _create(path)
        except OSError as exc:
            raise TrackkitError(f"cannot write TensorBoard events to {self.dir}: {exc.strerror or exc}") from None
        self._frame(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        for record in kept:
            self._writer.write(record)
        self.trackkit_flush()
        # Everything worth keeping is in the new file now. (A kill in the moment between the
        # flush and the unlinks would leave the kept records twice; the window is microseconds.)
        for old in old_files:
            old.unlink()
        self._hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
        self._write_config(run, config)

    def _old_files(self) -> list[Path]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            return sorted(p for p in self.dir.iterdir() if "tfevents" in p.name and p.name.endswith(SUFFIX))
        except OSError as exc:
            raise TrackkitError(f"cannot write TensorBoard events to {self.dir}: {exc.strerror or exc}") from None

    def _write_config(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        # summary_v2 is what tensorboard.plugins.hparams.api re-exports; api itself imports
        # TensorFlow (for its Keras callback), which this tracker must not need.
        from tensorboard.plugins.hparams import summary_v2 as hp

        if config:
            rows = "".join(f"| {k} | {_cell(v)} |\n" for k, v in sorted(config.items(), key=lambda kv: str(kv[0])))
            self._text(CONFIG_TAG, "| key | value |\n| --- | --- |\n" + rows, step=0, when=time.time())
        # The original start time, kept across resumes; run.json is written before trackers start.
        started_at = (read_run_json(run.dir) or {}).get("started_at")
        # The trial id names the row in the HParams table (the default is a hash of the values).
        summary = hp.hparams_pb(self._hparams, trial_id=run.name, start_time_secs=started_at)
        self._frame(self._event_pb2.Event(wall_time=time.time(), step=0, summary=summary))

    # -- writing -------------------------------------------------------------------------------
    def _frame(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def _text(self, tag: str, text: str, step: int, when: float) -> None:
        from tensorboard.plugins.text import metadata as text_metadata
        from tensorboard.util import tensor_util

        summary = self._summary_pb2.Summary()
        summary.value.add(tag=tag, metadata=text_metadata.create_summary_metadata(display_name=tag, description=""),
                          tensor=tensor_util.make_tensor_proto(text))
        self._frame(self._event_pb2.Event(wall_time=when, step=step, summary=summary))

    # -- hooks ---------------------------------------------------------------------------------
    @hookimpl
    def trackkit_log_metrics(self, namespace: str, metrics: Mapping[str, float], step: int, timestamp: float) -> None:
        Value = self._summary_pb2.Summary.Value
        values = [Value(tag=k, simple_value=v) for k, v in metrics.items() if step > self._held.get(k, -1)]
        if values:
            summary = self._summary_pb2.Summary(value=values)
            self._frame(self._event_pb2.Event(wall_time=timestamp, step=step, summary=summary))
        if namespace == "final":
            self._final_tags.update(dict.fromkeys(metrics))
            self._hparams_columns()

    def _hparams_columns(self) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hp

        # The experiment makes the HParams dashboard show the config keys with exactly the final
        # metrics as columns (without it, every scalar tag of the run becomes a column). Its
        # hparams have no domain on purpose: a domain taken from this run's values would filter
        # other runs out of the table when several are viewed together.
        experiment = hp.hparams_config_pb(
            hparams=[hp.HParam(k) for k in sorted(self._hparams)], metrics=[hp.Metric(k) for k in self._final_tags]
        )
        self._frame(self._event_pb2.Event(wall_time=time.time(), step=0, summary=experiment))

    @hookimpl
    def trackkit_log_artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any], step: int,
                              timestamp: float) -> None:
        details = "".join(f"| {k} | {_cell(v)} |\n" for k, v in metadata.items())
        text = f"{kind} `{name}` at step {step}: `{path}`\n\n| key | value |\n| --- | --- |\n{details}"
        self._text(ARTIFACT_TAG + name, text, step=step, when=timestamp)

    @hookimpl
    def trackkit_flush(self) -> None:
        # Called by the layer about once a second while records arrive: a live TensorBoard sees
        # them within seconds, without a write to the disk per record.
        assert self._file is not None
        data = self._pending.getbuffer()
        good = self._file.seek(0, os.SEEK_END)
        try:
            while data:
                data = data[self._file.write(data) or 0:]
        except OSError:
            self._file.truncate(good)
            raise
        finally:
            del data  # a BytesIO cannot be resized while a view of it exists
        self._pending.seek(0)
        self._pending.truncate()

    @hookimpl
    def trackkit_finish(self) -> None:
        if self._file is not None:  # None when the start failed
            self._file.close()
            self._file = None


def _create(path: Path) -> BinaryIO:
    """A new event file, unbuffered (the tracker writes whole rounds); a counter where a name is taken."""
    for n in range(1000):
        candidate = path.with_name(f"{path.name}.{n}{SUFFIX}")
        try:
            return open(candidate, "xb", buffering=0)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free event file name like {path}")


def _kept_records(files: list[Path], resumed_from_step: int | None, event_pb2,
                  held: dict[str, float]) -> Iterator[bytes]:
    """The records of ``files`` a resumed run keeps, as written; ``held`` learns each tag's last step.

    Scalars logged at a step up to the checkpoint's are kept; the file header, config, hparams
    and final/* are dropped: the resumed run writes its own. A record torn by a kill ends the
    file's reading, as in TensorBoard.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    limit = resumed_from_step if resumed_from_step is not None else float("inf")
    for path in files:
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            if not event.summary.value:
                continue
            tag = event.summary.value[0].tag
            if tag == CONFIG_TAG or tag.startswith((HPARAMS_PREFIX, "final/")):
                continue
            if event.step <= limit:
                for value in event.summary.value:
                    held[value.tag] = max(held.get(value.tag, -1), event.step)
                yield record


def _cell(value: Any) -> str:
    """A value as a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")
