"""trackkit-train --deepspeed: the config from a file or the flags, bad input, and real DeepSpeed runs on the CPU.

The runs use DeepSpeed's own launcher with two processes (gloo), and are compared with a
one-process run of the plain engine (see multiprocess_util.py).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import BIN
from multiprocess_util import (
    ALL_TRACKERS,
    LAUNCH_TIMEOUT,
    PER_RANK_BATCH,
    SCHEDULE,
    assert_one_record,
    corpus,
    deepspeed_launcher,
    free_port,
    launch,
    losses,
    model_args,
    reference,
)
from trainer_util import child_env, train

from reference_trainer import deepspeed_config
from reference_trainer.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "deepspeed"
__all__ = ["corpus", "reference"]  # fixtures


def resolved(file_config: dict | None = None, **flags) -> dict:
    defaults = dict(source="ds.json", micro_batch=4, grad_accum=2, world_size=2, zero_stage=None, precision="auto",
                    grad_clip=1.0, device_type="cpu")
    return deepspeed_config.resolve(file_config, **{**defaults, **flags})


# -- the config ----------------------------------------------------------------------------------
def test_flags_make_the_whole_config():
    config = resolved(zero_stage=2, grad_clip=0.5)
    assert (config["train_batch_size"], config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["zero_optimization"], config["gradient_clipping"]) == (16, 4, 2, {"stage": 2}, 0.5)
    assert not config["bf16"]["enabled"] and not config["fp16"]["enabled"]  # auto on a CPU: fp32


def test_a_files_batch_sizes_win_and_the_missing_one_is_derived():
    assert resolved({"train_batch_size": 32})["train_micro_batch_size_per_gpu"] == 8  # 32 / (2 steps x 2 processes)
    config = resolved({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 16})
    assert config["gradient_accumulation_steps"] == 1
    assert resolved({"gradient_clipping": 0})["gradient_clipping"] == 0


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_the_ready_made_configs_are_what_their_names_say(stage):
    config = resolved(deepspeed_config.read(CONFIGS / f"zero{stage}.json"))
    assert config["zero_optimization"]["stage"] == stage
    assert resolved(deepspeed_config.read(CONFIGS / f"zero{stage}.json"), zero_stage=stage)  # the flag may repeat it


@pytest.mark.parametrize("file_config, flags, message", [
    ({"train_batch_size": 10}, {},
     "train_batch_size 10 is not divisible by gradient_accumulation_steps 2 x 2 processes"),
    ({"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1}, {},
     "train_batch_size 10 must equal train_micro_batch_size_per_gpu 4 x gradient_accumulation_steps 1 x 2 processes "
     "= 8"),
    ({"zero_optimization": {"stage": 2}}, {"zero_stage": 3}, "--zero-stage 3 disagrees with zero_optimization.stage 2"),
    ({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, {"device_type": "cuda"}, "enables both bf16 and fp16"),
    ({"bf16": {"enabled": True}}, {"precision": "fp32"}, "--precision fp32 disagrees with DeepSpeed config ds.json"),
    ({"scheduler": {"type": "WarmupLR"}}, {}, "ds.json: remove 'scheduler'; the trainer brings its own AdamW"),
    ({"zero_optimization": 3}, {}, "zero_optimization must be a JSON object"),
])
def test_inconsistent_configs_are_refused(file_config, flags, message):
    with pytest.raises(InputError) as caught:
        resolved(file_config, **flags)
    assert message in caught.value.message


# -- bad input through the command line: one line, exit code 2, nothing written ------------------
def _bad_json(tmp_path: Path) -> Path:
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2},}')
    return tmp_path / "ds.json"


def _json(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "ds.json").write_text(json.dumps(config))
    return tmp_path / "ds.json"


@pytest.mark.parametrize("args, message", [
    (lambda t: ["--deepspeed-config", _bad_json(t)],
     "Error: DeepSpeed config {t}/ds.json is not valid JSON: Expecting property name enclosed in double quotes: "
     "line 1 column 36 (char 35)"),
    (lambda t: ["--deepspeed_config", _json(t, {"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4})],
     "Error: DeepSpeed config {t}/ds.json: train_batch_size 10 is not divisible by train_micro_batch_size_per_gpu 4 "
     "x 1 process"),
    (lambda t: ["--batch-size", 4, "--grad-accum", 3, "--deepspeed-config", _json(t, {"train_batch_size": 8})],
     "Error: DeepSpeed config {t}/ds.json: train_batch_size 8 is not divisible by gradient_accumulation_steps 3 "
     "x 1 process"),
    (lambda t: ["--zero-stage", 4], "Error: --zero-stage must be in [0, 3], got 4: ZeRO has stages 0, 1, 2 and 3"),
    (lambda t: ["--zero-stage", -1], "Error: --zero-stage must be in [0, 3], got -1: ZeRO has stages 0, 1, 2 and 3"),
    (lambda t: ["--deepspeed-config", _json(t, {"zero_optimization": {"stage": 7}})],
     "Error: DeepSpeed config {t}/ds.json: zero_optimization.stage 7 is out of range: ZeRO has stages 0, 1, 2 and 3"),
    (lambda t: ["--precision", "fp16"],
     "Error: fp16 needs a GPU (DeepSpeed on the CPU has no fp16 support); use --precision bf16 or fp32"),
    (lambda t: ["--deepspeed-config", _json(t, {"fp16": {"enabled": True}})],
     "Error: fp16 needs a GPU (DeepSpeed on the CPU has no fp16 support); use --precision bf16 or fp32"),
    (lambda t: ["--deepspeed-config", t / "missing.json"], "Error: DeepSpeed config '{t}/missing.json' does not exist"),
])
def test_bad_deepspeed_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    out = tmp_path / "run"
    result = train("--deepspeed", *args(tmp_path), "--device", "cpu", "--output-dir", out, "--max-steps", 2)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.output.splitlines() == [message.format(t=tmp_path)]
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--zero-stage", "2"], ["--deepspeed-config", "ds.json"], ["--precision", "bf16"]])
def test_deepspeed_options_without_deepspeed_are_refused(tmp_path, flag):
    result = train(*flag, "--output-dir", tmp_path / "run", "--max-steps", 2)
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"Error: {flag[0]} is a DeepSpeed option; add --deepspeed"]


@pytest.mark.slow
def test_bad_input_under_the_launcher_is_one_line_from_rank_0_and_exit_code_2(tmp_path):
    result = launch(deepspeed_launcher(), "--deepspeed", "--zero-stage", 5, "--output-dir", tmp_path / "run")
    assert result.returncode == 2, result.stdout
    errors = [line for line in result.stdout.splitlines() if "Error" in line and "[ERROR]" not in line]
    assert errors == ["Error: --zero-stage must be in [0, 3], got 5: ZeRO has stages 0, 1, 2 and 3"]


# -- real runs -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_process_without_a_launcher_matches_the_plain_engine(corpus, tmp_path):
    """The benchmark's setting: stage 0, a world of one that the trainer sets up itself."""
    args = [*model_args(corpus, PER_RANK_BATCH), *SCHEDULE, "--tracker", "jsonl"]
    assert train(*args, "--output-dir", tmp_path / "plain").exit_code == 0
    result = launch([str(BIN / "trackkit-train")], *args, "--deepspeed", "--output-dir", tmp_path / "ds")
    assert result.returncode == 0, result.stdout
    plain, ds = losses(tmp_path / "plain"), losses(tmp_path / "ds")
    assert ds.keys() == plain.keys() and list(ds.values()) == pytest.approx(list(plain.values()), rel=1e-6)
    assert "Setting accelerator to CPU" not in result.stdout  # DS_ACCELERATOR set before DeepSpeed looks


