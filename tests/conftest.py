import os
import sys
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


@pytest.fixture(autouse=True)
def _english_unless_asked():
    """The language trackkit prints in is the process's: a test that asks for Chinese keeps it to itself."""
    from trackkit import messages

    messages.set_lang(None)
    yield
    messages.set_lang(None)
