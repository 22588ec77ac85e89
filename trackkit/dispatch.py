"""One worker thread and one queue per tracker: the worker owns its tracker's hook calls and health.

The training thread only appends records to queues. Each worker takes what gathered about once a
second, calls its tracker's hooks back to back, then ``trackkit_flush``. A tracker that raises
is *failed*: its worker keeps taking its records (into a ``Backlog``) so that nobody waits,
probes it again with a growing backoff, and when a probe gets through replays what it missed,
in order, while training goes on. A tracker whose queue stays full for ``stall_timeout`` (a hook
that hangs) is *stalled*: the caller stops offering it records, and notes which, until it answers.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .backlog import Backlog
from .errors import TrackkitError
from .metrics import NonFinite
from .namespaces import CATCH_ALL, namespace
from .record import Artifact, Record
from .report import report

HOOKS = tuple(sorted(h for h in dir(hookspecs) if h.startswith("trackkit_")))


@dataclass
class Limits:
    queue_size: int = 10_000  # records waiting per tracker before the caller has to wait
    stall_timeout: float = 60.0  # how long the caller waits on a full queue before giving up on it
    buffer_size: int = 10_000  # records a failing tracker keeps in memory (older ones: read back from the local record)
    max_failures: int = 5  # attempts at one record its backend refuses while its flushes work, before it is dropped
    # Seconds between a worker's rounds: each takes what gathered and flushes it. Every wake-up
    # takes the GIL from the training thread and a core from torch's threads, and a record costs
    # a backend several times more alone than in a batch, so rounds are rare. A flush or stop
    # request, or a full queue, starts a round at once.
    flush_interval: float = 1.0
    probe_backoff: tuple[float, float] = (2.0, 60.0)  # first and longest wait between probes of a failing tracker


class Marker:
    """A flush request, or the stop (``finish``), travelling through the queue behind the records before it."""

    def __init__(self, finish: Mapping[str, Any] | None = None, deadline: float | None = None):
        self.finish, self.deadline = finish, deadline  # finish: trackkit_finish's arguments
        self.done = threading.Event()


def plugin_manager_for(name: str, tracker: object) -> pluggy.PluginManager:
    """A plugin manager holding ``tracker`` alone; a hook it misspells or misdeclares is a TrackkitError."""
    pm = pluggy.PluginManager("trackkit")
    pm.add_hookspecs(hookspecs)
    try:
        pm.register(tracker, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        hook = next((h for h in HOOKS if h in str(exc)), None)
        valid = (f"{hook} takes {', '.join(getattr(pm.hook, hook).spec.argnames) or 'no arguments'}" if hook
                 else f"the hooks are {', '.join(HOOKS)}")
        raise TrackkitError(f"tracker {name!r}: {str(exc).strip()}; {valid}") from None
    return pm


class Tracker:
    """One tracker behind its own plugin manager: which hook, with which arguments, takes a record."""

    def __init__(self, name: str, pm: pluggy.PluginManager):
        self.name, self.hook = name, pm.hook
        self.flushes = bool(pm.hook.trackkit_flush.get_hookimpls())
        self._routes: dict[str, tuple[Any, bool] | None] = {}  # namespace -> (hook caller, is the catch-all)

    def call_for(self, record: Record | Artifact) -> tuple[Any, Callable[[], dict[str, Any]]] | None:
        """The hook caller for ``record`` and a function making its arguments; None if it takes none."""
        if isinstance(record, Artifact):
            return self.hook.trackkit_log_artifact, record.kwargs
        route = self._route(record.namespace.name)
        if route is None:
            return None
        caller, catch_all = route
        return caller, lambda: record.kwargs(catch_all)

    def deliver(self, record: Record | Artifact) -> None:
        """Call the hook for ``record`` here and now (exceptions reach the caller)."""
        call = self.call_for(record)
        if call is not None:
            call[0](**call[1]())

    def _route(self, name: str) -> tuple[Any, bool] | None:
        """The hook that receives namespace ``name``: the tracker's own, its catch-all, or none."""
        if name not in self._routes:
            own, catch_all = getattr(self.hook, namespace(name).hook), getattr(self.hook, CATCH_ALL)
            if own.get_hookimpls():
                self._routes[name] = (_direct(own), own is catch_all)
            elif catch_all.get_hookimpls():
                self._routes[name] = (_direct(catch_all), True)
            else:
                self._routes[name] = None
        return self._routes[name]


class _Direct:
    """A hook with one plain implementation, called as pluggy would call it (the arguments it
    declares, by position) without pluggy's machinery around the call: that machinery is the
    layer's largest cost per record (about 1.7 µs of 2)."""

    __slots__ = ("name", "_function", "_argnames")

    def __init__(self, caller: Any):
        (impl,) = caller.get_hookimpls()
        self.name, self._function, self._argnames = caller.name, impl.function, impl.argnames

    def __call__(self, **kwargs: Any) -> Any:
        return self._function(*[kwargs[name] for name in self._argnames])


