"""The reference trainer on a CUDA GPU: steps that do not log never wait for the device.

Skipped where torch sees no GPU (the CPU machines CI runs on); run it on a GPU machine.
"""
import pytest
import torch
from trainer_util import events

from reference_trainer.config import TrainConfig
from reference_trainer.train import Trainer
from trackkit.options import Tracking

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
