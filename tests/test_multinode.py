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
from pathlib import Path

import pytest
from multiprocess_util import (
    ALL_TRACKERS,
    PER_RANK_BATCH,
    PROBE,
    SCHEDULE,
    Nodes,
    assert_one_record,
    corpus,
    free_port,
    losses,
    model_args,
    nodes_killed_after,
    reference,
    torchrun_node,
    writes,
)

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
    assert not [r for r in others if r["event"] == "subprocess.Popen"]  # no wandb service of their own
    if shards:
        assert others and all(p.startswith(str(out / "checkpoints" / ".tmp-step-")) for r in others for p in r["paths"])
    else:
        assert others == []


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
