"""The wandb tracker: online, offline or falling back to offline; one step axis per namespace.

- ``train/*`` is plotted against ``train/step``, ``eval/*`` against ``eval/step``, ``epoch/*``
  against ``epoch/number`` and any other namespace ``<ns>/*`` against ``<ns>/step`` (wandb's
  define_metric), so a namespace never loses points to another one's step.
- ``final/*`` and ``eval/best_perplexity`` go to the run summary, the config to the run config.
- Offline runs live in ``<output_dir>/wandb``; ``trackkit sync <output_dir>`` uploads them.
- Online without an API key, or with a server that cannot be reached, the run switches to
  offline within ``--wandb-init-timeout`` seconds and says so once. Records wait in the
  tracker's queue meanwhile, so the offline run holds every metric from the first step.
- Resume: the wandb run id lives in run.json (``backend_ids["wandb"]``). A resumed run continues
  that wandb run and skips every record whose step wandb already holds. Records up to the
  checkpoint that wandb lacks (wandb-core writes its file every few seconds, so a ``kill -9``
  soon after a checkpoint loses its last ones) are sent again from the local record.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import string
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import TrackkitError
from ..hookspecs import hookimpl
from ..reading import read_events
from ..record import hook_call, record_dir
from ..report import report
from ..runinfo import RunInfo
from ..wandb_files import is_step_axis, last_steps

DEFAULT_PROJECT = "gpt-pretrain"
EXIT_CODES = {"success": 0, "failed": 1, "interrupted": 130}  # 130: what a shell reports for Ctrl-C
AXES = {"train": "train/step", "eval": "eval/step", "epoch": "epoch/number"}  # other namespaces: <ns>/step
PROBE_TIMEOUT = 5.0  # seconds to wait for any answer from the wandb server
TEARDOWN_RESERVE = 5.0  # seconds a failed online start takes to let go of its run


class WandbTracker:
    requires = ("wandb",)
    options = [
        click.Option(
            ["--wandb-project", "--wandb_project", "wandb_project"], metavar="NAME",
            help=f"W&B project (default: $WANDB_PROJECT, else {DEFAULT_PROJECT}).",
        ),
        click.Option(["--wandb-entity", "--wandb_entity", "wandb_entity"], metavar="NAME", help="W&B team or user."),
        click.Option(
            ["--wandb-run-name", "--wandb_run_name", "wandb_run_name"], metavar="NAME",
            help="W&B run name (default: the run's name, i.e. its output folder's name).",
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

    def __init__(
        self,
        wandb_project: str | None = None,
        wandb_entity: str | None = None,
        wandb_run_name: str | None = None,
        wandb_tags: str | Sequence[str] | None = None,
        wandb_group: str | None = None,
        wandb_log_model: bool = False,
        wandb_init_timeout: float = 30.0,
        offline: bool | None = None,
    ):
        self.project = wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity = wandb_entity
        self.run_name = wandb_run_name
        if isinstance(wandb_tags, str):
            wandb_tags = wandb_tags.split(",")
        self.tags = [t.strip() for t in wandb_tags or () if t.strip()]
        self.group = wandb_group
        self.log_model = wandb_log_model
        self.init_timeout = wandb_init_timeout
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun")
        self.offline = offline
        self.wb = None  # the wandb Run, once started
        self.axes = dict(AXES)  # namespace -> its step axis, with namespaces seen so far
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
            project=self.project, entity=self.entity, name=self.run_name or run.name, group=self.group,
            tags=self.tags or None, config=dict(config), dir=str(self.dir), id=self.id,
            resume="allow" if previous_id else None,
            reinit="create_new",  # never finish or hijack a wandb run the user started
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wb = self._init(wandb, init)
        run.backend_ids["wandb"] = self.id
        for namespace, axis in AXES.items():
            self._define(namespace, axis)
        if previous_id:
            self._continue_after(previous_id)
            self._send_missing(run.resumed_from_step)

    def _init(self, wandb, init: dict[str, Any]):
        if self.offline:
            return wandb.init(mode="offline", **init)
        deadline = time.monotonic() + self.init_timeout
        url = wandb.setup().settings.base_url
        reason = _unreachable(url, min(PROBE_TIMEOUT, self.init_timeout))
        if reason is not None:
            reason = f"cannot reach {url} ({reason})"
        elif not wandb.login(prompt=False, verify=False):  # prompting would block this thread
            reason = "no API key (set WANDB_API_KEY or run `wandb login`)"
        else:
            # quiet: otherwise wandb greets the user with a server query outside init_timeout.
            # Part of the time left is kept for the teardown after a failed start.
            timeout = max(1.0, deadline - time.monotonic() - TEARDOWN_RESERVE)
            try:
                wb = wandb.init(mode="online", settings=wandb.Settings(init_timeout=timeout, quiet=True), **init)
                report(f"wandb: run {wb.name} at {wb.url}")  # quiet leaves the link out
                return wb
            except Exception as exc:  # whatever stops the online start, offline keeps every record
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                wandb.teardown()  # the failed run still holds its id in wandb's service process
        self.offline = True
        report(
            f"wandb: {reason}; continuing offline in {self.dir / 'wandb'} "
            f"(upload later with `trackkit sync {self.dir}`)"
        )
        return wandb.init(mode="offline", **init)

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
            report(f"wandb: run {run_id} already holds {shown}; records up to there are not sent again")

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
                if event["event"] in ("train", "eval", "epoch", "metrics") and event["step"] <= resumed_from_step:
                    hook, kwargs = hook_call(event)
                    getattr(self, hook)(**kwargs)
        except TrackkitError as exc:
            report(f"wandb: cannot fill records it lacks from the local record: {exc}")
        if self.row > row:
            report(f"wandb: sent {self.row - row} records up to step {resumed_from_step} again from the local record")

    def _define(self, namespace: str, axis: str) -> None:
        self.wb.define_metric(axis)
        self.wb.define_metric(f"{namespace}/*", step_metric=axis)

    # -- metrics -------------------------------------------------------------------------------
    def _log(self, namespace: str, metrics: Mapping[str, float], position: int) -> None:
        axis = self.axes.get(namespace)
        if axis is None:
            axis = self.axes[namespace] = f"{namespace}/step"
            self._define(namespace, axis)
        if axis in self.held and position <= self.held[axis]:
            return  # wandb has this step from before the resume
        # An explicit _step keeps rows of a resumed offline run after those of its first part.
        self.wb.log({**metrics, axis: position}, step=self.row, commit=True)
        self.row += 1

    @hookimpl
    def trackkit_log_train(self, metrics: Mapping[str, float], step: int) -> None:
        self._log("train", metrics, step)

    @hookimpl
    def trackkit_log_eval(self, metrics: Mapping[str, float], step: int) -> None:
        self._log("eval", metrics, step)
        if "eval/best_perplexity" in metrics:
            self.wb.summary["eval/best_perplexity"] = metrics["eval/best_perplexity"]

    @hookimpl
    def trackkit_log_epoch(self, metrics: Mapping[str, float], epoch: int, step: int) -> None:
        self._log("epoch", metrics, epoch)

    @hookimpl
    def trackkit_log_metrics(self, namespace: str, metrics: Mapping[str, float], step: int) -> None:
        self._log(namespace, metrics, step)

    @hookimpl
    def trackkit_log_final(self, metrics: Mapping[str, float]) -> None:
        self.wb.summary.update(dict(metrics))

    @hookimpl
    def trackkit_log_artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any]) -> None:
        if kind != "model" or not self.log_model:
            return
        if not path.exists():  # a trainer may replace its best checkpoint before this thread gets to it
            report(f"wandb: {kind} {name!r} was gone from {path} before it could be uploaded (skipped)")
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
        if self.offline:
            report(f"wandb: offline run saved in {self.dir / 'wandb'}; upload it with: trackkit sync {self.dir}")


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
