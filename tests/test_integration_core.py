"""The core keeps no import of the frameworks, and the metric names of Lightning and Accelerate land where the
README says."""
import subprocess
import sys

import pytest

from trackkit import TrackkitError
from trackkit.integrations._common import check_output_dir, route

FRAMEWORKS = ("transformers", "lightning", "pytorch_lightning", "accelerate")


def test_importing_trackkit_imports_no_framework():
    code = ("import sys, trackkit, trackkit.integrations, trackkit.options, trackkit.cli; "
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name, where", [
    ("train/loss", ("train", "loss")), ("train_loss", ("train", "loss")), ("train_loss_step", ("train", "loss")),
    ("train_loss_epoch", ("epoch", "train_loss")), ("train/loss_epoch", ("epoch", "train_loss")),
    ("val/loss", ("eval", "loss")), ("val_acc", ("eval", "acc")), ("eval_loss", ("eval", "loss")),
    ("val_loss_epoch", ("epoch", "val_loss")), ("val/acc/top1", ("eval", "acc.top1")),
    ("loss", ("train", "loss")), ("loss_step", ("train", "loss")), ("loss_epoch", ("epoch", "loss")),
    ("lr-SGD", ("train", "lr-SGD")), ("learning_rate", ("train", "learning_rate")),
    ("grads/norm", ("grads", "norm")), ("test/acc", ("test", "acc")), ("final/best", ("final", "best")),
    ("my metrics/x", ("train", "my metrics.x")),
])
def test_metric_names_route_to_their_namespace(name, where):
    assert route(name) == where


@pytest.mark.parametrize("under, why", [("", "is not writable"), ("run", "cannot be created")],
                         ids=["the-folder", "under-it"])
def test_an_output_dir_that_cannot_be_written_is_one_line_before_training(read_only, under, why):
    with pytest.raises(TrackkitError, match=rf"^output_dir '.*' {why}: Read-only file system$"):
        check_output_dir(read_only / under)
