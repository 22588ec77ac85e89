"""Trackers used by the tests, loaded by path (``trackers_for_tests:Recording``) like a user's own."""
from __future__ import annotations

import threading
import time

import trackkit

CALLS: list[tuple] = []  # (hook, args...) in the order the Recording tracker received them
RELEASE = threading.Event()  # lets a Hanging tracker go


class Recording:
    @trackkit.hookimpl
    def trackkit_start(self, run, config):
        CALLS.append(("start", run.name, dict(config)))

    @trackkit.hookimpl
    def trackkit_log_train(self, metrics, step):
        CALLS.append(("train", step, dict(metrics)))

    @trackkit.hookimpl
    def trackkit_log_eval(self, metrics, step):
        CALLS.append(("eval", step, dict(metrics)))

    @trackkit.hookimpl
    def trackkit_log_epoch(self, metrics, epoch, step):
        CALLS.append(("epoch", epoch, step, dict(metrics)))

    @trackkit.hookimpl
    def trackkit_log_final(self, metrics):
        CALLS.append(("final", dict(metrics)))

    @trackkit.hookimpl
    def trackkit_log_metrics(self, namespace, metrics, step):
        CALLS.append(("metrics", namespace, step, dict(metrics)))

    @trackkit.hookimpl
    def trackkit_log_artifact(self, path, name, kind, metadata):
        CALLS.append(("artifact", name, kind, dict(metadata)))

    @trackkit.hookimpl
    def trackkit_finish(self, status, summary):
        CALLS.append(("finish", status))


class Failing:
    """Raises on every metric; starts fine so that the failures are counted per record."""

    @trackkit.hookimpl
    def trackkit_log_train(self, metrics, step):
        raise RuntimeError(f"backend down at step {step}")


class FailAfter:
    """Delivers its first 10 records, then raises on every one: a backend that goes down mid-run."""

    AFTER = 10

    def __init__(self):
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if self.calls > self.AFTER:
            raise ConnectionError(f"backend gone after {self.AFTER} records")

    @trackkit.hookimpl
    def trackkit_log_train(self, metrics, step):
        self._call()

    @trackkit.hookimpl
    def trackkit_log_eval(self, metrics, step):
        self._call()

    @trackkit.hookimpl
    def trackkit_log_epoch(self, metrics, epoch, step):
        self._call()

    @trackkit.hookimpl
    def trackkit_log_final(self, metrics):
        self._call()

    @trackkit.hookimpl
    def trackkit_log_artifact(self, path, name, kind, metadata):
        self._call()


class Slow:
    @trackkit.hookimpl
    def trackkit_log_train(self, metrics, step):
        time.sleep(1.0)


class Hanging:
    @trackkit.hookimpl
    def trackkit_log_train(self, metrics, step):
        RELEASE.wait()


class Misspelt:
    @trackkit.hookimpl
    def trackkit_log_trian(self, metrics, step):
        pass


class NeedsMissing:
    """Names a backend package that is not installed."""

    requires = ("no_such_backend_for_tests",)


class NeedsBroken:
    """Names a backend package that is installed but fails to import (the test writes it)."""

    requires = ("broken_backend_for_tests",)
