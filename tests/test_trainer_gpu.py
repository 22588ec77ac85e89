"""The reference trainer on a CUDA GPU: steps that do not log never wait for the device; benchmarks/gpu.py.

The GPU tests are skipped where torch sees no GPU (the CPU machines CI runs on); run them on a GPU machine.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_util import events

from reference_trainer.config import TrainConfig
from reference_trainer.model import GPT, preset
from reference_trainer.train import Trainer
from trackkit.options import Tracking

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@needs_gpu
def test_steps_that_do_not_log_never_synchronise_the_device(tmp_path):
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8, tokenizer="byte", device="cuda",
                      log_interval=4, eval_interval=0, checkpoint_interval=0, max_steps=40, output_dir=str(tmp_path))
    trainer = Trainer.create(cfg, Tracking(["jsonl"], {}))
    trainer.loop(until=2)  # the first steps set up CUDA, cuBLAS and the optimizer's state
    for step in range(3, 17):
        logs = step % cfg.log_interval == 0
        # "error": any call that makes the CPU wait for the GPU raises, naming the operation.
        torch.cuda.set_sync_debug_mode("default" if logs else "error")
        try:
            trainer.loop(until=step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    trainer.run.finish()
    assert [e["step"] for e in events(tmp_path, "train")] == [4, 8, 12, 16]


# -- benchmarks/gpu.py: runs anywhere, measures on a GPU -------------------------------------------------
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def gpu_benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARK), *args], capture_output=True, text=True, timeout=600)


@needs_no_gpu
def test_the_gpu_benchmark_says_in_one_line_that_there_is_no_gpu():
    done = gpu_benchmark()
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"benchmarks/gpu.py: no CUDA GPU here (torch {torch.__version__}); nothing measured\n"


def test_the_gpu_benchmarks_code_path_runs_on_the_cpu():
    done = gpu_benchmark("--model", "tiny", "--device", "cpu", "--batch-size", "2", "--steps", "2", "--warmup", "1",
                         "--log-interval", "1", "--compile", "off", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["eager"]["tokens_per_s"] > 0 and result["eager"]["mfu"] is None and "compiled" not in result
    assert math.isfinite(result["eager"]["last_train_loss"])


def test_flops_per_token_and_peaks():
    sys.path.insert(0, str(BENCHMARK.parent))
    from gpu import VOCAB, flops_per_token, peak_flops

    gpt2 = preset("gpt2-124m", vocab_size=VOCAB)
    parameters = GPT(gpt2).num_parameters()
    assert parameters == 124_475_904  # GPT-2 small with the padded vocabulary, the head tied to the embedding
    assert flops_per_token(gpt2, parameters) == 6 * (parameters - 1024 * 768) + 12 * 12 * 768 * 1024
    assert peak_flops("NVIDIA H200") == peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future GPU") is None


@needs_gpu
def test_the_gpu_benchmark_measures_gpt2_small_in_bf16_without_a_sync_outside_the_log_steps():
    done = gpu_benchmark("--steps", "20", "--warmup", "10", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    for variant in ("eager", "compiled"):
        assert result[variant]["tokens_per_s"] > 0, variant
        assert result["peak_flops"] is None or 0 < result[variant]["mfu"] < 1, variant
