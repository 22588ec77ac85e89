"""Lightning with TrackkitLogger: a bigram model on the built-in corpus, a few steps on the CPU, and what the
local record, TensorBoard and wandb (offline) hold afterwards."""
import signal

import pytest

pytest.importorskip("lightning")
import pydoc_data.topics  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402
from integration_util import TRACKERS, assert_every_backend_holds, events, record_steps, run_json  # noqa: E402
from torch.nn.functional import cross_entropy  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from trackkit import TrackkitError  # noqa: E402
from trackkit.integrations.lightning import TrackkitLogger  # noqa: E402

IDS = torch.tensor(list("\n\n".join(pydoc_data.topics.topics.values()).encode()[:2_049]))
PAIRS = TensorDataset(IDS[:-1], IDS[1:])  # 2,048 pairs: 4 batches of 512 an epoch


class Bigram(L.LightningModule):
    def __init__(self, learning_rate: float = 1.0, wandb_api_key: str = "never-written", fail_at: int = -1,
                 error: type = RuntimeError):
        super().__init__()
        self.save_hyperparameters(ignore=["fail_at", "error"])
        self.table = torch.nn.Embedding(256, 256)
        self.fail_at, self.error = fail_at, error

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise self.error("stopped")
        loss = cross_entropy(self.table(batch[0]), batch[1])
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("grads/scale", 2.0)
        self.log("lr", 1.0)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", cross_entropy(self.table(batch[0]), batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", cross_entropy(self.table(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)


def fit(logger, model=None, **overrides):
    torch.manual_seed(0)
    settings = dict(logger=logger, max_epochs=2, log_every_n_steps=1, accelerator="cpu", enable_progress_bar=False,
                    enable_model_summary=False, callbacks=[L.pytorch.callbacks.ModelCheckpoint(monitor="val/loss")])
    trainer = L.Trainer(**{**settings, **overrides})
    trainer.fit(model or Bigram(), DataLoader(PAIRS, batch_size=512), DataLoader(PAIRS, batch_size=1024))
    return trainer


def test_every_metric_reaches_every_backend_at_lightnings_step(tmp_path):
    out = tmp_path / "lit"
    logger = TrackkitLogger(trackers=TRACKERS, output_dir=out)
    fit(logger)

    every, ends = list(range(8)), [3, 7]  # Lightning's steps count from 0; epochs end after batches 3 and 7
    assert_every_backend_holds(out, {
        "train/loss": every, "train/lr": every, "train/epoch": every, "grads/scale": every,
        "eval/loss": ends, "epoch/train_loss": ends,
    })
    assert [(e["epoch"], e["step"]) for e in events(out) if e["event"] == "epoch"] == [(1, 3), (2, 7)]
    artifacts = [(e["name"], e["kind"], e["step"]) for e in events(out) if e["event"] == "artifact"]
    assert artifacts == [("epoch=0-step=4", "model", 3), ("best", "model", 3), ("epoch=1-step=8", "model", 7),
                         ("best", "model", 7)]
    info = run_json(out)
    assert info["status"] == "success" and info["id"] == logger.version
    config = (out / "trackkit" / "config.json").read_text()
    assert '"learning_rate": 1.0' in config and "never-written" not in config
    assert (out / logger.name / logger.version / "checkpoints" / "epoch=1-step=8.ckpt").exists()


def test_the_same_logger_used_again_continues_its_run(tmp_path):
    out = tmp_path / "lit"
    logger = TrackkitLogger(trackers=["jsonl"], output_dir=out)
    trainer = fit(logger, max_epochs=1)
    first = run_json(out)["id"]
    trainer.test(dataloaders=DataLoader(PAIRS, batch_size=1024))
    info = run_json(out)
    assert info["id"] == first and info["status"] == "success"
    steps = record_steps(out)
    assert steps["train/loss"] == [0, 1, 2, 3] and steps["test/loss"] == [4]


def test_a_tracker_that_raises_does_not_stop_training(tmp_path):
    out = tmp_path / "lit"
    trainer = fit(TrackkitLogger(trackers=["jsonl", "trackers_for_tests:Failing"], output_dir=out))
    assert trainer.global_step == 8
    assert record_steps(out)["train/loss"] == list(range(8))
    info = run_json(out)
    assert info["status"] == "success" and info["tracker_health"]["failing"]["lost"] > 0


def test_an_exception_finishes_the_run_failed(tmp_path):
    out = tmp_path / "lit"
    with pytest.raises(RuntimeError, match="stopped"):
        fit(TrackkitLogger(trackers=["jsonl"], output_dir=out), Bigram(fail_at=2))
    assert run_json(out)["status"] == "failed"
    assert record_steps(out)["train/loss"] == [0, 1]


def test_ctrl_c_finishes_the_run_interrupted(tmp_path):
    out = tmp_path / "lit"
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning turns a KeyboardInterrupt into sys.exit(1) after finalize
            fit(TrackkitLogger(trackers=["jsonl"], output_dir=out), Bigram(fail_at=2, error=KeyboardInterrupt))
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores further Ctrl-Cs from then on
    assert run_json(out)["status"] == "interrupted"


def test_bad_input_is_one_line_before_training(tmp_path):
    with pytest.raises(TrackkitError, match=r"^unknown tracker 'nope'; available: "):
        TrackkitLogger(trackers=["nope"], output_dir=tmp_path / "a")
    (tmp_path / "file").write_text("")
    with pytest.raises(TrackkitError, match="cannot be created"):
        TrackkitLogger(trackers=["jsonl"], output_dir=tmp_path / "file" / "run")
    fit(TrackkitLogger(trackers=["jsonl"], output_dir=tmp_path / "b"), max_epochs=1)
    with pytest.raises(TrackkitError, match="already holds run 'b' .*pass resume_from_step"):
        TrackkitLogger(trackers=["jsonl"], output_dir=tmp_path / "b")
