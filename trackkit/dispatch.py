"""One worker thread and one bounded queue per tracker.

The training thread only appends to queues; each tracker's hooks run on its own thread, so a
slow backend delays nobody but itself, and an exception in one is contained to that tracker.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .metrics import nonfinite, qualified
from .report import report

# Hooks whose "metrics" argument gets namespaced names and plain numbers before the tracker sees
# it, and their namespace (trackkit_log_metrics names its own).
_METRIC_HOOKS = {
    "trackkit_log_train": "train", "trackkit_log_eval": "eval", "trackkit_log_epoch": "epoch",
    "trackkit_log_final": "final", "trackkit_log_metrics": None,
}


@dataclass
class Limits:
    queue_size: int = 10_000  # records waiting per tracker before the caller has to wait
    stall_timeout: float = 60.0  # how long the caller waits on a full queue before giving up on it
    max_failures: int = 5  # consecutive exceptions before a tracker is switched off
    # Seconds between a worker's rounds: each takes what gathered and flushes it. Every wake-up
    # takes the GIL from the training thread and a core from torch's threads, and a record costs
    # a backend several times more alone than in a batch, so rounds are rare. A flush or stop
    # request, or a full queue, starts a round at once.
    flush_interval: float = 1.0


class _Marker:
    """A flush or stop request travelling through the queue behind the records before it."""

    def __init__(self, flush: bool, stop: bool = False):
        self.flush, self.stop = flush, stop
        self.done = threading.Event()


class TrackerWorker:
    def __init__(
        self,
        name: str,
        call: Callable[[str, dict[str, Any]], Any],
        limits: Limits,
        on_nonfinite: Callable[[str, str, Any], None],
        flushes: bool,
    ):
        self.name = name
        self._call = call  # call(hook_name, kwargs): the tracker's own hook implementations
        self._limits = limits
        self._on_nonfinite = on_nonfinite
        self._flushes = flushes  # whether the tracker implements trackkit_flush
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.enqueue = self._queue.put  # put() without its checks, for callers that make them now and then
        self._wake = threading.Event()
        # A record is delivered once its hook returned and, for a tracker with trackkit_flush,
        # a flush after it returned too: what sat in a write buffer when the disk filled is lost.
        self.delivered = 0
        self._unflushed = 0  # records whose hook returned since the last flush
        self._missed: _Marker | None = None  # the last request the tracker did not answer in time
        self.state = "ok"  # "ok", "failed" (switched off after errors) or "stalled" (hung)
        self._failures = 0
        self._reported = False
        self._thread = threading.Thread(target=self._loop, name=f"trackkit-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def behind(self) -> bool:
        """Whether a flush or stop request this tracker did not answer in time is still unanswered."""
        return self._missed is not None and not self._missed.done.is_set()

    # -- caller's thread -------------------------------------------------------------------
    def put(self, item: tuple[str, dict[str, Any]]) -> None:
        """Queue ``(hook, kwargs)``, waiting for room; dropped for a switched-off tracker."""
        if self.state == "ok" and self._queue.qsize() < self._limits.queue_size:
            self._queue.put(item)
        else:
            self._put_slowly(item)

    def _put_slowly(self, item: tuple[str, dict[str, Any]]) -> None:
        """A full queue, or a tracker that is switched off."""
        if self.state == "ok" and self._wait_for_room():
            pass
        elif not (item[0] == "trackkit_finish" and self.state == "failed"):  # a failed one may still clean up
            return  # dropped: health() counts it as lost
        self._queue.put(item)

    def _wait_for_room(self) -> bool:
        deadline = time.monotonic() + self._limits.stall_timeout
        self._wake.set()
        while self.pending >= self._limits.queue_size:
            if time.monotonic() > deadline or self.state != "ok":
                if self.state == "ok":
                    self.state = "stalled"
                    report(
                        f"tracker {self.name!r} has not taken a record for {self._limits.stall_timeout:.0f}s "
                        f"with {self.pending} waiting; switched off, the run goes on without it"
                    )
                return False
            time.sleep(0.001)
        return True

    def request(self, flush: bool, stop: bool = False) -> Callable[[float], bool]:
        """Queue a flush or stop request behind everything logged so far.

        Returns ``wait(timeout)``: True once the tracker handled the request, False if the
        timeout ran out. Asking every tracker first and waiting after lets them work in parallel.
        """
        if self.state == "stalled":
            return lambda timeout: False
        if self.state != "ok" and not stop:
            return lambda timeout: True
        if self.behind and not stop:
            return lambda timeout: False  # waiting again for a tracker still behind would stall the caller every time
        marker = _Marker(flush=flush, stop=stop)
        self._queue.put(marker)
        self._wake.set()

        def wait(timeout: float) -> bool:
            if marker.done.wait(timeout):
                return True
            self._missed = marker
            return False

        return wait

    def health(self, records: int) -> dict[str, Any]:
        """State, and how many of the ``records`` logged so far were delivered and lost.

        Lost is every record not delivered: failed, dropped, still queued or still in the hook.
        """
        return {"state": self.state, "delivered": self.delivered, "lost": records - self.delivered}

    # -- worker thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        # The worker sleeps between rounds instead of blocking in get(): a blocked reader makes
        # every put() wake it with a system call, and that wake-up would be paid on the training
        # thread. Each round handles everything that gathered, back to back, then flushes it.
        last_flush = time.monotonic()
        while True:
            self._wake.wait(self._limits.flush_interval)
            self._wake.clear()
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Marker):
                    if item.flush:
                        self._flush()
                        last_flush = time.monotonic()
                    item.done.set()
                    if item.stop:
                        return
                    continue
                self._handle(*item)
                if self._unflushed and time.monotonic() - last_flush >= self._limits.flush_interval:
                    self._flush()  # a queue that never empties still reaches storage every interval
                    last_flush = time.monotonic()
            self._flush()
            last_flush = time.monotonic()

    def _handle(self, hook: str, kwargs: dict[str, Any]) -> None:
        if hook == "trackkit_finish":  # even a switched-off tracker may close its files
            self._invoke(hook, kwargs, count=False)
            return
        if self.state != "ok":
            return
        if hook in _METRIC_HOOKS:
            kwargs = self._converted(_METRIC_HOOKS[hook] or kwargs["namespace"], kwargs)
        if hook == "trackkit_start":
            if not self._invoke(hook, kwargs, count=False):
                self.state = "failed"
                report(f"tracker {self.name!r} could not start and is switched off")
        elif self._invoke(hook, kwargs):
            self._unflushed += 1

    def _flush(self) -> None:
        if self._unflushed and self.state == "ok" and self._invoke("trackkit_flush", {}):
            self.delivered += self._unflushed
        self._unflushed = 0  # after a failed flush they are lost: nothing says they reached storage

    def _converted(self, namespace: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        metrics = qualified(namespace, kwargs["metrics"])
        for key in nonfinite(metrics):
            self._on_nonfinite(key, metrics[key], kwargs.get("step"))
        return {**kwargs, "metrics": metrics}

    def _invoke(self, hook: str, kwargs: dict[str, Any], count: bool = True) -> bool:
        try:
            self._call(hook, kwargs)
        except Exception as exc:  # a tracker's bug must never reach the training loop
            self._failures += 1
            if not self._reported:
                self._reported = True
                report(f"tracker {self.name!r} failed in {hook}: {type(exc).__name__}: {exc} (the run goes on)")
            if count and self._failures >= self._limits.max_failures and self.state == "ok":
                self.state = "failed"
                report(f"tracker {self.name!r} switched off after {self._failures} failures in a row")
            return False
        if hook == "trackkit_flush" or not self._flushes:
            # A record written into a buffer proves little while the flushes fail (a full disk).
            self._failures = 0
        return True