# Stages 2 and 3 stop at step 3 and resume; 0 and 1 accumulate gradients over two micro-batches
# instead (same windows per step: half the micro-batch, twice the evaluation batches). Stage 0
# goes through scripts/run_pretrain_deepspeed.sh, 1 and 3 take the ready-made config files.
RUNS = {
    0: ["--zero-stage", "0", "--grad-accum", "2"],
    1: ["--deepspeed-config", str(CONFIGS / "zero1.json"), "--grad-accum", "2"],
    2: ["--zero-stage", "2"],
    3: ["--deepspeed-config", str(CONFIGS / "zero3.json")],
}


def _through_the_script(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    """run_pretrain_deepspeed.sh with two processes, USE_WANDB left at its default and no W&B key."""
    env = {k: v for k, v in child_env().items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "NETRC")}
    env.update(HOME=str(tmp_path), WANDB_BASE_URL="http://127.0.0.1:9", NUM_GPUS="2", MASTER_PORT=str(free_port()),
               OMP_NUM_THREADS="1")
    result = subprocess.run([str(REPO / "scripts" / "run_pretrain_deepspeed.sh"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=LAUNCH_TIMEOUT)
    assert "no W&B API key configured; wandb runs offline" in result.stdout
    return result


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3, 0, 1])
def test_two_processes_log_averaged_losses_once_and_resume(stage, corpus, reference, tmp_path):
    out = tmp_path / "run"
    accumulating = "--grad-accum" in RUNS[stage]
    batch = PER_RANK_BATCH // 2 if accumulating else PER_RANK_BATCH
    args = [*model_args(corpus, batch), *SCHEDULE, *ALL_TRACKERS, "--deepspeed", *RUNS[stage], "--output-dir", out]
    if accumulating:
        args[args.index("--eval-batches") + 1] = "8"
        result = launch(deepspeed_launcher(), *args) if stage else _through_the_script(tmp_path, args)
    else:
        first = launch(deepspeed_launcher(), *args, "--max-steps", 3)
        assert first.returncode == 0, first.stdout
        assert json.loads((out / "checkpoints" / "last" / "meta.json").read_text())["step"] == 3
        result = launch(deepspeed_launcher(), *args, "--resume")
        assert "Resuming from step 3" in result.stdout
    assert result.returncode == 0, result.stdout

    logged = losses(out)  # every step once, across the resume too
    assert logged.keys() == reference.keys()
    # Equal to the one-process run over both processes' windows: each value is the mean over the ranks.
    assert list(logged.values()) == pytest.approx(list(reference.values()), rel=1e-5)
    assert_one_record(out, result.stdout)
    config = json.loads((out / "trackkit" / "config.json").read_text())
    assert (config["engine"], config["zero_stage"], config["world_size"]) == ("deepspeed", stage, 2)
    assert config["train_batch_size"] == 2 * PER_RANK_BATCH
    shards = sorted(p.name for p in (out / "checkpoints" / "last").glob("*optim_states.pt"))
    assert shards == ([] if stage == 0 else [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)])
    # ZeRO's shards fit only their world size and stage: another is refused in one line, the record untouched.
    refusals = {1: [], 2: ["--zero-stage", 3], 3: []}.get(stage)
    if refusals is not None:
        result = train("--resume", "--output-dir", out, "--max-steps", 8, *refusals)  # in one process
        assert result.exit_code == 2 and result.output.splitlines() == [
            f"Error: checkpoint '{out}/checkpoints/last' holds ZeRO stage {stage} state of 2 process(es); resume it "
            f"at that stage with as many (this run: stage {3 if refusals else stage}, 1)"]
        assert losses(out) == logged
