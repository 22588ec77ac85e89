"""Several processes: each its own share of the data, losses averaged, rank 0 alone tracking; torchrun and DDP."""
from __future__ import annotations

import json

import pytest
import torch
from multiprocess_util import (
    ALL_TRACKERS,
    PER_RANK_BATCH,
    SCHEDULE,
    assert_one_record,
    corpus,
    launch,
    losses,
    model_args,
    reference,
    torchrun,
)
from trainer_util import train

from reference_trainer import distributed
from reference_trainer.data import EpochBatches, Windows
from reference_trainer.faults import LostProcesses

__all__ = ["corpus", "reference"]  # fixtures


def first_tokens(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    return [int(t) for x, _ in batches for t in x[:, 0]]


def test_each_rank_takes_its_own_share_of_the_one_process_step():
    windows = Windows(torch.arange(4 * 100 + 1, dtype=torch.int32), block_size=4)  # window i starts with token 4i
    whole = EpochBatches(windows, batch_size=6, grad_accum=2, seed=3)
    shares = [EpochBatches(windows, batch_size=3, grad_accum=2, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert shares[0].steps_per_epoch == shares[1].steps_per_epoch == whole.steps_per_epoch == 8
    for position in (0, 5):
        one = first_tokens(whole.micro_batches(1, position))
        mine = [first_tokens(s.micro_batches(1, position)) for s in shares]
        assert not set(mine[0]) & set(mine[1])
        assert sorted(mine[0] + mine[1]) == sorted(one)


def test_evaluation_shards_cover_the_windows_once_with_as_many_batches_per_rank():
    windows = Windows(torch.arange(4 * 10 + 1, dtype=torch.int32), block_size=4)
    shards = [list(windows.shard(batch_size=3, max_batches=4, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]  # 4 batches over 3 ranks: ranks 1 and 2 repeat one, uncounted
    counted = [int(t) for s in shards for x, _, c in s if c for t in x[:, 0]]
    assert sorted(counted) == [4 * i for i in range(10)]
    assert [c for s in shards for _, _, c in s] == [True, True, True, False, True, False]


def test_only_rank_0_prints_a_bad_input_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    result = train("--batch-size", 0, "--output-dir", tmp_path / "run")
    assert result.exit_code == 2 and result.output == ""


@pytest.mark.slow
def test_torchrun_plain_engine_logs_averaged_losses_once_and_resumes(corpus, reference, tmp_path):
    """DDP on gloo with gradient accumulation (no_sync on the first micro-batch), stopped at step 3 and resumed."""
    out = tmp_path / "run"
    args = [*model_args(corpus, PER_RANK_BATCH // 2), *SCHEDULE, *ALL_TRACKERS, "--grad-accum", 2, "--output-dir", out]
    args[args.index("--eval-batches") + 1] = "8"  # the same windows as the reference's evaluation
    first = launch(torchrun(), *args, "--max-steps", 3)
    assert first.returncode == 0, first.stdout
    result = launch(torchrun(), *args, "--resume")
    assert result.returncode == 0, result.stdout
    assert "Resuming from step 3" in result.stdout

    logged = losses(out)
    assert logged.keys() == reference.keys()
    assert list(logged.values()) == pytest.approx(list(reference.values()), rel=1e-5)
    assert_one_record(out, result.stdout)
    config = json.loads((out / "trackkit" / "config.json").read_text())
    assert (config["engine"], config["world_size"], config["tokens_per_step"]) == ("torch", 2, 2 * PER_RANK_BATCH * 16)
    refused = train("--resume", "--output-dir", out, "--deepspeed", "--max-steps", 8)
    assert refused.exit_code == 2 and refused.output.splitlines() == [
        f"Error: checkpoint '{out}/checkpoints/last' was written by the torch engine; resume it without --deepspeed"]


@pytest.mark.parametrize("error, step, line", [
    (RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:7571: Connection "
                  "reset by peer. This is typically caused by a remote worker hanging or bugs in the application."),
     12, "lost contact with the run's other 2 processes after step 12: Read error [127.0.0.1]:7571: Connection reset "
         "by peer; one of them died, hangs or lost its network; --resume continues from the last checkpoint"),
    (RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for "
                  "recv operation to complete"),
     None, "waited 5 s (--dist-timeout) for the run's other 2 processes before the first step: Timed out waiting "
           "5000ms for recv operation to complete; one of them died, hangs or lost its network; --resume continues "
           "from the last checkpoint"),
])
def test_a_lost_process_is_said_in_one_line_of_what_was_waited_for(monkeypatch, error, step, line):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(distributed, "initialized", lambda: True)  # as after joining
    assert distributed.lost_contact(error) and not distributed.lost_contact(RuntimeError("shape mismatch"))
    assert LostProcesses.of(error, 5.0, step).message == line


def test_dist_timeout_is_checked_like_every_option(tmp_path):
    result = train("--dist-timeout", 0, "--output-dir", tmp_path / "run")
    assert result.exit_code == 2 and result.output.splitlines() == ["Error: --dist-timeout must be positive, got 0.0"]
