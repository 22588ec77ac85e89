"""The trainer's own loop on a CUDA GPU: tokens/s and MFU of GPT-2 small in bf16, compiled and not.

    python benchmarks/gpu.py                       # gpt2-124m, batch 8 x 1024 tokens, eager then compiled
    python benchmarks/gpu.py --json                # {"eager": {"tokens_per_s": .., "mfu": ..}, "compiled": ..}
    python benchmarks/gpu.py --model tiny --device cpu --steps 4   # a dry run of the code path, no GPU needed

Each variant builds the trainer (``Trainer`` with the plain engine: bf16 autocast on a GPU that
has it, fused AdamW, optional ``torch.compile``) on random tokens of GPT-2's padded vocabulary
(50304), warms up, then runs ``Trainer.loop`` one step at a time. Around every step that does
not log, ``torch.cuda.set_sync_debug_mode("error")`` makes any operation that would make the CPU
wait for the GPU raise: the loop's promise that only a log step reads from the device. Timed:
the steps after warmup, between two synchronisations.

MFU = tokens/s x FLOPs per token / the device's peak bf16 FLOP/s. FLOPs per token count a
forward and a backward pass: 6 x the parameters (the position embeddings left out: a lookup)
plus the attention's 12 x layers x width x context. The peak comes from the device's name
(dense bf16 tensor-core figures; ``--peak-tflops`` for others). Without a CUDA GPU (and no
``--device cpu``) it says so in one line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from reference_trainer.config import TrainConfig
from reference_trainer.data import ByteTokenizer, EpochBatches, Windows
from reference_trainer.model import PRESETS, GPTConfig
from reference_trainer.train import Data, Progress, Trainer, build_engine
from trackkit.options import Tracking

VOCAB = 50304  # GPT-2's 50257 tokens, padded to a multiple of 64 for the tensor cores
PEAK_BF16_TFLOPS = {  # dense, by a part of the device's name; the first match wins
    "GH200": 989, "H200": 989, "H100 PCIe": 756, "H100": 989, "H800": 989, "B200": 2250, "A100": 312, "A800": 312,
    "L40S": 362, "L40": 181, "L4": 121, "A10G": 70, "A10": 125, "RTX 4090": 165, "RTX 3090": 71,
}


def flops_per_token(model: GPTConfig, parameters: int) -> int:
    """Forward and backward: 6 per weight (the position embeddings are a lookup) and the attention scores."""
    weights = parameters - model.block_size * model.n_embd
    return 6 * weights + 12 * model.n_layer * model.n_embd * model.block_size


def peak_flops(device_name: str) -> float | None:
    for part, tflops in PEAK_BF16_TFLOPS.items():
        if part in device_name:
            return tflops * 1e12
    return None


def build(model: str, batch_size: int, steps: int, log_interval: int, compile: bool, device: str,
          folder: Path) -> Trainer:
    """The trainer on random tokens: enough windows that no epoch ends (no evaluation, no checkpoint)."""
    cfg = TrainConfig(model=model, batch_size=batch_size, device=device, compile=compile, log_interval=log_interval,
                      eval_interval=0, checkpoint_interval=0, max_steps=steps, output_dir=str(folder), dropout=0.0)
    model_cfg = cfg.model_config(VOCAB)
    tokens = torch.randint(VOCAB, ((steps + 1) * batch_size * model_cfg.block_size + 1,),
                           generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    windows = Windows(tokens, model_cfg.block_size)
    data = Data(ByteTokenizer(), model_cfg, EpochBatches(windows, batch_size, 1, cfg.seed), windows, len(tokens), 0,
                0.0)
    torch.manual_seed(cfg.seed)
    engine = build_engine(cfg, data, torch.device(device), None)
    return Trainer(cfg, engine, data, Tracking(["none"]).start(output_dir=folder), Progress())


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_steps(trainer: Trainer, first: int, last: int, device: str) -> None:
    """Steps ``first`` to ``last``, one at a time; on a GPU, any sync outside a log step raises."""
    for step in range(first, last + 1):
        logs = step % trainer.cfg.log_interval == 0
        if device.startswith("cuda"):
            torch.cuda.set_sync_debug_mode("default" if logs else "error")
        try:
            trainer.loop(until=step)
        finally:
            if device.startswith("cuda"):
                torch.cuda.set_sync_debug_mode("default")


def measure(model: str, batch_size: int, steps: int, warmup: int, log_interval: int, compile: bool, device: str,
            peak: float | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(model, batch_size, warmup + steps, log_interval, compile, device, Path(tmp))
        run_steps(trainer, 1, warmup, device)  # compilation, cuBLAS's choices, the optimizer's state
        synchronize(device)
        started = time.perf_counter()
        run_steps(trainer, warmup + 1, warmup + steps, device)
        synchronize(device)
        seconds = time.perf_counter() - started
        trainer.run.finish()
    tokens_per_s = steps * trainer.tokens_per_step / seconds
    flops = flops_per_token(trainer.data.model_cfg, trainer.engine.num_parameters)
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "ms_per_step": round(1000 * seconds / steps, 2),
        "flops_per_token": flops,
        "mfu": round(tokens_per_s * flops / peak, 4) if peak else None,
        "last_train_loss": trainer.last_train_loss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2-124m", choices=list(PRESETS))
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    parser.add_argument("--log-interval", type=int, default=10, help="the trainer's (default 10)")
    parser.add_argument("--compile", choices=["both", "on", "off"], default="both", help="variants (default both)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak bf16 TFLOP/s, where its name is not known")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"benchmarks/gpu.py: no CUDA GPU here (torch {torch.__version__}); nothing measured")
        return 0
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(name) if name != "cpu" else None
    variants = {"eager": False, "compiled": True}
    chosen = {"both": variants, "on": {"compiled": True}, "off": {"eager": False}}[args.compile]
    result: dict = {"device": name, "model": args.model, "batch_size": args.batch_size, "steps": args.steps,
                    "peak_flops": peak}
    for variant, compile in chosen.items():
        result[variant] = measure(args.model, args.batch_size, args.steps, args.warmup, args.log_interval, compile,
                                  args.device, peak)
    if args.json:
        print(json.dumps(result))
        return 0
    checked = "no sync outside the log steps" if name != "cpu" else "a dry run: no sync check on the CPU"
    for variant in chosen:
        r = result[variant]
        mfu = f"MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else "MFU unknown (--peak-tflops)"
        print(f"{args.model} {variant:>8}: {r['tokens_per_s']:>12,.0f} tokens/s, {r['ms_per_step']:.1f} ms/step, "
              f"{mfu} on {name}; {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
