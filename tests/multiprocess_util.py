"""Shared by the multi-process tests: launching trackkit-train in two processes and reading what they left.

Each multi-process run is checked against a one-process run of the plain engine whose batch is
the two processes' batches together: same windows per step, so the same losses (within float
noise) if and only if the losses logged are averages over both processes.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import BIN
from trainer_util import SMALL_MODEL, child_env, events, train, write_corpus

PER_RANK_BATCH = 4
# Two evaluations (steps 3 and 6), every step logged; the schedule does not depend on --max-steps,
# so that a run stopped at step 3 and resumed matches one that went straight to 6.
SCHEDULE = ["--max-steps", "6", "--log-interval", "1", "--eval-interval", "3", "--warmup-steps", "2",
            "--lr-decay-steps", "6", "--device", "cpu", "--checkpoint-interval", "0"]
ALL_TRACKERS = ["--tracker", "console,jsonl,tensorboard,wandb", "--offline"]
LAUNCH_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_launcher() -> list[str]:
    """DeepSpeed's own launcher, two processes on this machine (no GPU needed)."""
    return [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), str(BIN / "trackkit-train")]


def torchrun() -> list[str]:
    return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master-port", str(free_port()),
            str(BIN / "trackkit-train")]


def launch(launcher: list[str], *args: object) -> subprocess.CompletedProcess:
    """``launcher trackkit-train ARGS``; stdout and stderr together in .stdout."""
    # Two processes share the machine's cores: one thread each keeps them from waiting on each other.
    env = child_env(OMP_NUM_THREADS="1")
    return subprocess.run([*launcher, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=LAUNCH_TIMEOUT)


def model_args(corpus: Path, batch_size: int) -> list[str]:
    """SMALL_MODEL on ``corpus`` with ``batch_size`` sequences per micro-batch."""
    args = [*SMALL_MODEL, "--data", str(corpus)]
    args[args.index("--batch-size") + 1] = str(batch_size)
    return args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), chars=6000)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict[tuple[str, int], float]:
    """Losses of one process, plain engine, with the batch of two processes together."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = train(*model_args(corpus, 2 * PER_RANK_BATCH), *SCHEDULE, "--output-dir", out, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    return losses(out)


def losses(run_dir: Path) -> dict[tuple[str, int], float]:
    """{("train" or "eval", step): loss} from the local record; fails if a step is recorded twice."""
    found: dict[tuple[str, int], float] = {}
    for event in events(run_dir):
        if event["event"] in ("train", "eval"):
            key = (event["event"], event["step"])
            assert key not in found, f"{key} recorded twice"
            found[key] = event["metrics"][f"{event['event']}/loss"]
    return found


def assert_one_record(run_dir: Path, output: str) -> None:
    """Rank 0 alone tracked: one local record, one TensorBoard folder, one wandb run, and it knew the world size.

    ``output`` is the last launch's console output.
    """
    record = json.loads((run_dir / "trackkit" / "run.json").read_text())
    assert record["status"] == "success" and record["world_size"] == 2
    assert [p.name for p in run_dir.rglob("run.json")] == ["run.json"]
    assert [p.name for p in run_dir.rglob("metrics.jsonl")] == ["metrics.jsonl"]
    assert {p.parent for p in run_dir.rglob("*tfevents*")} == {run_dir / "tensorboard"}
    assert len(list((run_dir / "tensorboard").glob("*tfevents*"))) == 1  # a resume rewrites the file, no second writer
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    # wandb keeps a folder per process start; a resumed run shares its id with the first part.
    assert wandb_runs and {p.name.rsplit("-", 1)[1] for p in wandb_runs} == {record["backend_ids"]["wandb"]}
    starts = re.findall(r"^Run \S+ \(\w+\) -> ", output, re.M)
    assert len(starts) == 1 and output.count("processes: 2") == 1, output  # from rank 0 only
