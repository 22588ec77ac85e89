import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # console scripts of the environment running the tests

# No test may reach wandb's servers or write into the user's home.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("TRACKKIT_TRACKERS", None)
os.environ.pop("TRACKKIT_OFFLINE", None)
os.environ["TRACKKIT_CONSOLE_LANG"] = "en"  # whatever the machine's locale; tests that want Chinese ask for it


@pytest.fixture(autouse=True)
def _wandb_home(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    # wandb puts its service's address in the environment of a process that ran it; a trainer the
    # test starts would inherit it and hand its run to this process's wandb service.
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


@pytest.fixture(autouse=True)
def _english_unless_asked():
    """The language trackkit prints in is the process's: a test that asks for Chinese keeps it to itself."""
    from trackkit import messages

    messages.set_lang(None)
    yield
    messages.set_lang(None)


@contextlib.contextmanager
def mounted(folder: Path, *commands: list[str]) -> Iterator[Path]:
    """``folder`` with each ``mount`` command line of ``commands`` run on it, unmounted after; the
    test is skipped where it cannot mount (that needs root, with the right to mount)."""
    folder.mkdir(parents=True, exist_ok=True)
    done_any = False
    try:
        for command in commands:
            try:
                done = subprocess.run([*command, str(folder)], capture_output=True, text=True)
            except FileNotFoundError:
                pytest.skip("no mount command here")
            if done.returncode:
                pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): needs root")
            done_any = True
        yield folder
    finally:
        if done_any:  # lazy: even if a failed test's trainer still holds it
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture
def small_filesystem(tmp_path):
    """A 1 MiB tmpfs: filling it makes writes fail even for root, even to files already open."""
    with mounted(tmp_path / "small", ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs"]) as folder:
        yield folder


@pytest.fixture
def read_only(tmp_path):
    """A read-only filesystem: it refuses writes even to root, which permission bits do not."""
    with mounted(tmp_path / "read-only", ["mount", "-t", "tmpfs", "-o", "ro", "tmpfs"]) as folder:
        yield folder


def fill(folder: Path) -> None:
    """Take every free byte of the filesystem ``folder`` is on (``folder / "filler"``)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
