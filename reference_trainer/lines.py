"""Every line the trainer says, in English and Chinese (the language trackkit prints in: ``--console-lang``,
``$TRACKKIT_CONSOLE_LANG``, else the locale)."""
from __future__ import annotations

from typing import Any

from trackkit import messages

LINES: dict[str, dict[str, str]] = {
    "signal": {"en": "{signal} received: stopping after this step, with a checkpoint ({hint} to stop at once)",
               "zh": "收到 {signal}: 本步结束后保存检查点并停止 ({hint}可立即停止)"},
    "hint_again": {"en": "press Ctrl-C again", "zh": "再按一次 Ctrl-C "},
    "hint": {"en": "Ctrl-C", "zh": "按 Ctrl-C "},
    "ctrl_c_again": {"en": "Ctrl-C while stopping: stopping at once; --resume continues from the last checkpoint",
                     "zh": "停止过程中再次收到 Ctrl-C: 立即停止; --resume 会从最后一个检查点继续"},
    "another_process": {"en": "a signal to another process", "zh": "另一进程收到的信号"},
    "stopped_before": {"en": "stopped by {signal} before the first step of this process; --resume starts at "
                             "step {step}",
                       "zh": "因 {signal} 在本进程的第一步之前停止; --resume 将从第 {step} 步开始"},
    "stopped_at": {"en": "stopped by {signal} at step {step}; checkpoint saved in {path}; continue with --resume",
                   "zh": "因 {signal} 在第 {step} 步停止; 检查点已保存在 {path}; 用 --resume 继续"},
    "skip_step": {"en": "step {step}: the loss is {loss}; its update is left out (--nan-policy skip-step), as will be "
                        "those of later steps like it, counted in final/skipped_steps",
                  "zh": "第 {step} 步: 损失为 {loss}; 跳过该步的更新 (--nan-policy skip-step), 之后同样的步骤也会跳过, "
                        "计入 final/skipped_steps"},
    "tracking_changed": {"en": "resuming with other tracking than the checkpoint's: {change}",
                         "zh": "继续训练所用的记录设置与检查点的不同: {change}"},
    "resume_fallback": {"en": "{why}; resuming from {name}, the newest complete checkpoint (step {step})",
                        "zh": "{why}; 从最新的完整检查点 {name} (第 {step} 步) 继续"},
    "overwrite": {"en": "--overwrite-output-dir: deleted {names} in {dir}; starting a new run",
                  "zh": "--overwrite-output-dir: 已删除 {dir} 中的 {names}; 开始新的运行"},
    "unfinished": {"en": "{dir}/ holds unfinished checkpoint folders that a killed process left ({names}); they are "
                         "not used: remove them to free the space",
                   "zh": "{dir}/ 中有被中止的进程留下的未完成检查点 ({names}); 不会使用它们: 删除即可释放空间"},
    "link_was_folder": {"en": "{dir}/{link} was a folder, not a link (a copy that followed links?): kept as "
                              "{dir}/{kept}; {dir}/{link} links to {name} now",
                        "zh": "{dir}/{link} 是文件夹而不是链接 (复制时跟随了链接?): 已保留为 {dir}/{kept}; "
                              "{dir}/{link} 现在指向 {name}"},
    "learned": {"en": "validation loss {val:.4f} nats vs unigram entropy {entropy:.4f} nats (a model that ignores "
                      "context): {learned:+.4f} nats learned from context",
                "zh": "验证损失 {val:.4f} nats, 一元熵 {entropy:.4f} nats (不看上下文的模型): 从上下文学到 "
                      "{learned:+.4f} nats"},
}


def line(key: str, /, **fields: Any) -> str:
    """Line ``key`` in the language of this process."""
    return LINES[key][messages.lang()].format(**fields)
