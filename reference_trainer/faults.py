"""What the loop does when a run is stopped (SIGTERM, Ctrl-C) or its loss stops being a number.

- The first SIGTERM or SIGINT sets a flag that the loop reads after each optimizer step: the
  step in progress ends, a checkpoint is saved, the trackers finish with status "interrupted",
  and the process exits with 128 + the signal's number (143, 130), as a shell reports a process
  that signal ended. A second Ctrl-C ends the process at once, as ``kill -9`` would; ``--resume``
  continues from the last checkpoint either way. A repeated SIGTERM changes nothing: launchers
  (torchrun, DeepSpeed's) forward the scheduler's SIGTERM to processes that got it already.
- ``--nan-policy stop`` ends a run whose training loss is not finite with ``Diverged`` (exit 3).
"""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import click

from . import distributed
from .lines import line

SIGNALS = (signal.SIGTERM, signal.SIGINT)
DIVERGED_EXIT_CODE = 3  # 1 is any crash, 2 a usage error: a scheduler can tell the three apart


def say(key: str, /, **fields: Any) -> None:
    """Line ``key`` (lines.py) for the user on stderr, from rank 0 only."""
    if distributed.is_main():
        click.echo(f"trackkit-train: {line(key, **fields)}", err=True)


class Interrupted(click.exceptions.Exit):
    """The run stopped for a signal, with a checkpoint; the exit code is 128 + the signal's number."""


class Diverged(click.ClickException):
    """``--nan-policy stop`` met a non-finite training loss: one ``Error: ...`` line, exit code 3."""

    exit_code = DIVERGED_EXIT_CODE

    def show(self, file=None) -> None:
        if distributed.is_main():  # every process stops alike; one says why
            super().show(file)


class StopSignals:
    """SIGTERM and SIGINT handlers for as long as the ``with`` block lasts (in the main thread)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None  # the first signal, once one came
        self._previous: dict[int, Any] = {}  # what signal.signal returned: a handler, SIG_DFL or SIG_IGN

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        received = signal.Signals(signum)
        if self.received is None:
            self.received = received
            hint = line("hint_again" if received == signal.SIGINT else "hint")
            say("signal", signal=received.name, hint=hint)
        elif received == signal.SIGINT:  # a person who will not wait
            say("ctrl_c_again")
            os._exit(128 + signum)

    # In a multi-process run, a process may stop for a signal that only another one got so far.
    @property
    def name(self) -> str:
        return self.received.name if self.received else line("another_process")

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGTERM)
