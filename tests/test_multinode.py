"""More than one machine, on this one: each "node" is its own launcher process on 127.0.0.1, the workers talk gloo.

Two nodes under torchrun and under DeepSpeed's launcher train one run tracked by global rank 0
alone, with the losses of one process over both nodes' batches; a worker killed mid-run is
restarted by torchrun and the run continues from its last checkpoint; a node that never arrives
or a rank that dies or hangs ends the run in one line after --dist-timeout; only rank 0 writes
the run's record and moves the checkpoint links in the folder every node shares. SLURM's side
(scripts/slurm/pretrain.sbatch) is tested with stand-ins for srun and scontrol (tests/fake_slurm).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO
from multiprocess_util import (
    ALL_TRACKERS,
    LAUNCH_TIMEOUT,
    PER_RANK_BATCH,
    PROBE,
    SCHEDULE,
    Nodes,
    assert_every_step_once_everywhere,
    assert_one_record,
    corpus,
    deepspeed_node,
    free_port,
    hostfile,
    losses,
    model_args,
    nodes_killed_after,
    one_process_losses,
    reference,
    torchrun_node,
    writes,
)
from trainer_util import child_env, events

from reference_trainer.faults import LOST_EXIT_CODE
from trackkit.wandb_files import run_files

__all__ = ["corpus", "reference", "nodes_killed_after"]  # fixtures
pytestmark = pytest.mark.usefixtures("nodes_killed_after")

RECORD_FOLDERS = ("trackkit", "tensorboard", "wandb")  # what rank 0's trackers write in the run folder
LINKS = ("checkpoints/index.json", "checkpoints/last", "checkpoints/best")


def assert_only_rank_0_writes_the_run(out: Path, probe: Path, *, shards: bool) -> None:
    """Rank 0 wrote the record and moved the links; the other ranks wrote nothing else in the shared folder.

    ``shards``: they wrote their part of each checkpoint (DeepSpeed's ZeRO shards) into the
    folder rank 0 made for it; the plain engine's other ranks write nothing at all.
    """
    by_rank = writes(probe)
    assert set(by_rank) == {0, 1}, by_rank.keys()

    def under(record: dict, *names: str) -> bool:
        return any(p == str(out / n) or p.startswith(f"{out / n}/") for p in record.get("paths", []) for n in names)

    assert any(under(r, "trackkit") for r in by_rank[0]) and any(under(r, *LINKS) for r in by_rank[0])
    others = [r for rank, records in by_rank.items() if rank != 0 for r in records]
    assert not [r for r in others if under(r, *RECORD_FOLDERS, *LINKS, "tokenizer.json")]
    assert not [r for r in others if "wandb" in r.get("command", "")]  # no wandb process of their own
    changed = [p for r in others for p in r.get("paths", [])]
    if shards:  # DeepSpeed makes the step's folder its own way on each rank, then writes the rank's shards there
        assert changed and all(p.startswith(str(out / "checkpoints" / ".tmp-step-")) for p in changed)
    else:
        assert changed == []


@pytest.mark.slow
def test_two_torchrun_nodes_train_one_run_tracked_by_global_rank_0(corpus, reference, tmp_path):
    out, probe = tmp_path / "run", tmp_path / "writes"
    probe.mkdir()
    args = [*model_args(corpus, PER_RANK_BATCH), *SCHEDULE, *ALL_TRACKERS, "--output-dir", out,
            "--checkpoint-interval", "3"]
    port = free_port()
    # c10d's rendezvous, not --node-rank, decides which node's process becomes global rank 0.
    nodes = Nodes([[*torchrun_node(n, port), PROBE, *args] for n in (0, 1)], tmp_path,
                  PROBE_WRITES=str(probe), PROBE_ROOT=str(out))
    assert nodes.wait() == [0, 0], nodes.output()

    logged = losses(out)
    assert logged.keys() == reference.keys()
    assert list(logged.values()) == pytest.approx(list(reference.values()), rel=1e-5)
    assert_one_record(out, nodes.output())
    config = json.loads((out / "trackkit" / "config.json").read_text())
    assert (config["engine"], config["world_size"], config["tokens_per_step"]) == ("torch", 2, 2 * PER_RANK_BATCH * 16)
    assert_only_rank_0_writes_the_run(out, probe, shards=False)


# -- DeepSpeed's launcher, each node started on its own (--no_ssh) ------------------------------
@pytest.mark.slow
def test_two_deepspeed_nodes_at_zero_2_train_one_run_and_only_rank_0_writes_the_record(corpus, reference, tmp_path):
    out, probe = tmp_path / "run", tmp_path / "writes"
    probe.mkdir()
    args = [*model_args(corpus, PER_RANK_BATCH), *SCHEDULE, *ALL_TRACKERS, "--deepspeed", "--zero-stage", "2",
            "--output-dir", out, "--checkpoint-interval", "3"]
    hosts, port = hostfile(tmp_path), free_port()
    nodes = Nodes([[*deepspeed_node(n, hosts, port), PROBE, *args] for n in (0, 1)], tmp_path,
                  PROBE_WRITES=str(probe), PROBE_ROOT=str(out), DS_ACCELERATOR="cpu")
    assert nodes.wait() == [0, 0], nodes.output()

    logged = losses(out)
    assert logged.keys() == reference.keys()
    assert list(logged.values()) == pytest.approx(list(reference.values()), rel=1e-5)
    assert_one_record(out, nodes.output())
    assert "Run " in nodes.output(0)  # --node_rank 0 holds global rank 0
    shards = sorted(p.name for p in (out / "checkpoints" / "last").glob("zero_pp_rank_*"))
    assert shards == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    assert_only_rank_0_writes_the_run(out, probe, shards=True)


@pytest.mark.slow
def test_two_deepspeed_nodes_at_zero_3_through_the_script_stop_and_resume(corpus, reference, tmp_path):
    """scripts/run_pretrain_deepspeed.sh on each node (HOSTFILE, NODE_RANK, MASTER_ADDR, MASTER_PORT, NUM_GPUS)."""
    out = tmp_path / "run"
    args = [*model_args(corpus, PER_RANK_BATCH), *SCHEDULE, *ALL_TRACKERS, "--zero-stage", "3", "--output-dir", out]
    hosts, port = hostfile(tmp_path), free_port()
    script = [str(REPO / "scripts" / "run_pretrain_deepspeed.sh")]
    first = [Nodes([[*script, *args, "--max-steps", "3"]], tmp_path, HOSTFILE=str(hosts), NODE_RANK=str(n),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NUM_GPUS="1", USE_WANDB="false") for n in (0, 1)]
    assert [node.wait()[0] for node in first] == [0, 0], first[0].output() + first[1].output()
    assert json.loads((out / "checkpoints" / "last" / "meta.json").read_text())["step"] == 3

    port = free_port()
    nodes = Nodes([[*deepspeed_node(n, hosts, port), BIN / "trackkit-train", *args, "--deepspeed", "--resume"]
                   for n in (0, 1)], tmp_path, DS_ACCELERATOR="cpu")
    assert nodes.wait() == [0, 0], nodes.output()
    assert "Resuming from step 3" in nodes.output(0)
    logged = losses(out)  # every step once, across the resume too
    assert logged.keys() == reference.keys()
    assert list(logged.values()) == pytest.approx(list(reference.values()), rel=1e-5)
    assert_one_record(out, nodes.output())
    config = json.loads((out / "trackkit" / "config.json").read_text())
    assert (config["engine"], config["zero_stage"], config["world_size"]) == ("deepspeed", 3, 2)
    shards = sorted(p.name for p in (out / "checkpoints" / "last").glob("zero_pp_rank_*"))
    assert shards == [f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")]


# -- a node that never arrives, a rank that dies or hangs before its first step -----------------
def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.mark.slow
def test_a_node_that_never_arrives_ends_the_run_after_dist_timeout_in_one_line(corpus, tmp_path):
    out = tmp_path / "run"
    hosts, port = hostfile(tmp_path), free_port()
    started = time.monotonic()
    nodes = Nodes([[*deepspeed_node(0, hosts, port), BIN / "trackkit-train", *model_args(corpus, PER_RANK_BATCH),
                    "--deepspeed", "--device", "cpu", "--dist-timeout", "5", "--output-dir", out, *ALL_TRACKERS]],
                  tmp_path, DS_ACCELERATOR="cpu")  # node 1 of the hostfile is never started
    assert nodes.wait() == [LOST_EXIT_CODE], nodes.output()
    (line,) = error_lines(nodes.output())
    assert re.fullmatch(
        rf"Error: waited 5 s \(--dist-timeout\) for the run's other process to join at 127\.0\.0\.1:{port}: Timed "
        r"out after \d+ seconds waiting for clients\. 1/2 clients joined; a node that never started, or one given "
        r"another address or port\?", line), line
    assert "Traceback" not in nodes.output()
    assert not out.exists()  # nothing started, nothing recorded
    print(f"a node that never arrived: the launcher ended {time.monotonic() - started:.0f} s after it started")


@pytest.mark.slow
@pytest.mark.parametrize("fault, error", [
    ("kill", "lost contact with the run's other process in the first step: {why}"),
    ("stop", "waited 5 s (--dist-timeout) for the run's other process in the first step: Timed out waiting 5000ms "
             "for recv operation to complete"),
], ids=["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_before_its_first_step_ends_the_run_in_one_line(corpus, tmp_path, fault, error):
    out = tmp_path / "run"
    args = [*model_args(corpus, PER_RANK_BATCH), *SCHEDULE, *ALL_TRACKERS, "--dist-timeout", "5", "--output-dir", out]
    port = free_port()
    nodes = Nodes([[*torchrun_node(n, port), PROBE, *args] for n in (0, 1)], tmp_path, PROBE_FAULT=f"1:{fault}@1")
    # Both nodes end; where rank 1 hangs, only rank 0's (the other waits for ever: the fixture kills it).
    nodes.wait_for_ends(2 if fault == "kill" else 1)

    (line,) = error_lines(nodes.output())
    hint = "; one of them died, hangs or lost its network; --resume continues from the last checkpoint"
    why = re.match(r"Error: lost contact with the run's other process in the first step: (.*); one of", line)
    assert line == "Error: " + error.format(why=why and why.group(1)) + hint, line
    assert fault == "stop" or re.search(r"Connection (reset|closed) by peer", line), line
    assert "LostProcesses" not in nodes.output() and "gloo" not in nodes.output().replace(line, "")
    assert json.loads((out / "trackkit" / "run.json").read_text())["status"] == "failed"
    (part,) = run_files(out / "wandb", json.loads((out / "trackkit" / "run.json").read_text())["backend_ids"]["wandb"])
    assert part.exit_code == 1  # wandb's run finished as failed too


# -- elastic restarts and preemption --------------------------------------------------------------
# Long enough to be stopped half way: a checkpoint every 8 steps, two evaluations, every step logged.
LONG = ["--max-steps", "48", "--log-interval", "1", "--eval-interval", "16", "--checkpoint-interval", "8",
        "--warmup-steps", "2", "--lr-decay-steps", "48", "--device", "cpu", "--dist-timeout", "60"]


# torch 2.13's restarted workers hang in init_process_group when they share the rendezvous' store with
# torchrun (pytorch/pytorch#135712); a store of their own each round avoids it (README, pretrain.sbatch).
ELASTIC_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


@pytest.fixture(scope="module")
def long_reference(corpus, tmp_path_factory) -> dict[tuple[str, int], float]:
    """LONG's losses in one process with both nodes' batches."""
    return one_process_losses(corpus, tmp_path_factory.mktemp("long-reference"), LONG)


@pytest.mark.slow
@pytest.mark.parametrize("killed", [0, 1], ids=["the-tracking-rank", "another-rank"])
def test_torchrun_restarts_a_killed_worker_and_the_run_continues_from_its_last_checkpoint(
        corpus, long_reference, tmp_path, killed):
    out = tmp_path / "run"
    args = [*model_args(corpus, PER_RANK_BATCH), *LONG, *ALL_TRACKERS, "--output-dir", out, "--resume"]
    port = free_port()
    # Killed with SIGKILL as its step 13 begins: the checkpoint of step 8 holds.
    nodes = Nodes([[*torchrun_node(n, port, restarts=2), PROBE, *args] for n in (0, 1)], tmp_path,
                  PROBE_FAULT=f"{killed}:kill@13", **ELASTIC_ENV)
    assert nodes.wait() == [0, 0], nodes.output()
    assert "Resuming from step 8" in nodes.output()
    if killed:  # rank 0 was left: it said so, finished its trackers "failed", and torchrun restarted it too
        (line,) = error_lines(nodes.output())
        assert line.startswith("Error: lost contact with the run's other process after step 12: "), line
    assert [e["step"] for e in events(out, "resume")] == [8]

    logged = losses(out)  # what the killed process logged after step 8 is gone; steps 9 to 12 trained again
    assert logged.keys() == long_reference.keys()
    assert list(logged.values()) == pytest.approx(list(long_reference.values()), rel=1e-5)
    assert_every_step_once_everywhere(out, list(range(1, 49)))


# -- SLURM: scripts/slurm/pretrain.sbatch, with stand-ins for srun and scontrol ---------------------
SBATCH = REPO / "scripts" / "slurm" / "pretrain.sbatch"
FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"


def slurm_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """What a batch script sees in a SLURM job, with tests/fake_slurm's srun and scontrol first on PATH."""
    return {"PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO),
            "FAKE_SRUN_LOG": str(tmp_path / "srun.log"), **variables}


def test_the_cluster_script_builds_srun_and_torchrun_from_slurms_variables(tmp_path):
    env = slurm_env(tmp_path, SLURM_JOB_ID="4242", SLURM_NNODES="3", SLURM_JOB_NODELIST="gpu-a,gpu-b,gpu-c",
                    SLURM_GPUS_ON_NODE="4", FAKE_SRUN_PRINT_ONLY="1")
    done = subprocess.run(["bash", str(SBATCH), "--model", "gpt2-124m", "--use_wandb"], env=child_env(**env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    venv = REPO / ".venv" / "bin"
    assert (tmp_path / "srun.log").read_text().splitlines() == [
        f"--nodes=3 --ntasks-per-node=1 --kill-on-bad-exit=1 {venv}/torchrun --nnodes 3 --nproc-per-node 4 "
        "--rdzv-backend c10d --rdzv-endpoint gpu-a:24242 --rdzv-id 4242 --rdzv-conf join_timeout=1800 --max-restarts 2 "
        f"--shutdown-timeout 100 {venv}/trackkit-train --resume --output-dir runs/slurm-4242 --dist-timeout 1800 "
        "--model gpt2-124m --use_wandb"]

    env.update(GPUS_PER_NODE="8", MASTER_PORT="29400", DIST_TIMEOUT="600", MAX_RESTARTS="0", OUTPUT_DIR="/shared/a")
    (tmp_path / "srun.log").unlink()
    assert subprocess.run(["bash", str(SBATCH)], env=child_env(**env), timeout=60).returncode == 0
    (call,) = (tmp_path / "srun.log").read_text().splitlines()
    for part in ("--nproc-per-node 8", "gpu-a:29400", "join_timeout=600", "--max-restarts 0", "--output-dir /shared/a",
                 "--dist-timeout 600"):
        assert part in call


def test_the_cluster_script_asks_slurm_for_time_to_save_and_refuses_to_run_outside_a_job():
    text = SBATCH.read_text()
    header = text[: text.index("\n\n")]  # sbatch reads #SBATCH lines up to the first command
    assert all(line.startswith("#") for line in header.splitlines())
    assert "#SBATCH --signal=B:TERM@120" in header.splitlines() and "#SBATCH --requeue" in header.splitlines()
    outside = {k: v for k, v in child_env().items() if not k.startswith("SLURM_")}
    done = subprocess.run(["bash", str(SBATCH)], env=outside, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "Error: pretrain.sbatch runs inside a SLURM job (SLURM_JOB_ID, SLURM_NNODES, SLURM_JOB_NODELIST are not set); "
        "submit it with sbatch"]


@pytest.mark.slow
def test_a_slurm_job_told_to_stop_saves_exits_143_and_the_same_job_again_resumes(corpus, long_reference, tmp_path):
    """SLURM's --signal=B:TERM: SIGTERM to the batch shell, which passes it on through srun and torchrun."""
    out = tmp_path / "run"
    command = ["bash", SBATCH, *model_args(corpus, PER_RANK_BATCH), *LONG, *ALL_TRACKERS]
    env = slurm_env(tmp_path, SLURM_JOB_ID="77", SLURM_NNODES="2", SLURM_JOB_NODELIST="127.0.0.1",
                    OUTPUT_DIR=str(out), GPUS_PER_NODE="1")
    job = Nodes([command], tmp_path, MASTER_PORT=str(free_port()), **env)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not ((out / "trackkit" / "metrics.jsonl").exists() and events(out, "train")):
        assert time.monotonic() < deadline and job.procs[0].poll() is None, job.output()
        time.sleep(0.1)
    os.kill(job.procs[0].pid, signal.SIGTERM)
    assert job.wait() == [143], job.output()
    stopped = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())["step"]
    assert 0 < stopped < 48 and f"stopped by SIGTERM at step {stopped}; checkpoint saved" in job.output()
    assert json.loads((out / "trackkit" / "run.json").read_text())["status"] == "interrupted"

    again = Nodes([command], tmp_path, MASTER_PORT=str(free_port()), **env)  # SLURM requeued it: same job id
    assert again.wait() == [0], again.output()
    assert f"Resuming from step {stopped}" in again.output()
    logged = losses(out)
    assert logged.keys() == long_reference.keys()
    assert list(logged.values()) == pytest.approx(list(long_reference.values()), rel=1e-5)
    assert_every_step_once_everywhere(out, list(range(1, 49)))
    assert len((tmp_path / "srun.log").read_text().splitlines()) == 2
    print(f"SIGTERM once the first step was recorded: stopped at step {stopped}, resumed to 48")
