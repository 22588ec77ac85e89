"""Every line trackkit prints, in English and Chinese.

The language is ``--console-lang`` (``trackkit.start(options={"console_lang": "zh"})``), else
``$TRACKKIT_CONSOLE_LANG``, else the locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``): Chinese for
a ``zh`` locale, English otherwise. The Chinese training lines follow the guide our users come
from word for word (``步骤    250 | 轮次  1/10 | ...``).
"""
from __future__ import annotations

import locale
import os
from typing import Any

LANGUAGES = ("en", "zh")
ENV_LANG = "TRACKKIT_CONSOLE_LANG"

# The console's names for the contract's metrics (namespaces.py); other metrics show their own name.
LABELS = {
    "en": {"step": "step", "epoch": "epoch", "batch": "batch", "loss": "loss", "perplexity": "ppl",
           "learning_rate": "lr", "elapsed_time": "time"},
    "zh": {"step": "步骤", "epoch": "轮次", "batch": "批次", "loss": "损失", "perplexity": "困惑度",
           "learning_rate": "学习率", "elapsed_time": "用时"},
}

TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "eval_header": "--- Evaluation at step {step} ---",
        "eval_done": "Evaluation done - avg loss: {loss:.4f}, perplexity: {ppl:.2f}",
        "eval_other": "Evaluation done - {values}",
        "epoch_done": "Epoch {epoch}{total} done - train loss: {train_loss:.4f}, val loss: {val_loss:.4f}, "
                      "val perplexity: {val_ppl:.2f}",
        "epoch_other": "Epoch {epoch}{total} done - {values}",
        "start": "Run {name} ({id}) -> {dir}", "resume": "Resuming from step {step}",
        "world": "processes: {n}", "config": "Config", "summary": "Run {name} finished: {status}",
        "tracker": "tracker {name}: {state}, {delivered} delivered, {lost} lost",
        "artifact": "Saved {kind} {name}: {path}", "kept": "kept {kind} {name}: {path} (step {step})",
        "status": {"success": "success", "failed": "failed", "interrupted": "interrupted"},
        "state": {"ok": "ok", "failed": "failed", "stalled": "stalled"},
    },
    "zh": {
        "eval_header": "--- 第 {step} 步评估 ---",
        "eval_done": "评估完成 - 平均损失: {loss:.4f}, 困惑度: {ppl:.2f}",
        "eval_other": "评估完成 - {values}",
        "epoch_done": "第 {epoch}{total} 轮完成 - 训练损失: {train_loss:.4f}, 验证损失: {val_loss:.4f}, "
                      "验证困惑度: {val_ppl:.2f}",
        "epoch_other": "第 {epoch}{total} 轮完成 - {values}",
        "start": "运行 {name} ({id}) -> {dir}", "resume": "从第 {step} 步继续",
        "world": "进程数: {n}", "config": "配置", "summary": "运行 {name} 结束: {status}",
        "tracker": "记录器 {name}: {state}, 已送达 {delivered}, 丢失 {lost}",
        "artifact": "已保存 {kind} {name}: {path}", "kept": "保留 {kind} {name}: {path} (第 {step} 步)",
        "status": {"success": "成功", "failed": "失败", "interrupted": "已中断"},
        "state": {"ok": "正常", "failed": "失败", "stalled": "无响应"},
    },
}

_chosen: str | None = None


def default_lang() -> str:
    """``$TRACKKIT_CONSOLE_LANG``, else the locale's language."""
    env = os.environ.get(ENV_LANG, "").strip().lower()
    if env in LANGUAGES:
        return env
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(var):
            return "zh" if os.environ[var].lower().startswith("zh") else "en"
    return "zh" if (locale.getlocale()[0] or "").lower().startswith("zh") else "en"


def set_lang(lang: str | None) -> None:
    """Use ``lang`` for every line of this process (None: back to the default)."""
    if lang is not None and lang not in LANGUAGES:
        raise ValueError(f"console language must be one of {', '.join(LANGUAGES)}, not {lang!r}")
    global _chosen
    _chosen = lang


def lang() -> str:
    return _chosen or default_lang()
