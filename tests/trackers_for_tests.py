"""Trackers used by the tests, loaded by path (``trackers_for_tests:Recording``) like a user's own."""
from __future__ import annotations

import json
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


class Minimal:
    """The smallest tracker contract v1 allows: start, the catch-all, finish."""

    @trackkit.hookimpl
    def trackkit_start(self, run, config):
        CALLS.append(("start", run.name))

    @trackkit.hookimpl
    def trackkit_log_metrics(self, namespace, metrics, step, timestamp):
        CALLS.append(("metrics", namespace, step, timestamp, dict(metrics)))

    @trackkit.hookimpl
    def trackkit_finish(self, status):
        CALLS.append(("finish", status))


class WrongArgument:
    @trackkit.hookimpl
    def trackkit_log_train(self, metrics, steps):
        pass


class FlakyFile:
    """A file backend that is down while ``<output_dir>/flaky/DOWN`` exists: it gathers rows in its log
    hook and writes them in its flush, which fails while down (keeping the rows), as the contract asks.
    On resume it skips every metric at a step its file already holds, so a replay sends nothing twice.
    """

    def __init__(self):
        self.rows, self.held, self.path = [], {}, None

    @trackkit.hookimpl
    def trackkit_start(self, run):
        folder = run.dir / "flaky"
        folder.mkdir(parents=True, exist_ok=True)
        self.down, self.path = folder / "DOWN", folder / "rows.jsonl"
        if self.down.exists():
            raise ConnectionError("flaky backend is down")
        if run.resumed_from_step is not None and self.path.exists():
            for row in map(json.loads, self.path.read_text().splitlines()):
                self.held[row["key"]] = max(self.held.get(row["key"], -1), row["step"])

    @trackkit.hookimpl
    def trackkit_log_metrics(self, metrics, step, timestamp, seq):
        self.rows += [{"key": k, "step": step, "value": v, "time": timestamp, "seq": seq}
                      for k, v in metrics.items() if step > self.held.get(k, -1)]

    @trackkit.hookimpl
    def trackkit_flush(self):
        if self.down.exists():
            raise ConnectionError("flaky backend is down")
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(row) + "\n" for row in self.rows))
        self.rows.clear()


class Poison:
    """A backend that refuses any record holding the metric ``bad`` (its flushes work)."""

    @trackkit.hookimpl
    def trackkit_log_metrics(self, metrics, step):
        if any(k.endswith("/bad") for k in metrics):
            raise ValueError("this backend cannot store 'bad'")
        CALLS.append(("metrics", step))

    @trackkit.hookimpl
    def trackkit_flush(self):
        pass
