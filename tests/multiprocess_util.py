"""Shared by the multi-process tests: launching trackkit-train in two processes and reading what they left.

Each multi-process run is checked against a one-process run of the plain engine whose batch is
the two processes' batches together: same windows per step, so the same losses (within float
noise) if and only if the losses logged are averages over both processes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psutil
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
PROBE = str(Path(__file__).resolve().parent / "rank_probe.py")  # trackkit-train, watched (see that file)


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


def torchrun_node(node_rank: int, port: int, *, nodes: int = 2, restarts: int = 0) -> list[str]:
    """torchrun for one "node" of ``nodes``, one process each, meeting at 127.0.0.1:``port`` (c10d rendezvous)."""
    return [str(BIN / "torchrun"), "--nnodes", str(nodes), "--node-rank", str(node_rank), "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", str(restarts),
            "--monitor-interval", "0.5"]


def deepspeed_node(node_rank: int, hostfile: Path, port: int) -> list[str]:
    """DeepSpeed's launcher for one "node" of ``hostfile``, started without ssh, meeting at 127.0.0.1:``port``."""
    return [str(BIN / "deepspeed"), "--no_ssh", "--node_rank", str(node_rank), "--hostfile", str(hostfile),
            "--master_addr", "127.0.0.1", "--master_port", str(port)]


def hostfile(folder: Path, nodes: int = 2) -> Path:
    """A DeepSpeed hostfile of ``nodes`` machines with one process each (names only: nothing connects to them)."""
    path = folder / "hostfile"
    path.write_text("".join(f"node{n} slots=1\n" for n in range(nodes)))
    return path


class Nodes:
    """Launcher processes started side by side on this machine, each one "node" of a run, each in its own session.

    Every process they start carries a marker in its environment, so that ``kill`` finds the
    workers too: launchers start them in sessions of their own, and a worker can outlive its
    launcher (frozen, or orphaned by a kill).
    """

    started: list[Nodes] = []

    def __init__(self, commands: list[list[object]], logs: Path, **env: str):
        self.marker = uuid.uuid4().hex
        self.logs = [logs / f"node{n}-{self.marker[:8]}.log" for n in range(len(commands))]
        # Two processes share the machine's cores: one thread each keeps them from waiting on each other.
        environment = child_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TRACKKIT_TEST_NODES=self.marker, **env)
        self.procs = []
        for command, log in zip(commands, self.logs):
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen([str(c) for c in command], env=environment, stdout=out,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
        Nodes.started.append(self)

    def wait(self, timeout: float = LAUNCH_TIMEOUT) -> list[int]:
        """Every launcher's exit code."""
        return [p.wait(timeout) for p in self.procs]

    def wait_for_ends(self, count: int, timeout: float = LAUNCH_TIMEOUT) -> None:
        """Until ``count`` of the launchers have ended."""
        deadline = time.monotonic() + timeout
        while sum(p.poll() is not None for p in self.procs) < count:
            assert time.monotonic() < deadline, f"fewer than {count} launchers ended:\n{self.output()}"
            time.sleep(0.2)

    def output(self, node: int | None = None) -> str:
        """One node's console output, or every node's one after the other."""
        return "".join(log.read_text() for n, log in enumerate(self.logs) if node in (None, n))

    def kill(self) -> None:
        """SIGKILL every process these launchers started, wherever it ended up."""
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("TRACKKIT_TEST_NODES") == self.marker:
                    os.kill(proc.pid, signal.SIGKILL)
            except (psutil.Error, ProcessLookupError):
                pass
        for proc in self.procs:
            proc.wait()


@pytest.fixture
def nodes_killed_after():
    """A test's launchers and everything they started are gone after it, passed or failed."""
    yield
    while Nodes.started:
        Nodes.started.pop().kill()


def assert_every_step_once_everywhere(run_dir: Path, steps: list[int]) -> None:
    """Every train step once in the local record, TensorBoard and wandb (one run id across its parts); run succeeded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trackkit.wandb_files import run_files

    record = json.loads((run_dir / "trackkit" / "run.json").read_text())
    assert record["status"] == "success"
    assert [e["step"] for e in events(run_dir, "train")] == steps
    board = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    board.Reload()
    assert [e.step for e in board.Scalars("train/loss")] == steps
    parts = run_files(run_dir / "wandb", record["backend_ids"]["wandb"])
    # One part per process start; a process killed soon after its start may leave one with nothing in it.
    assert len(parts) >= 2 and {p.run_id for p in parts if p.history} == {record["backend_ids"]["wandb"]}
    assert [row["train/step"] for p in parts for row in p.history if "train/step" in row] == steps


def writes(folder: Path) -> dict[int, list[dict]]:
    """What each rank changed on disk, as tests/rank_probe.py recorded it: {rank: [record, ...]}."""
    found: dict[int, list[dict]] = {}
    for log in sorted(folder.glob("rank-*.jsonl")):  # rank-<RANK>-<pid>.jsonl, empty if it changed nothing
        records = found.setdefault(int(log.name.split("-")[1]), [])
        records += [json.loads(line) for line in log.read_text().splitlines()]
    return found


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
    return one_process_losses(corpus, tmp_path_factory.mktemp("reference"), SCHEDULE)


def one_process_losses(corpus: Path, folder: Path, schedule: list[str]) -> dict[tuple[str, int], float]:
    """The losses of ``schedule`` trained in one process with the batch of two processes together."""
    result = train(*model_args(corpus, 2 * PER_RANK_BATCH), *schedule, "--output-dir", folder / "run",
                   "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    return losses(folder / "run")


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
