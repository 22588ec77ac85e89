"""Console lines in English or Chinese, a start banner, a final summary.

    step    250 | epoch  1/10 | batch  125/500 | loss 4.2345 | ppl  68.45 | lr 8.5e-05 | time 1.23s
    步骤    250 | 轮次  1/10 | 批次  125/500 | 损失 4.2345 | 困惑度  68.45 | 学习率 8.5e-05 | 用时 1.23s

A training line is the step, then the record's metrics: by default every one, in the order
logged (a loop that logs only ``loss`` gets ``step 10 | loss 2.3456``). A program decides the
line with two options it passes to ``trackkit.start``: ``console_fields``, the metric names to
show and their order, and ``console_totals``, a total for any of them, shown as ``value/total``
(the reference trainer passes ``{"epoch": <epochs>, "batch": <steps per epoch>}``). The contract's
metric names get the guide's labels and formats; any other shows its own name.

Lines are written in one piece at each flush (about once a second): a stream that is watched
(wandb captures the console, a pipe wakes its reader) then pays once per flush, not per line.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .. import messages
from ..hookspecs import hookimpl
from ..runinfo import RunInfo

FORMATS = {"epoch": "{:2d}", "batch": "{:4d}", "loss": "{:.4f}", "perplexity": "{:6.2f}",
           "learning_rate": "{:.1e}", "elapsed_time": "{:.2f}s"}


class ConsoleTracker:
    # --console-lang is the layer's (options.py): it sets the language of every line trackkit prints.
    def __init__(self, console_lang: str | None = None, console_fields: Sequence[str] | None = None,
                 console_totals: Mapping[str, int] | None = None, stream=None):
        lang = console_lang or messages.lang()
        self.text, self.labels = messages.TEXT[lang], messages.LABELS[lang]
        self.fields = list(console_fields) if console_fields is not None else None
        self.totals = dict(console_totals or {})
        self.out = stream or sys.stdout
        self.progress = self.out.isatty()
        self.lines: list[str] = []  # written at the next flush
        self.bar = ""  # the progress bar's latest state, drawn below the lines on a terminal
        self.bar_shown = False

    def _print(self, line: str) -> None:
        self.lines.append(line + "\n")

    def _write_out(self) -> None:
        if not self.lines and not self.bar:
            return
        erase = "\r\033[K" if self.bar_shown else ""  # the bar goes below the new lines, or away
        self.out.write(erase + "".join(self.lines) + self.bar)
        self.out.flush()
        self.lines.clear()
        self.bar_shown, self.bar = bool(self.bar), ""

    def _value(self, name: str, value: float | int) -> str:
        fmt = FORMATS.get(name)
        shown = fmt.format(int(value) if "d}" in fmt else value) if fmt else \
            (f"{value:.4g}" if isinstance(value, float) else str(value))
        return f"{shown}/{self.totals[name]}" if name in self.totals else shown

    def _pairs(self, metrics: Mapping[str, float | int], prefix: str, names: Sequence[str] | None) -> list[str]:
        short = {key[len(prefix):]: value for key, value in metrics.items()}
        chosen = names if names is not None else [n for n in short if n != "step"]
        return [f"{self.labels.get(n, n)} {self._value(n, short[n])}" for n in chosen if n in short]

    @hookimpl
    def trackkit_start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        t = self.text
        self.run_name = run.name
        self._print(t["start"].format(name=run.name, id=run.id, dir=run.dir))
        if run.resumed_from_step is not None:
            self._print(t["resume"].format(step=run.resumed_from_step))
        if run.world_size > 1:
            self._print(t["world"].format(n=run.world_size))
        if config:
            self._print(t["config"] + ":")
            width = max(len(str(k)) for k in config)
            for key in sorted(config, key=str):
                self._print(f"  {key!s:<{width}}  {config[key]}")
        self._write_out()

    @hookimpl
    def trackkit_log_train(self, metrics: Mapping[str, float | int], step: int) -> None:
        parts = [f"{self.labels['step']} {step:6d}", *self._pairs(metrics, "train/", self.fields)]
        self._print(" | ".join(parts))
        bar = next((n for n in reversed(self.fields or []) if n in self.totals and f"train/{n}" in metrics), None)
        if self.progress and bar is not None and self.totals[bar]:
            done = min(1.0, metrics[f"train/{bar}"] / self.totals[bar])
            self.bar = f"[{'#' * int(30 * done):<30}] {done:4.0%}"

    @hookimpl
    def trackkit_log_eval(self, metrics: Mapping[str, float | int], step: int) -> None:
        self._print(self.text["eval_header"].format(step=step))
        if "eval/loss" in metrics and "eval/perplexity" in metrics:
            self._print(self.text["eval_done"].format(loss=metrics["eval/loss"], ppl=metrics["eval/perplexity"]))
        else:
            self._print(self.text["eval_other"].format(values=", ".join(self._pairs(metrics, "eval/", None))))

    @hookimpl
    def trackkit_log_epoch(self, metrics: Mapping[str, float | int], epoch: int) -> None:
        total = f"/{self.totals['epoch']}" if "epoch" in self.totals else ""
        wanted = ("epoch/train_loss", "epoch/val_loss", "epoch/val_perplexity")
        if all(k in metrics for k in wanted):
            train_loss, val_loss, val_ppl = (metrics[k] for k in wanted)
            self._print(self.text["epoch_done"].format(epoch=epoch, total=total, train_loss=train_loss,
                                                       val_loss=val_loss, val_ppl=val_ppl))
        else:
            values = ", ".join(self._pairs(metrics, "epoch/", None))
            self._print(self.text["epoch_other"].format(epoch=epoch, total=total, values=values))

    @hookimpl
    def trackkit_log_artifact(self, path, name: str, kind: str) -> None:
        self._print(self.text["artifact"].format(kind=kind, name=name, path=path))

    @hookimpl
    def trackkit_flush(self) -> None:
        self._write_out()

    @hookimpl
    def trackkit_finish(self, status: str, summary: Mapping[str, Any]) -> None:
        t = self.text
        self._print(t["summary"].format(name=getattr(self, "run_name", "?"), status=t["status"].get(status, status)))
        final = summary.get("final", {})
        if final:
            width = max(len(k) for k in final)
            for key, value in final.items():
                shown = f"{value:.4f}" if isinstance(value, float) else value
                self._print(f"  {key:<{width}}  {shown}")
        for name, artifact in summary.get("artifacts", {}).items():
            self._print("  " + t["kept"].format(name=name, **artifact))
        for name, health in summary.get("trackers", {}).items():
            self._print("  " + t["tracker"].format(name=name, **{**health, "state": t["state"].get(health["state"],
                                                                                                  health["state"])}))
        self.bar = ""
        self._write_out()
