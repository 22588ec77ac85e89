"""TensorBoard event files in ``<output_dir>/tensorboard`` (``--tensorboard-dir`` to change it).

- Scalars: ``train/*``, ``eval/*``, ``system/*`` and custom namespaces against the global step;
  ``epoch/*`` against the epoch number, with ``epoch/step`` (the global step the epoch ended at)
  added to them; ``final/*`` at the last step.
- HParams dashboard: the config as this run's hyperparameters, with the ``final/*`` metrics as
  its metric columns; the config also as a markdown table in the Text dashboard (tag ``config``).
- Resume: the event files of the interrupted run are rewritten into this run's new file without
  anything logged after the checkpoint's step, so no tag has a step twice. Epoch scalars are
  judged by their ``epoch/step``, not by the epoch number they are plotted against.

The tracker writes only files whose names end in ``.trackkit``; other event files in the folder
(a SummaryWriter of your own, say) are read by TensorBoard as usual and never touched.
"""
from __future__ import annotations

import importlib
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
    # or flush timer to fight the layer's trackkit_flush, and resuming needs a rewrite of the old event files that SummaryWriter's
    # purge_step cannot do (see _kept_records).
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
        self._file = None
        self._last_step = 0
        self._hparams: dict[str, bool | int | float | str] = {}
        self._final_tags: dict[str, None] = {}  # in the order logged

    @hookimpl
    def trackkit_start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self.dir = Path(self._dir_option) if self._dir_option else Path(run.dir) / "tensorboard"
        old_files = self._old_files()
        if old_files and not run.resumed:
            raise TrackkitError(
                f"{self.dir} already holds TensorBoard events of another run ({old_files[0].name}); "
                "choose another --tensorboard-dir or remove them"
            )
        kept = list(_kept_records(old_files, run.resumed_from_step, event_pb2)) if run.resumed else []
        path = self.dir / (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{run.id}"
        )
        try:
            self._file = _create(path)
        except OSError as exc:
            raise TrackkitError(f"cannot write TensorBoard events to {self.dir}: {exc.strerror or exc}") from None
        self._writer = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        for record in kept:
            self._writer.write(record)
        self._file.flush()
        # Everything worth keeping is in the new file now. (A kill in the moment between the
        # flush and the unlinks would leave the kept records twice; the window is microseconds.)
        for old in old_files:
            old.unlink()
        self._last_step = run.resumed_from_step or 0
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
        from tensorboard.plugins.text import metadata as text_metadata
        from tensorboard.util import tensor_util

        if config:
            rows = "".join(f"| {k} | {_cell(v)} |\n" for k, v in sorted(config.items()))
            text = self._summary_pb2.Summary()
            text.value.add(
                tag=CONFIG_TAG,
                metadata=text_metadata.create_summary_metadata(display_name="config", description=""),
                tensor=tensor_util.make_tensor_proto("| key | value |\n| --- | --- |\n" + rows),
            )
            self._write_summary(text, step=0)
        # The original start time, kept across resumes; run.json is written before trackers start.
        started_at = (read_run_json(run.dir) or {}).get("started_at")
        # The trial id names the row in the HParams table (the default is a hash of the values).
        self._write_summary(hp.hparams_pb(self._hparams, trial_id=run.name, start_time_secs=started_at), step=0)

    # -- writing -------------------------------------------------------------------------------
    def _write(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def _write_summary(self, summary, step: int) -> None:
        self._write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _write_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """One event per call, every metric a value of it: a fifth of the framing of one per tag."""
        Value = self._summary_pb2.Summary.Value
        summary = self._summary_pb2.Summary(value=[Value(tag=k, simple_value=v) for k, v in metrics.items()])
        self._write_summary(summary, step)

    def _at_step(self, metrics: Mapping[str, float], step: int) -> None:
        self._last_step = max(self._last_step, step)
        self._write_scalars(metrics, step)

    # -- hooks ---------------------------------------------------------------------------------
    @hookimpl
    def trackkit_log_train(self, metrics: Mapping[str, float], step: int) -> None:
        self._at_step(metrics, step)

    @hookimpl
    def trackkit_log_eval(self, metrics: Mapping[str, float], step: int) -> None:
        self._at_step(metrics, step)

    @hookimpl
    def trackkit_log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._at_step(metrics, step)

    @hookimpl
    def trackkit_log_epoch(self, metrics: Mapping[str, float], epoch: int, step: int) -> None:
        self._last_step = max(self._last_step, step)
        # epoch/step is what a resume judges the event by; its own step is the epoch number.
        self._write_scalars({**metrics, "epoch/step": metrics.get("epoch/step", step)}, epoch)

    @hookimpl
    def trackkit_log_final(self, metrics: Mapping[str, float]) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hp

        self._write_scalars(metrics, self._last_step)
        self._final_tags.update(dict.fromkeys(metrics))
        # The experiment makes the HParams dashboard show the config keys with exactly the final
        # metrics as columns (without it, every scalar tag of the run becomes a column). Its
        # hparams have no domain on purpose: a domain taken from this run's values would filter
        # other runs out of the table when several are viewed together.
        experiment = hp.hparams_config_pb(
            hparams=[hp.HParam(k) for k in sorted(self._hparams)], metrics=[hp.Metric(k) for k in self._final_tags]
        )
        self._write_summary(experiment, step=0)

    @hookimpl
    def trackkit_flush(self) -> None:
        # Called by the layer about once a second while records arrive: a live TensorBoard sees
        # them within seconds, without a write to the disk per record.
        self._file.flush()

    @hookimpl
    def trackkit_finish(self) -> None:
        if self._file is not None:  # None when the start failed
            self._file.close()
            self._file = None


def _create(path: Path) -> BinaryIO:
    """A new event file; the name gets a counter where a file of this second already has it."""
    for n in range(1000):
        candidate = path.with_name(f"{path.name}.{n}{SUFFIX}")
        try:
            return open(candidate, "xb")
        except FileExistsError:
            continue
    raise FileExistsError(f"no free event file name like {path}")


def _kept_records(files: list[Path], resumed_from_step: int, event_pb2) -> Iterator[bytes]:
    """The records of ``files`` that a run resumed from ``resumed_from_step`` keeps, as written.

    Scalars logged at a step up to the checkpoint's are kept (epoch scalars by their epoch/step);
    the file header, config, hparams and final/* are dropped: the resumed run writes its own.
    A record torn by a kill ends the file's reading, as in TensorBoard.
    """
    import numpy as np
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    # epoch/step went through float32 like every scalar; compare it on that grid.
    limit = float(np.float32(resumed_from_step))
    for path in files:
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            if not event.summary.value:
                continue
            tag = event.summary.value[0].tag
            if tag == CONFIG_TAG or tag.startswith((HPARAMS_PREFIX, "final/")):
                continue
            if tag.startswith("epoch/"):
                step = next((v.simple_value for v in event.summary.value if v.tag == "epoch/step"), None)
                if step is not None and step <= limit:
                    yield record
            elif event.step <= resumed_from_step:
                yield record


def _cell(value: Any) -> str:
    """A config value as a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")
