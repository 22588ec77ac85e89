"""The layer's notices: one line each, on stderr, so they never mix with metric lines."""
from __future__ import annotations

import sys
from typing import Any

from .messages import notice


def report(key: str, /, **fields: Any) -> None:
    """Say notice ``key`` (messages.NOTICES) in the process's language."""
    # One write per line: print() writes the newline apart, and lines from two tracker threads mixed.
    sys.stderr.write(f"trackkit: {notice(key, **fields)}\n")
    sys.stderr.flush()