def _direct(caller: Any) -> Any:
    """``caller``, or a ``_Direct`` for it when it has one implementation that wraps nothing."""
    impls = caller.get_hookimpls()
    if len(impls) == 1 and not (impls[0].hookwrapper or impls[0].wrapper):
        return _Direct(caller)
    return caller


class TrackerWorker:
    def __init__(self, name: str, pm: pluggy.PluginManager, start: dict[str, Any], limits: Limits,
                 local_record: Path | None, on_done: Callable[[Record | Artifact], None],
                 on_started: Callable[[], None], nonfinite: NonFinite | None):
        self.name = name
        self._tracker = Tracker(name, pm)
        self._hook = pm.hook
        self._start = start  # trackkit_start's arguments, kept for a probe after a failed start
        self._limits = limits
        self._on_done = on_done  # the record is delivered or given up on by this tracker (frees staged files)
        self._on_started = on_started  # trackkit_start returned: the backend ids it set are worth saving
        self._nonfinite = nonfinite  # this worker says which values are NaN or inf (one worker does)
        self._flushes = self._tracker.flushes
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.enqueue = self._queue.put  # put() without its checks, for callers that make them now and then
        self._wake = threading.Event()
        self.state = "ok"  # "ok", "failed" (probing, catching up) or "stalled" (a hook hangs)
        self.delivered = 0
        self._unflushed: list[Record | Artifact] = []  # hooks returned, no flush since that worked
        self._started = False
        self._backlog = Backlog(limits.buffer_size, local_record, on_done)
        self._dropped: list[tuple[int, int]] = []  # record numbers the caller did not offer while stalled
        self._dropped_lock = threading.Lock()
        self._next_probe = 0.0
        self._backoff = limits.probe_backoff[0]
        self._attempts = 0  # failed attempts at the backlog's first record
        self._reported = False  # the current failure was reported (once per failure, until it catches up)
        self._missed: Marker | None = None  # the last request the tracker did not answer in time
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
    def put(self, record: Record | Artifact) -> bool:
        """Queue ``record``, waiting for room; False for a stalled tracker (it gets it later, from the local record)."""
        if self.state != "stalled" and (self._queue.qsize() < self._limits.queue_size or self._wait_for_room()):
            self._queue.put(record)
            return True
        self.note_dropped(record.seq, record.seq)
        return False

    def note_dropped(self, first: int, last: int) -> None:
        """Records not offered to this tracker while it was stalled: it catches up on them later."""
        with self._dropped_lock:
            self._dropped.append((first, last))

    def _wait_for_room(self) -> bool:
        deadline = time.monotonic() + self._limits.stall_timeout
        self._wake.set()
        while self.pending >= self._limits.queue_size:
            if time.monotonic() > deadline and self.state != "stalled":
                self.state = "stalled"
                report("stalled", name=self.name, seconds=self._limits.stall_timeout, waiting=self.pending)
            if self.state == "stalled":
                return False
            time.sleep(0.001)
        return True

    def request(self, finish: Mapping[str, Any] | None = None,
                deadline: float | None = None) -> Callable[[float], bool]:
        """Queue a flush request (or, with ``finish``, the stop) behind everything logged so far.

        Returns ``wait(timeout)``: True once the tracker handled the request, False if the
        timeout ran out. Asking every tracker first and waiting after lets them work in parallel.
        """
        if self.behind and finish is None:
            return lambda timeout: False  # waiting again for a tracker still behind would stall the caller every time
        marker = Marker(finish, deadline)
        self._queue.put(marker)
        self._wake.set()

        def wait(timeout: float) -> bool:
            if marker.done.wait(timeout):
                return True
            self._missed = marker
            return False

        return wait

    def health(self, records: int) -> dict[str, Any]:
        """State, and how many of the ``records`` logged so far it delivered and lost (did not deliver)."""
        state = "ok" if self.delivered == records else self.state
        return {"state": state, "delivered": self.delivered, "lost": records - self.delivered}

    # -- worker thread: rounds -----------------------------------------------------------------
    def _loop(self) -> None:
        # The worker sleeps between rounds instead of blocking in get(): a blocked reader makes
        # every put() wake it with a system call, and that wake-up would be paid on the training thread.
        self._try_start()
        while True:
            wait = self._limits.flush_interval
            if self.state != "ok":
                wait = min(wait, max(0.0, self._next_probe - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()
            if self._round():
                return

    def _round(self) -> bool:
        """Handle what gathered; True once the stop request came and was answered."""
        if self.state == "stalled":  # the hung hook returned: catch up on what the caller kept from it
            self.state = "failed"
        self._take_dropped()
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Marker):
                if self._answer(item):
                    return True
                continue
            if self._nonfinite is not None and isinstance(item, Record):
                self._look_at(item)
            if self.state == "ok":
                self._deliver(item)
            else:
                self._backlog.add(item)
            if self._unflushed and time.monotonic() - last_flush >= self._limits.flush_interval:
                self._flush()  # a queue that never empties still reaches storage every interval
                last_flush = time.monotonic()
        if self.state == "ok":
            self._flush()
        elif time.monotonic() >= self._next_probe:
            self._probe(time.monotonic() + self._limits.flush_interval)
        return False

    def _answer(self, marker: Marker) -> bool:
        """A flush is answered at once by a failing tracker (nobody waits for it); the stop tries it once more."""
        if marker.finish is not None and self.state != "ok":
            self._take_dropped()
            self._probe(marker.deadline)
        if self.state == "ok":
            self._flush()
        if marker.finish is not None:
            for record in [*self._unflushed, *self._backlog.drop_all()]:
                self._on_done(record)
            self._unflushed.clear()
            self._call(self._hook.trackkit_finish, dict(marker.finish))
        marker.done.set()
        return marker.finish is not None

    def _take_dropped(self) -> None:
        with self._dropped_lock:
            dropped, self._dropped = self._dropped, []
        for first, last in dropped:
            self._backlog.add_numbers(first, last)
        if dropped and self.state == "ok":
            self._fail()

    # -- worker thread: failing and catching up --------------------------------------------------
    def _fail(self) -> None:
        self.state = "failed"
        self._next_probe = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._limits.probe_backoff[1])

    def _probe(self, deadline: float | None) -> None:
        """Try the tracker again: its start, its flush, then what it missed in order, until ``deadline``."""
        if not self._started and not self._try_start():
            return
        replayed = len(self._unflushed)
        if not self._flush():
            return
        while (record := self._backlog.peek()) is not None:
            if deadline is not None and time.monotonic() > deadline:
                break  # go on next round, at once: the queue must keep moving meanwhile
            if self._deliver(record, retry=True):
                self._backlog.pop()
                self._attempts, replayed = 0, replayed + 1
            elif self._give_up_on(record):
                continue
            else:
                self._fail()
                return
            if len(self._unflushed) >= 1000 and not self._flush():
                return
        if not self._flush():
            return
        self._next_probe = 0.0  # not waiting: the rest is replayed next round
        if self._backlog.peek() is None:
            self.state, self._backoff, self._reported = "ok", self._limits.probe_backoff[0], False
            report("caught_up", name=self.name, count=replayed)

    def _give_up_on(self, record: Record | Artifact) -> bool:
        """Drop a record the backend keeps refusing while its flushes work (a bad value, not an outage)."""
        self._attempts += 1
        if not self._flushes or self._attempts < self._limits.max_failures:
            return False
        self._backlog.pop()
        self._backlog.lost += 1
        self._on_done(record)
        self._attempts = 0
        report("refused", name=self.name, seq=record.seq, times=self._limits.max_failures)
        return True

    # -- worker thread: calling the tracker -------------------------------------------------------
    def _deliver(self, record: Record | Artifact, retry: bool = False) -> bool:
        call = self._tracker.call_for(record)
        ok = call is None or self._call(*call)
        if not ok:
            if not retry:
                self._backlog.add(record)  # it was taken off the queue in order: nothing logged after it is kept yet
                self._fail()
            return False
        if self._flushes:
            self._unflushed.append(record)
        else:
            self.delivered += 1
            self._on_done(record)
        return True

    def _look_at(self, record: Record) -> None:
        try:
            self._nonfinite.look_at(record)  # type: ignore[union-attr]
        except Exception as exc:  # reading a tensor can fail (a device error): the tracker's hook will say so
            report("unreadable", seq=record.seq, error=f"{type(exc).__name__}: {_first_line(exc)}")

    def _try_start(self) -> bool:
        self._started = self._call(self._hook.trackkit_start, self._start)
        if self._started:
            self._on_started()
        else:
            self._fail()
        return self._started

    def _flush(self) -> bool:
        if not self._unflushed:
            return True
        if not self._call(self._hook.trackkit_flush, {}):
            self._fail()  # the tracker keeps what it held; a later flush may get it through
            return False
        self.delivered += len(self._unflushed)
        for record in self._unflushed:
            self._on_done(record)
        self._unflushed.clear()
        return True

    def _call(self, caller: Any, kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> bool:
        try:
            caller(**(kwargs() if callable(kwargs) else kwargs))
        except Exception as exc:  # a tracker's bug or its backend's outage must never reach the training loop
            if not self._reported:
                self._reported = True
                report("failed", name=self.name, hook=caller.name, error=f"{type(exc).__name__}: {_first_line(exc)}")
            return False
        return True


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
