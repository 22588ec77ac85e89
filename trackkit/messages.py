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


# The layer's notices (report.py writes them to stderr as "trackkit: <text>"), by key.
NOTICES: dict[str, dict[str, str]] = {
    "failed": {
        "en": "tracker {name!r} failed in {hook}: {error} (the run goes on; it gets what it missed once it answers "
              "again)",
        "zh": "记录器 {name!r} 在 {hook} 中出错: {error} (训练继续; 它恢复响应后会补上错过的记录)"},
    "caught_up": {
        "en": "tracker {name!r} answers again; it caught up on {count} records it missed",
        "zh": "记录器 {name!r} 已恢复响应; 已补上它错过的 {count} 条记录"},
    "stalled": {
        "en": "tracker {name!r} has not taken a record for {seconds:.0f}s with {waiting} waiting; the run goes on "
              "without it until it answers again",
        "zh": "记录器 {name!r} 已 {seconds:.0f} 秒未取走记录 (积压 {waiting} 条); 训练继续, 待它恢复响应后补上"},
    "refused": {
        "en": "tracker {name!r} refused record {seq} {times} times; it is skipped",
        "zh": "记录器 {name!r} 连续 {times} 次拒收第 {seq} 条记录; 已跳过"},
    "unreadable": {
        "en": "cannot read the values of record {seq}: {error}",
        "zh": "无法读取第 {seq} 条记录的数值: {error}"},
    "still_had": {
        "en": "{what}: tracker {name!r} still had {count} records after {timeout:g}s",
        "zh": "{what}: {timeout:g} 秒后记录器 {name!r} 仍有 {count} 条记录未处理"},
    "missing_later": {
        "en": "tracker {name!r} did not get {count} of the run's records; deliver them later with: "
              "trackkit sync {dir} --to {spec}",
        "zh": "记录器 {name!r} 缺少本次运行的 {count} 条记录; 之后可用此命令补上: trackkit sync {dir} --to {spec}"},
    "missing_lost": {
        "en": "tracker {name!r} did not get {count} of the run's records (no local record to send them from: add "
              "the jsonl tracker)",
        "zh": "记录器 {name!r} 缺少本次运行的 {count} 条记录 (没有可补发的本地记录: 请加上 jsonl 记录器)"},
    "not_staged": {
        "en": "artifact {name!r} cannot be staged ({error}); a tracker that falls behind may find it gone",
        "zh": "产物 {name!r} 无法暂存 ({error}); 落后的记录器可能找不到它"},
    "nonfinite": {
        "en": "{key} is {value} at step {step}; recorded as is (further non-finite values of it are not flagged)",
        "zh": "{key} 在第 {step} 步为 {value}; 按原值记录 (此后它的非有限值不再提示)"},
    "source_dropped": {
        "en": "system metrics: {error}; that source is no longer sampled",
        "zh": "系统指标: {error}; 不再采样该来源"},
    "no_psutil": {
        "en": "system metrics: psutil is not installed (pip install 'trackkit[tools]'); CPU, memory, network and "
              "disks are not sampled",
        "zh": "系统指标: 未安装 psutil (pip install 'trackkit[tools]'); 不采样 CPU、内存、网络与磁盘"},
    "skipped": {"en": "{error} (skipped)", "zh": "{error} (已跳过)"},
    "run_json": {"en": "{error}; the run goes on", "zh": "{error}; 训练继续"},
    "skipped_run": {"en": "skipped: {error}", "zh": "已跳过: {error}"},
    "not_sent": {"en": "not sent: {what} ({more} more like it)", "zh": "未发送: {what} (另有 {more} 条同类)"},
    "not_a_number": {"en": "{framework}: {key!r} is a {kind}, not a number; not logged",
                     "zh": "{framework}: {key!r} 是 {kind}, 不是数值; 未记录"},
    "hf_unfinished": {"en": "hf: the run of an earlier train() that did not end is finished as failed",
                      "zh": "hf: 之前未结束的 train() 的运行以失败结束"},
    "accelerate_late_config": {
        "en": "accelerate: the run has started, so this configuration does not reach the trackers (call "
              "init_trackers with the config before the first accelerator.log)",
        "zh": "accelerate: 运行已开始, 此配置不会送到记录器 (请在第一次 accelerator.log 之前带配置调用 init_trackers)"},
    "lightning_late_config": {
        "en": "lightning: hyperparameters {names} came after the run started (trackkit takes the config when a "
              "run starts); not logged",
        "zh": "lightning: 超参数 {names} 在运行开始后才到 (trackkit 在运行开始时取配置); 未记录"},
    "wandb_online": {"en": "wandb: run {name} at {url}", "zh": "wandb: 运行 {name}: {url}"},
    "wandb_offline": {"en": "wandb: offline run in {folder}", "zh": "wandb: 离线运行位于 {folder}"},
    "wandb_fallback": {
        "en": "wandb: {reason}; continuing offline in {folder} (upload later with `trackkit sync {dir}`)",
        "zh": "wandb: {reason}; 改为离线记录于 {folder} (之后可用 `trackkit sync {dir}` 上传)"},
    "wandb_holds": {
        "en": "wandb: run {id} already holds {shown}; records up to there are not sent again",
        "zh": "wandb: 运行 {id} 已有 {shown}; 这些步骤的记录不再重复发送"},
    "wandb_fill_failed": {
        "en": "wandb: cannot fill records it lacks from the local record: {error}",
        "zh": "wandb: 无法从本地记录补上缺少的记录: {error}"},
    "wandb_refilled": {
        "en": "wandb: sent {count} records up to step {step} again from the local record",
        "zh": "wandb: 已从本地记录补发第 {step} 步及之前的 {count} 条记录"},
    "wandb_gone": {
        "en": "wandb: {kind} {name!r} was gone from {path} before it could be uploaded (skipped)",
        "zh": "wandb: {kind} {name!r} 在上传前已从 {path} 删除 (已跳过)"},
    "wandb_saved": {
        "en": "wandb: offline run saved in {folder}; upload it with: trackkit sync {dir}",
        "zh": "wandb: 离线运行已保存在 {folder}; 上传命令: trackkit sync {dir}"},
}
WORDS = {"en": {"flush": "flush", "finish": "finish"}, "zh": {"flush": "刷新", "finish": "结束"}}


def notice(key: str, /, **fields: Any) -> str:
    """The notice ``key`` in the language of this process."""
    language = lang()
    if "what" in fields:  # flush or finish
        fields["what"] = WORDS[language].get(fields["what"], fields["what"])
    return NOTICES[key][language].format(**fields)
