"""What the integrations share: checking their arguments, starting a run, naming a status, routing metric names."""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import TrackkitError
from ..namespaces import BUILTIN, EPOCH, EVAL, FINAL, TRAIN, check_custom
from ..outputs import write_error
from ..plugins import parse_names
from ..record import read_run_json
from ..report import report
from ..run import Run, start

Trackers = Sequence[str] | str


def check_trackers(trackers: Trackers) -> list[str]:
    """The tracker names ``trackkit.start`` takes; an unknown one is a TrackkitError listing what is installed."""
    return parse_names(trackers if isinstance(trackers, str) else list(trackers))


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """``output_dir`` as a Path, created, once this process can write into it; else a one-line TrackkitError."""
    if output_dir is None or not str(output_dir).strip():
        raise TrackkitError("output_dir must be a folder path")
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackkitError(f"output_dir {str(path)!r} cannot be created: {exc.strerror or exc}") from None
    error = write_error(path)
    if error is not None:
        raise TrackkitError(f"output_dir {str(path)!r} is not writable: {error.strerror or error}")
    return path


def recorded_run_id(output_dir: Path, resume_from_step: int | None) -> str | None:
    """The id of the run recorded in ``output_dir``, which only a resume may continue (TrackkitError otherwise)."""
    previous = read_run_json(output_dir)
    if previous is None:
        return None
    if resume_from_step is None:
        raise TrackkitError(f"{output_dir} already holds run {previous.get('name')!r} ({previous.get('status')}); "
                            "pass resume_from_step to continue it, or choose another output_dir")
    return str(previous["id"])


def start_run(trackers: list[str], output_dir: Path, **kwargs: Any) -> Run:
    """``trackkit.start``, with a folder that went bad since it was checked as a one-line TrackkitError."""
    try:
        return start(trackers, output_dir=output_dir, **kwargs)
    except OSError as exc:
        raise TrackkitError(f"cannot start a run in {str(output_dir)!r}: {exc.strerror or exc}") from None


def status_of(exc: BaseException | None) -> str:
    """The status a run ends with when ``exc`` stopped training (None: it ended normally)."""
    if exc is None:
        return "success"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, SystemExit):
        # Raised by a signal handler (code 128 + the signal, or none at all, as Lightning's SIGTERM does)
        # or by a clean exit while training: both stop a run that could go on.
        code = exc.code
        return "interrupted" if code in (0, None) or (isinstance(code, int) and code >= 128) else "failed"
    return "failed"


def handled_exception() -> BaseException | None:
    """The exception being handled where this is called from (inside an ``except`` block), if any."""
    return sys.exc_info()[1]


# -- metric names ----------------------------------------------------------------------------------
_PREFIXES = {**{ns.name: ns.name for ns in (TRAIN, EVAL, EPOCH, FINAL)}, "val": EVAL.name}  # Lightning's val_
_UNDERSCORE_PREFIXES = ("train", "val", "eval")  # train_loss, val_acc: the usual Lightning names
_PLAIN = frozenset({int, float})


def route(key: str, unprefixed: str = TRAIN.name) -> tuple[str, str]:
    """The namespace and metric name a flat metric name goes to.

    ``train/x``, ``train_x`` -> train; ``val/x``, ``val_x``, ``eval/x``, ``eval_x`` -> eval;
    a ``_step`` suffix is dropped; a ``_epoch`` suffix goes to epoch/ (``val_loss_epoch`` ->
    ``epoch/val_loss``); ``<other>/x`` -> the namespace ``<other>``; a name without a prefix -> ``unprefixed``.
    """
    head, slash, rest = key.partition("/")
    if slash:
        prefix, name = head, rest.replace("/", ".")  # trackkit names hold one slash: the namespace's
    else:
        head, _, rest = key.partition("_")
        prefix, name = (head, rest) if head.lower() in _UNDERSCORE_PREFIXES and rest else ("", key)
    ns = _PREFIXES.get(prefix.lower(), prefix)
    if name.endswith("_epoch") and len(name) > 6 and ns not in (EPOCH.name, FINAL.name):
        base = name[:-6]
        own = "val" if ns == EVAL.name else prefix
        return EPOCH.name, f"{own}_{base}" if own else base
    if name.endswith("_step") and len(name) > 5:
        name = name[:-5]
    if not ns:
        return unprefixed, name
    if ns not in BUILTIN:
        try:
            check_custom(ns)
        except ValueError:  # "my metrics/x": not a namespace trackkit takes; keep the whole name
            return unprefixed, key.replace("/", ".")
    return ns, name or prefix


