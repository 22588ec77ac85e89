"""Metric names, values and steps: checked at the call site, converted off it."""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any


def perplexity(loss: float) -> float:
    """exp(loss), saturating to inf instead of raising OverflowError."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def checked(namespace: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metrics`` once every name and value is known to be fine; keys stay as given.

    Runs on the caller's thread, so it does the least it can: names seen before and plain
    numbers pass with two C-level checks, and the names get their namespace later, on the
    tracker threads (``qualified``). A 0-d tensor stays a tensor here (reading it would sync the
    device) and is converted there by ``to_number``.
    """
    if type(metrics) is not dict and not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}")
    valid = _VALID_NAMES.get(namespace)
    if valid is None:
        valid = _VALID_NAMES.setdefault(namespace, set())
    if valid >= metrics.keys() and _PLAIN_NUMBERS.issuperset(map(type, metrics.values())):
        return dict(metrics)
    out, seen = {}, set()
    for key, value in metrics.items():
        full = full_name(namespace, key)  # raises for a name that is not one
        if full in seen:
            raise ValueError(f"metric {full!r} is given twice (as {namespace}/name and as name)")
        seen.add(full)
        out[key] = value if type(value) in _PLAIN_NUMBERS else _checked_value(full, value)
        # Only names without their namespace are remembered: a dict holding both "loss" and
        # "train/loss" then always takes this path, where it is refused.
        if len(valid) < 10_000 and "/" not in key:  # a loop inventing names every step gets no cache, not a leak
            valid.add(key)
    return out


MAX_STEP = 2**63 - 1  # what every backend stores a step in (TensorBoard, MLflow: int64)


def checked_step(step: Any, name: str = "step") -> int:
    """``step`` as an int from 0 to 2**63-1; a 0-d integer tensor or NumPy integer is accepted.

    (A step on the GPU is read here, which waits for the device: keep steps as Python ints.)
    """
    if type(step) is int and 0 <= step <= MAX_STEP:
        return step
    if isinstance(step, bool) or not _is_integer_like(step):
        raise TypeError(f"{name} must be a non-negative int, got {type(step).__name__} {step!r}")
    value = operator.index(step)
    if not 0 <= value <= MAX_STEP:
        raise ValueError(f"{name} must be an int from 0 to 2**63-1, got {value}")
    return value


def qualified(namespace: str, metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """Namespaced names and plain numbers for what ``checked`` let through (may sync a device).

    Runs on a tracker thread once per record: the namespaced names of a set of keys are made once.
    """
    keys = tuple(metrics)
    names = _QUALIFIED.get((namespace, keys))
    if names is None:
        prefix = namespace + "/"
        names = tuple(key if key.startswith(prefix) else prefix + key for key in keys)
        if len(_QUALIFIED) < 10_000:
            _QUALIFIED[(namespace, keys)] = names
    values = metrics.values()
    if _PLAIN_NUMBERS.issuperset(map(type, values)):
        return dict(zip(names, values))
    return dict(zip(names, map(to_number, values)))


def full_name(namespace: str, key: str) -> str:
    """``key`` with its namespace: ``loss`` and ``train/loss`` are both ``train/loss``."""
    if not isinstance(key, str):
        raise TypeError(f"metric names must be strings, got {key!r}")
    name = key[len(namespace) + 1:] if key.startswith(namespace + "/") else key
    if not name or not name.isprintable():
        raise ValueError(f"metric name {key!r} must be non-empty and printable")
    if "/" in name:
        raise ValueError(f"metric {key!r} does not belong to the {namespace!r} namespace")
    return f"{namespace}/{name}"


def _checked_value(key: str, value: Any) -> Any:
    if not _is_scalar_like(value):
        raise TypeError(f"metric {key!r} must be a number or a 0-d tensor, got {type(value).__name__}")
    if hasattr(value, "detach"):
        # The tracker threads read it later; a copy (an async device op, no sync) keeps an
        # in-place update by the loop, like running_loss.zero_(), from changing it.
        value = value.detach().clone()
    return value


def to_number(value: Any) -> float | int:
    """A plain Python number for a value accepted by ``checked`` (may sync a device tensor)."""
    if type(value) in _PLAIN_NUMBERS:
        return value
    if isinstance(value, (bool, int)):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value.item()


def nonfinite(metrics: Mapping[str, float | int]) -> list[str]:
    """The names whose values are NaN or inf (a sum that is finite rules them all out at once)."""
    if math.isfinite(sum(metrics.values())):
        return []
    return [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]


class NonFinite:
    """Says once per metric, for the whole run, that it was NaN or inf (it is recorded as it is).

    One tracker's worker looks at every record, in the order logged, so the step named is the first.
    """

    def __init__(self, report: Any):
        self._report = report
        self._flagged: set[str] = set()

    def look_at(self, record: Any) -> None:
        metrics = record.ready()
        for key in nonfinite(metrics):
            if key not in self._flagged:
                self._flagged.add(key)
                self._report("nonfinite", key=key, value=metrics[key], step=record.step)


_PLAIN_NUMBERS = frozenset({int, float})
_VALID_NAMES: dict[str, set[str]] = {}  # namespace -> keys already checked, as logged
_QUALIFIED: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}  # (namespace, keys) -> their full names


def _is_scalar_like(value: Any) -> bool:
    # bool is numeric enough to plot; torch/numpy scalars expose .item() and a 0 or 1 element
    # shape that is known on the host, so checking them costs no device sync.
    if isinstance(value, (bool, int, float)):
        return True
    if not hasattr(value, "item"):
        return False
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) != 0 and math.prod(shape) != 1:
        return False
    dtype = str(getattr(value, "dtype", ""))
    return not any(t in dtype for t in ("str", "bytes", "object", "<U", "complex", "void"))


def _is_integer_like(value: Any) -> bool:
    """An int, a NumPy integer, or a 0-d integer tensor (what ``operator.index`` takes)."""
    if isinstance(value, int):
        return True
    shape = getattr(value, "shape", None)
    dtype = str(getattr(value, "dtype", ""))
    return (shape is not None and len(shape) == 0 and "int" in dtype) or (shape is None and hasattr(value, "__index__"))
