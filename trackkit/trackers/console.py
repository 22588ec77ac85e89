"""Console lines in English or Chinese, a start banner, a final summary table.

    step    250 | epoch  1/10 | batch  125/500 | loss 4.2345 | ppl  68.45 | lr 8.5e-05 | time 1.23s
    步骤    250 | 轮次  1/10 | 批次  125/500 | 损失 4.2345 | 困惑度  68.45 | 学习率 8.5e-05 | 用时 1.23s

The epoch and batch totals come from the config keys ``num_epochs`` and ``batches_per_epoch``;
the batch position from ``train/batch``. A part whose value was not logged is left out.

Lines are written in one piece at each flush (about once a second): a stream that is watched
(wandb captures the console, a pipe wakes its reader) then pays once per flush, not per line.
"""
from __future__ import annotations

import locale
import os
import sys

import click

from ..hookspecs import hookimpl

TEXT = {
    "en": {
        "step": "step", "epoch": "epoch", "batch": "batch", "loss": "loss", "ppl": "ppl", "lr": "lr",
        "time": "time", "eval_header": "--- Evaluation at step {step} ---",
        "eval_done": "Evaluation done - avg loss: {loss:.4f}, perplexity: {ppl:.2f}",
        "epoch_done": "Epoch {epoch}{total} done - train loss: {train_loss:.4f}, val loss: {val_loss:.4f}, "
                      "val perplexity: {val_ppl:.2f}",
        "start": "Run {name} ({id}) -> {dir}", "resume": "Resuming from step {step}",
        "world": "processes: {n}", "config": "Config", "summary": "Run {name} finished: {status}",
        "tracker": "tracker {name}: {state}, {delivered} delivered, {lost} lost", "artifact": "Saved {kind} {name}: {path}",
    },
    "zh": {
        "step": "步骤", "epoch": "轮次", "batch": "批次", "loss": "损失", "ppl": "困惑度", "lr": "学习率",
        "time": "用时", "eval_header": "--- 第 {step} 步评估 ---",
        "eval_done": "评估完成 - 平均损失: {loss:.4f}, 困惑度: {ppl:.2f}",
        "epoch_done": "第 {epoch}{total} 轮完成 - 训练损失: {train_loss:.4f}, 验证损失: {val_loss:.4f}, "
                      "验证困惑度: {val_ppl:.2f}",
        "start": "运行 {name} ({id}) -> {dir}", "resume": "从第 {step} 步继续",
        "world": "进程数: {n}", "config": "配置", "summary": "运行 {name} 结束: {status}",
        "tracker": "记录器 {name}: {state}, 已送达 {delivered}, 丢失 {lost}", "artifact": "已保存 {kind} {name}: {path}",
    },
}


def default_lang() -> str:
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(var):
            return "zh" if os.environ[var].lower().startswith("zh") else "en"
    return "zh" if (locale.getlocale()[0] or "").lower().startswith("zh") else "en"


class ConsoleTracker:
    options = [
        click.Option(
            ["--console-lang", "console_lang"], type=click.Choice(["en", "zh"]), default=None,
            help="Language of the console lines (default: from the locale).",
        )
    ]

    def __init__(self, console_lang: str | None = None, stream=None):
        self.text = TEXT[console_lang or default_lang()]
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

    @hookimpl
    def trackkit_start(self, run, config):
        t = self.text
        self.num_epochs = config.get("num_epochs")
        self.batches_per_epoch = config.get("batches_per_epoch")
        self.run_name = run.name
        self._print(t["start"].format(name=run.name, id=run.id, dir=run.dir))
        if run.resumed:
            self._print(t["resume"].format(step=run.resumed_from_step))
        if run.world_size > 1:
            self._print(t["world"].format(n=run.world_size))
        if config:
            self._print(t["config"] + ":")
            width = max(len(k) for k in config)
            for key in sorted(config):
                self._print(f"  {key:<{width}}  {config[key]}")
        self._write_out()

    @hookimpl
    def trackkit_log_train(self, metrics, step):
        t, m = self.text, metrics
        parts = [f"{t['step']} {step:6d}"]
        if "train/epoch" in m:
            total = f"/{self.num_epochs}" if self.num_epochs else ""
            parts.append(f"{t['epoch']} {int(m['train/epoch']):2d}{total}")
        if "train/batch" in m:
            total = f"/{self.batches_per_epoch}" if self.batches_per_epoch else ""
            parts.append(f"{t['batch']} {int(m['train/batch']):4d}{total}")
        if "train/loss" in m:
            parts.append(f"{t['loss']} {m['train/loss']:.4f}")
        if "train/perplexity" in m:
            parts.append(f"{t['ppl']} {m['train/perplexity']:6.2f}")
        if "train/learning_rate" in m:
            parts.append(f"{t['lr']} {m['train/learning_rate']:.1e}")
        if "train/elapsed_time" in m:
            parts.append(f"{t['time']} {m['train/elapsed_time']:.2f}s")
        self._print(" | ".join(parts))
        if self.progress and "train/batch" in m and self.batches_per_epoch:
            done = int(m["train/batch"]) / self.batches_per_epoch
            self.bar = f"[{'#' * int(30 * done):<30}] {done:4.0%}"

    @hookimpl
    def trackkit_log_eval(self, metrics, step):
        self._print(self.text["eval_header"].format(step=step))
        if "eval/loss" in metrics:
            loss = metrics["eval/loss"]
            ppl = metrics.get("eval/perplexity", float("nan"))
            self._print(self.text["eval_done"].format(loss=loss, ppl=ppl))

    @hookimpl
    def trackkit_log_epoch(self, metrics, epoch, step):
        nan = float("nan")
        self._print(self.text["epoch_done"].format(
            epoch=epoch, total=f"/{self.num_epochs}" if self.num_epochs else "",
            train_loss=metrics.get("epoch/train_loss", nan), val_loss=metrics.get("epoch/val_loss", nan),
            val_ppl=metrics.get("epoch/val_perplexity", nan),
        ))

    @hookimpl
    def trackkit_log_artifact(self, path, name, kind):
        self._print(self.text["artifact"].format(kind=kind, name=name, path=path))

    @hookimpl
    def trackkit_flush(self):
        self._write_out()

    @hookimpl
    def trackkit_finish(self, status, summary):
        t = self.text
        self._print(t["summary"].format(name=self.run_name, status=status))
        final = summary.get("final", {})
        if final:
            width = max(len(k) for k in final)
            for key, value in final.items():
                shown = f"{value:.4f}" if isinstance(value, float) else value
                self._print(f"  {key:<{width}}  {shown}")
        for name, health in summary.get("trackers", {}).items():
            self._print("  " + t["tracker"].format(name=name, **health))
        self.bar = ""
        self._write_out()
