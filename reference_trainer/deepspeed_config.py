"""DeepSpeed's JSON config: read from ``--deepspeed-config``, or built from the trainer's flags.

Either way it is checked here, before any process starts talking to another, so that a mistake
is one ``Error:`` line (exit code 2) instead of an assertion deep inside DeepSpeed:

    config = resolve(read(path) if path else None, source=path, micro_batch=12, grad_accum=1,
                     world_size=2, zero_stage=None, precision="auto", grad_clip=1.0, device_type="cpu")

What a file sets wins over --batch-size, --grad-accum and --grad-clip (they fill in what it
leaves out); --zero-stage and --precision, when given, must agree with the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .config import TrainConfig

ZERO_STAGES = (0, 1, 2, 3)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
# The trainer builds its own AdamW (decay and no-decay groups) and warmup + cosine schedule.
OWNED_BY_TRAINER = ("optimizer", "scheduler")


def read(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"DeepSpeed config {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"DeepSpeed config {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"DeepSpeed config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"DeepSpeed config {path} must hold a JSON object, not {type(data).__name__}")
    return data


def resolve(
    file_config: dict[str, Any] | None,
    *,
    source: str | None,
    micro_batch: int,
    grad_accum: int,
    world_size: int,
    zero_stage: int | None,
    precision: str,
    grad_clip: float,
    device_type: str,
) -> dict[str, Any]:
    """The complete config DeepSpeed gets: the file's settings (if any) completed from the flags.

    ``zero_stage`` None means "the file's, else 0"; ``precision`` "auto" means "the file's, else
    bf16 where the device supports it, else fp32". ``device_type`` is "cpu" or "cuda".
    """
    config = dict(file_config or {})
    where = f"DeepSpeed config {source}" if source else "DeepSpeed config"
    for key in OWNED_BY_TRAINER:
        if key in config:
            raise InputError(f"{where}: remove {key!r}; the trainer brings its own AdamW and learning-rate schedule "
                             "(--learning-rate, --warmup-steps, ...)")
    for key in ("zero_optimization", "bf16", "fp16"):
        if not isinstance(config.get(key, {}), dict):
            raise InputError(f"{where}: {key} must be a JSON object, got {config[key]!r}")
    config.update(_batch_sizes(config, where, micro_batch, grad_accum, world_size))
    config["zero_optimization"] = {**config.get("zero_optimization", {}), "stage": _stage(config, where, zero_stage)}
    config.update(_precision(config, where, precision, device_type))
    if "gradient_clipping" not in config:  # DeepSpeed's own default is 1.0, not "off"
        config["gradient_clipping"] = grad_clip
    clip = config["gradient_clipping"]
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip < 0:
        raise InputError(f"{where}: gradient_clipping must be a number >= 0 (0: off), got {clip!r}")
    # DeepSpeed's periodic progress lines would interleave with the trainer's console output.
    config.setdefault("steps_per_print", 2**31 - 1)
    return config


def for_run(cfg: TrainConfig, device_type: str, world_size: int) -> dict[str, Any]:
    """The config of a ``trackkit-train --deepspeed`` run on ``device_type`` ("cpu" or "cuda")."""
    if device_type not in ("cpu", "cuda"):
        raise InputError(f"DeepSpeed runs on CUDA GPUs or the CPU, not on {device_type}; use --device cpu")
    file_config = read(cfg.deepspeed_config) if cfg.deepspeed_config else None
    return resolve(file_config, source=cfg.deepspeed_config, micro_batch=cfg.batch_size, grad_accum=cfg.grad_accum,
                   world_size=world_size, zero_stage=cfg.zero_stage, precision=cfg.precision, grad_clip=cfg.grad_clip,
                   device_type=device_type)


def summary(config: dict[str, Any]) -> dict[str, Any]:
    """What the trackers record about a resolved config (flat, one value per key)."""
    return {
        "zero_stage": config["zero_optimization"]["stage"],
        "precision": precision_of(config),
        "train_batch_size": config["train_batch_size"],
    }


def precision_of(config: dict[str, Any]) -> str:
    for name in ("bf16", "fp16"):
        if config.get(name, {}).get("enabled"):
            return name
    return "fp32"


def _batch_sizes(config: dict, where: str, micro_batch: int, grad_accum: int, world_size: int) -> dict[str, int]:
    """The three batch sizes: the file's, the rest derived from them or taken from the flags."""
    given = {key: config[key] for key in BATCH_KEYS if key in config}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{where}: {key} must be a positive integer, got {value!r}")
    total = given.get("train_batch_size")
    micro = given.get("train_micro_batch_size_per_gpu")
    accum = given.get("gradient_accumulation_steps")
    processes = f"{world_size} process{'es' if world_size > 1 else ''}"
    if accum is None:
        if total is not None and micro is not None:
            if total % (micro * world_size):
                raise InputError(f"{where}: train_batch_size {total} is not divisible by "
                                 f"train_micro_batch_size_per_gpu {micro} x {processes}")
            accum = total // (micro * world_size)
        else:
            accum = grad_accum
    if micro is None:
        if total is not None:
            if total % (accum * world_size):
                raise InputError(f"{where}: train_batch_size {total} is not divisible by "
                                 f"gradient_accumulation_steps {accum} x {processes}")
            micro = total // (accum * world_size)
        else:
            micro = micro_batch
    if total is None:
        total = micro * accum * world_size
    if total != micro * accum * world_size:
        raise InputError(f"{where}: train_batch_size {total} must equal train_micro_batch_size_per_gpu {micro} x "
                         f"gradient_accumulation_steps {accum} x {processes} = {micro * accum * world_size}")
    return {"train_batch_size": total, "train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum}


def _stage(config: dict, where: str, flag: int | None) -> int:
    in_file = config.get("zero_optimization", {}).get("stage")  # the flag's range is TrainConfig's (config.py)
    if in_file is not None and (isinstance(in_file, bool) or in_file not in ZERO_STAGES):
        raise InputError(f"{where}: zero_optimization.stage {in_file!r} is out of range: ZeRO has stages 0, 1, 2 and 3")
    if flag is not None and in_file is not None and flag != in_file:
        raise InputError(f"--zero-stage {flag} disagrees with zero_optimization.stage {in_file} in {where}")
    return int(flag if flag is not None else in_file if in_file is not None else 0)


def _precision(config: dict, where: str, flag: str, device_type: str) -> dict[str, Any]:
    if flag not in PRECISIONS:
        raise InputError(f"unknown --precision {flag!r}; choose one of {', '.join(PRECISIONS)}")
    enabled = [name for name in ("bf16", "fp16") if config.get(name, {}).get("enabled")]
    if len(enabled) == 2:
        raise InputError(f"{where} enables both bf16 and fp16; choose one")
    in_file = enabled[0] if enabled else ("fp32" if any(n in config for n in ("bf16", "fp16")) else None)
    if flag != "auto" and in_file is not None and flag != in_file:
        raise InputError(f"--precision {flag} disagrees with {where}, which asks for {in_file}")
    chosen = in_file or (flag if flag != "auto" else "bf16" if device_type == "cuda" and _cuda_bf16() else "fp32")
    if chosen == "fp16" and device_type == "cpu":
        raise InputError("fp16 needs a GPU (DeepSpeed on the CPU has no fp16 support); use --precision bf16 or fp32")
    return {
        "bf16": {**config.get("bf16", {}), "enabled": chosen == "bf16"},
        "fp16": {**config.get("fp16", {}), "enabled": chosen == "fp16"},
    }


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()