Plan = list[tuple[str, list[tuple[str, str]]]]  # namespace -> (name as given, name in the namespace)


class Router:
    """Logs flat metric dicts (Lightning's, Accelerate's) into the namespaces their names say (``route``).

    The plan for a set of names is made once and kept, so a log call costs a dict lookup and one
    trackkit log call per namespace. An ``epoch`` value (counting from 0, as Lightning's
    ``current_epoch`` and ``range(num_epochs)`` do) goes with every other namespace's metrics and
    numbers the epoch/ records (from 1, as trackkit counts); without it they are counted.
    """

    def __init__(self, framework: str, unprefixed: str = TRAIN.name):
        self.framework, self.unprefixed = framework, unprefixed
        self.last_step = 0  # the largest step logged, where a continued run resumes
        self._plans: dict[tuple[str, ...], Plan] = {}
        self._epochs = 0
        self._dropped: set[str] = set()

    def log(self, run: Run, values: Mapping[str, Any], step: int) -> None:
        if type(values) is not dict or not _PLAIN.issuperset(map(type, values.values())):
            values = self._numbers(values)
        keys = tuple(values)
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plan(keys)
        for ns, pairs in plan:
            metrics = {dst: values[src] for src, dst in pairs}
            if ns == "train":
                run.log_train(metrics, step)
            elif ns == "eval":
                run.log_eval(metrics, step)
            elif ns == "epoch":
                run.log_epoch(metrics, self._epoch_number(values.get("epoch")), step)
            elif ns == "final":
                run.log_final(metrics, step)
            else:
                run.log_metrics(ns, metrics, step)
        if step > self.last_step:
            self.last_step = step

    def _plan(self, keys: tuple[str, ...]) -> Plan:
        groups: dict[str, list[tuple[str, str]]] = {}
        for key in keys:
            if key != "epoch":
                ns, name = route(key, self.unprefixed)
                groups.setdefault(ns, []).append((key, name))
        if "epoch" in keys:
            if not groups:
                groups[self.unprefixed] = []
            for ns, pairs in groups.items():
                if ns not in (EPOCH.name, FINAL.name):  # their records carry the epoch, or have none
                    pairs.append(("epoch", "epoch"))
        plan = [(ns, pairs) for ns, pairs in groups.items() if pairs]
        if len(self._plans) < 1024:  # a loop inventing names every call gets no cache, not a leak
            self._plans[keys] = plan
        return plan

    def _epoch_number(self, epoch: Any) -> int:
        self._epochs = int(epoch) + 1 if epoch is not None else self._epochs + 1
        return self._epochs

    def _numbers(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values trackkit takes (numbers, 0-d tensors); each other name is said once and left out."""
        kept = {}
        for key, value in values.items():
            if is_number(value):
                kept[str(key)] = value
            elif key not in self._dropped:
                self._dropped.add(key)
                report("not_a_number", framework=self.framework, key=key, kind=type(value).__name__)
        return kept


def is_number(value: Any) -> bool:
    """A value trackkit logs: a Python number or a one-element tensor or NumPy scalar (not read here)."""
    if isinstance(value, (int, float)):
        return True
    shape = getattr(value, "shape", None)
    return (hasattr(value, "item") and shape is not None and math.prod(shape) == 1
            and not any(t in str(getattr(value, "dtype", "")) for t in ("str", "<U", "object", "complex")))
