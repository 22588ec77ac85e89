"""The layer's own messages: one line each, on stderr, so they never mix with metric lines."""
from __future__ import annotations

import sys


def report(message: str) -> None:
    # One write per line: print() writes the newline apart, and lines from two tracker threads mixed.
    sys.stderr.write(f"trackkit: {message}\n")
    sys.stderr.flush()
