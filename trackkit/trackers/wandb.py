"""The wandb tracker: online, offline or falling back to offline; one step axis per namespace.

- Every namespace ``<ns>/*`` is plotted against ``<ns>/step``, the global step, which the tracker
  adds to each row (wandb's ``define_metric``): a namespace never loses points to another's step,
  and every backend has each record at the same step. Each row's ``_timestamp`` is the log call's.
- ``final/*`` go to the run summary, the config to the run config; each kept artifact (the best
  checkpoint: path, step, metrics) to the summary as ``artifact/<name>``.
- Offline runs live in ``<output_dir>/wandb``; ``trackkit sync <output_dir>`` uploads them.
- Online without an API key, or with a server that cannot be reached, the run switches to
  offline within ``--wandb-init-timeout`` seconds and says so once. Records wait in the
  tracker's queue meanwhile, so the offline run holds every metric from the first step.
- Resume: the wandb run id lives in run.json (``backend_ids["wandb"]``). A resumed run continues
  that wandb run and skips every record whose step wandb already holds. Records up to the
  checkpoint that wandb lacks (wandb-core writes its file every few seconds, so a ``kill -9``
  soon after a checkpoint loses its last ones) are sent again from the local record.
- A ``run.log`` hands a row to wandb's own process (wandb-core), which does the network: nothing
  here waits on the server but the start (``--wandb-init-timeout``) and the end (``--backend-timeout``).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import string
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from .. import messages
from ..errors import TrackkitError
from ..hookspecs import hookimpl
from ..messages import notice
from ..namespaces import namespace
from ..reading import read_events
from ..record import Record, from_event, record_dir
from ..report import report
from ..runinfo import RunInfo
from ..wandb_files import is_step_axis, last_steps

EXIT_CODES = {"success": 0, "failed": 1, "interrupted": 130}  # 130: what a shell reports for Ctrl-C
PROBE_TIMEOUT = 5.0  # seconds to wait for any answer from the wandb server
TEARDOWN_RESERVE = 5.0  # seconds a failed online start takes to let go of its run
INITIALISED = {"en": "wandb initialised", "zh": "wandb初始化成功"}  # the guide's first line


class WandbTracker:
    requires = ("wandb",)
    options = [
        click.Option(
            ["--wandb-project", "--wandb_project", "wandb_project"], metavar="NAME",
            help="W&B project (default: $WANDB_PROJECT, else the run's project).",
        ),
        click.Option(["--wandb-entity", "--wandb_entity", "wandb_entity"], metavar="NAME", help="W&B team or user."),
        click.Option(
            ["--wandb-run-name", "--wandb_run_name", "wandb_run_name"], metavar="NAME",
            help="W&B run name (default: the run's name).",
        ),
        click.Option(
            ["--wandb-tags", "--wandb_tags", "wandb_tags"], metavar="A,B", help="Comma-separated W&B run tags."
        ),
        click.Option(["--wandb-group", "--wandb_group", "wandb_group"], metavar="NAME", help="W&B run group."),
        click.Option(
            ["--wandb-log-model", "--wandb_log_model", "wandb_log_model"], is_flag=True,
            help="Upload checkpoints logged as kind 'model' (the best checkpoint) as W&B artifacts.",
        ),
        click.Option(
            ["--wandb-init-timeout", "--wandb_init_timeout", "wandb_init_timeout"], type=click.FloatRange(min=1),
            default=30.0, show_default=True, metavar="SECONDS",
            help="Online: switch to offline when W&B cannot be reached within this time.",
        ),
    ]

    def __init__(self, wandb_project: str | None = None, wandb_entity: str | None = None,
                 wandb_run_name: str | None = None, wandb_tags: str | Sequence[str] | None = None,
                 wandb_group: str | None = None, wandb_log_model: bool = False, wandb_init_timeout: float = 30.0,
                 offline: bool | None = None, backend_timeout: float = 10.0):
        self.project = wandb_project or os.environ.get("WANDB_PROJECT")  # else the run's project
        self.entity = wandb_entity
        self.run_name = wandb_run_name
        if isinstance(wandb_tags, str):
            wandb_tags = wandb_tags.split(",")
        self.tags = [t.strip() for t in wandb_tags or () if t.strip()]
        self.group = wandb_group
        self.log_model = wandb_log_model
        self.init_timeout = wandb_init_timeout
        mode = os.environ.get("WANDB_MODE", "").lower()  # wandb's own switch; --offline is every backend's
        self.disabled = mode == "disabled"
        self.offline = offline if offline is not None else mode in ("offline", "dryrun")
        self.backend_timeout = backend_timeout
        self.wb: Any = None  # the wandb Run, once started
        self.axes: dict[str, str] = {}  # namespace -> its step axis, defined in wandb so far
        self.held: dict[str, float] = {}  # step axis -> the last value wandb already holds (resume)
        self.row = 0  # wandb's _step for the next row

    # -- start: online, offline, or online falling back to offline ---------------------------
    @hookimpl
    def trackkit_start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        import wandb

        previous_id = run.backend_ids.get("wandb")
        self.dir = Path(run.dir)
        self.id = previous_id or _new_id()
        init = dict(
            project=self.project or run.project, entity=self.entity, name=self.run_name or run.name,
            group=self.group, tags=self.tags or None, config=dict(config), dir=str(self.dir), id=self.id,
            resume="allow" if previous_id else None,
            reinit="create_new",  # never finish or hijack a wandb run the user started
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wb = self._init(wandb, init)
        run.backend_ids["wandb"] = self.id
        if previous_id:
            self._continue_after(previous_id)
            if run.resumed_from_step is not None:
                self._send_missing(run.resumed_from_step)

    def _init(self, wandb, init: dict[str, Any]):
        # A backend call that cannot finish gives up within --backend-timeout; wandb-core keeps
        # what it could not send in its run file (``trackkit sync`` uploads it later).
        limits = dict(finish_timeout=self.backend_timeout, x_graphql_timeout_seconds=self.backend_timeout,
                      x_file_stream_timeout_seconds=self.backend_timeout)
        if self.disabled:  # WANDB_MODE=disabled: wandb's no-op run, no files
            return wandb.init(mode="disabled", **init)
        if self.offline:
            wb = wandb.init(mode="offline", settings=wandb.Settings(**limits), **init)
            self._say_initialised(notice("wandb_offline", folder=Path(wb.dir).parent))
            return wb
        deadline = time.monotonic() + self.init_timeout
        url = wandb.setup().settings.base_url
        reason = _unreachable(url, min(PROBE_TIMEOUT, self.init_timeout))
        if reason is not None:
            reason = f"cannot reach {url} ({reason})"
        elif not wandb.login(prompt=False, verify=False):  # prompting would block this thread
            reason = "no API key (set WANDB_API_KEY or run `wandb login`)"
        else:
            # Part of the time left is kept for the teardown after a failed start. wandb greets the
            # user itself (logged in as, the run's link), as the guide shows.
            timeout = max(1.0, deadline - time.monotonic() - TEARDOWN_RESERVE)
            try:
                wb = wandb.init(mode="online", settings=wandb.Settings(init_timeout=timeout, **limits), **init)
                self._say_initialised(notice("wandb_online", name=wb.name, url=wb.url))
                return wb
            except Exception as exc:  # whatever stops the online start, offline keeps every record
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                wandb.teardown()  # the failed run still holds its id in wandb's service process
        self.offline = True
        report("wandb_fallback", reason=reason, folder=self.dir / "wandb", dir=self.dir)
        wb = wandb.init(mode="offline", settings=wandb.Settings(**limits), **init)
        self._say_initialised(notice("wandb_offline", folder=Path(wb.dir).parent))
        return wb

    @staticmethod
    def _say_initialised(where: str) -> None:
        sys.stderr.write(f"{INITIALISED[messages.lang()]}\n{where}\n")
        sys.stderr.flush()

    def _continue_after(self, run_id: str) -> None:
        """Find the last step of every axis wandb already holds, so that nothing is sent twice."""
        self.held = last_steps(self.dir / "wandb", run_id)
        if not self.offline:  # a resumed online run knows its history's last values too
            for key in list(self.wb.summary.keys()):
                value = self.wb.summary.get(key)
                if is_step_axis(key) and isinstance(value, (int, float)):
                    self.held[key] = max(value, self.held.get(key, value))
        self.row = max(int(self.held.get("_step", -1)) + 1, self.wb.step)
        shown = ", ".join(f"{k} <= {v:g}" for k, v in sorted(self.held.items()) if k != "_step")
        if shown:
            report("wandb_holds", id=run_id, shown=shown)

    def _send_missing(self, resumed_from_step: int) -> None:
        """Send what the local record holds up to the checkpoint's step and wandb does not."""
        path = record_dir(self.dir) / "metrics.jsonl"
        if not path.exists():  # no jsonl tracker: nothing to fill from
            return
        row = self.row
        try:
            # The jsonl tracker may be truncating this file right now: it replaces it whole, and
            # both versions hold the same events up to the checkpoint.
            for event in read_events(path):
                record = from_event(event)
                if isinstance(record, Record) and record.step <= resumed_from_step:
                    self._log(record.namespace.name, record.ready(), record.step, record.timestamp)
        except (TrackkitError, KeyError, TypeError, ValueError) as exc:
            report("wandb_fill_failed", error=exc)
        if self.row > row:
            report("wandb_refilled", count=self.row - row, step=resumed_from_step)

    # -- metrics -------------------------------------------------------------------------------
    def _log(self, name: str, metrics: Mapping[str, float], step: int, timestamp: float) -> None:
        axis = self.axes.get(name)
        if axis is None:
            axis = self.axes[name] = namespace(name).axis
            self.wb.define_metric(axis)
            self.wb.define_metric(f"{name}/*", step_metric=axis)
        if axis in self.held and step <= self.held[axis]:
            return  # wandb has this step from before the resume
        # An explicit _step keeps rows of a resumed offline run after those of its first part.
        self.wb.log({**metrics, axis: step, "_timestamp": timestamp}, step=self.row, commit=True)
        self.row += 1

    @hookimpl
    def trackkit_log_metrics(self, namespace: str, metrics: Mapping[str, float], step: int, timestamp: float) -> None:
        self._log(namespace, metrics, step, timestamp)
        if namespace == "final":
            self.wb.summary.update(dict(metrics))

    @hookimpl
    def trackkit_log_artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any], step: int) -> None:
        # Which checkpoint is best (and where) goes to the summary always; its files only with --wandb-log-model.
        self.wb.summary[f"artifact/{name}"] = {"path": str(path), "kind": kind, "step": step,
                                               "metadata": json.loads(json.dumps(dict(metadata), default=str))}
        if kind != "model" or not self.log_model:
            return
        if not path.exists():  # a trainer may replace its best checkpoint before this thread gets to it
            report("wandb_gone", kind=kind, name=name, path=path)
            return
        import wandb

        # wandb wants JSON metadata; names of letters, digits, - _ . and no / or : in aliases.
        artifact = wandb.Artifact(
            f"model-{self.id}", type="model", metadata=json.loads(json.dumps(dict(metadata), default=str))
        )
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.wb.log_artifact(artifact, aliases=["latest", re.sub(r"[/:]", "-", name)])

    # -- finish ----------------------------------------------------------------------------------
    @hookimpl
    def trackkit_finish(self, status: str) -> None:
        if self.wb is None:
            return
        self.wb.finish(exit_code=EXIT_CODES[status])
        if self.offline and not self.disabled:
            report("wandb_saved", folder=self.dir / "wandb", dir=self.dir)


def _new_id() -> str:
    """A run id like wandb's own: 8 base-36 characters."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _unreachable(url: str, timeout: float) -> str | None:
    """Why ``url`` cannot be reached, or None where it answers at all (proxy settings honoured)."""
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:  # an HTTP error status is still an answer
        return None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):  # certificates are wandb's to judge, with its settings
            return None
        return str(exc.reason)
    except (OSError, ValueError) as exc:  # a timeout, a reset, a malformed URL
        return str(exc) or type(exc).__name__
    return None
