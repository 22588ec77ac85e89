"""The benchmarks in benchmarks/ still run and print what their docs promise (a smoke test, not a timing)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--json", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_throughput_reports_every_contestant_and_both_ratios():
    result = run_benchmark("throughput.py", "--steps", "3", "--repeats", "2", "--warmup", "1")
    assert {"bare_tokens_per_s", "none_tokens_per_s", "all_tokens_per_s"} <= result.keys()
    assert all(result[f"{name}_tokens_per_s"] > 0 for name in ("bare", "none", "all"))
    assert result["trackers"] == ["console", "jsonl", "tensorboard", "wandb"]
    low, high = result["all_over_none_quartiles"]
    assert low <= high and result["rounds"] == 2


def test_throughput_refuses_rounds_longer_than_an_epoch():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "throughput.py"), "--steps", "100000", "--trackers", "jsonl"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1 and "--steps must be fewer than an epoch's" in done.stderr.strip().splitlines()[-1]


def test_tracker_cpu_names_each_tracker_thread():
    result = run_benchmark("tracker_cpu.py", "--trackers", "jsonl,console", "--steps", "20", "--warmup", "2")
    assert result["steps"] == 20 and result["training_cpu_ms_per_step"] > 0
    assert {"trackkit-jsonl", "trackkit-console"} <= result["tracking_by_thread"].keys()


@pytest.mark.slow
def test_deepspeed_throughput_reports_both_engines():
    result = run_benchmark("deepspeed_throughput.py", "--steps", "2", "--repeats", "2", "--warmup", "1")
    assert result["plain_tokens_per_s"] > 0 and result["deepspeed_tokens_per_s"] > 0
    assert result["rounds"] == 2


def test_record_scale_times_every_command_and_the_jsonl_tracker():
    result = run_benchmark("record_scale.py", "--events", "3000", "--eval-every", "100", "--runs", "4",
                           "--run-events", "50", "--compare", "3")
    assert set(result["commands"]) == {"list", "show", "compare", "export", "plot", "sync"}
    assert all(c["seconds"] > 0 and c["peak_mb"] > 10 for c in result["commands"].values())
    assert result["jsonl"]["records"] == 3000 + 30 + 1 and result["jsonl"]["records_per_s"] > 0
    assert 0 < result["jsonl"]["p50_us"] <= result["jsonl"]["p99_us"] and result["json_read"]["cpu_seconds"] >= 0
    assert {"list_time", "export_time", "export_memory", "jsonl_rate", "caller_p50"} <= result["targets_met"].keys()
