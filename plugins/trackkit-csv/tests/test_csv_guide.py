"""docs/writing-a-tracker.md builds this plugin: its listings must be the plugin's files, verbatim."""
from __future__ import annotations

import re
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1]
GUIDE = PLUGIN.parents[1] / "docs" / "writing-a-tracker.md"


def test_the_guide_lists_the_plugin_files_verbatim() -> None:
    # A listing is a fenced block right after a line naming the file: `path`:
    listings = dict(re.findall(r"^`([\w./-]+)`:.*?\n\n```\w*\n(.*?)^```$", GUIDE.read_text(), re.M | re.S))
    assert sorted(listings) == ["pyproject.toml", "tests/test_csv_tracker.py", "trackkit_csv/__init__.py"]
    for name, text in listings.items():
        assert text == (PLUGIN / name).read_text(), f"the guide's {name} differs from {PLUGIN / name}"
