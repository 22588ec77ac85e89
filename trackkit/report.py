"""The layer's own messages: one line each, on stderr, so they never mix with metric lines."""
from __future__ import annotations

import sys


def report(message: str) -> None:
    print(f"trackkit: {message}", file=sys.stderr, flush=True)
