"""Metric names and values: namespacing, validation at the call site, conversion off it."""
from __future__ import annotations

import math
from typing import Any, Mapping

NAMESPACES = ("train", "eval", "epoch", "final")


def perplexity(loss: float) -> float:
    """exp(loss), saturating to inf instead of raising OverflowError."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def qualify(namespace: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Prefix bare keys with ``namespace/`` and check every value is a number.

    Runs on the caller's thread, so it only looks at types: a 0-d tensor stays a tensor here
    (reading it would sync the device) and is converted later by ``to_number``. Key names are
    checked once and remembered, since a loop logs the same keys at every step.
    """
    names = _QUALIFIED.setdefault(namespace, {})
    try:
        out = {names[key]: value for key, value in metrics.items()}
    except KeyError:
        out = {_qualified_name(names, namespace, key): value for key, value in metrics.items()}
    for key, value in out.items():
        if type(value) not in _PLAIN_NUMBERS:
            out[key] = _checked_value(key, value)
    return out


def _qualified_name(names: dict[str, str], namespace: str, key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"metric names must be strings, got {key!r}")
    full = key if key.startswith(namespace + "/") else f"{namespace}/{key}"
    if "/" in key and full is not key:
        raise ValueError(f"metric {key!r} does not belong to the {namespace!r} namespace")
    if len(names) < 10_000:  # a loop that invents new names every step gets no cache, not a leak
        names[key] = full
    return full


def _checked_value(key: str, value: Any) -> Any:
    if not _is_scalar_like(value):
        raise TypeError(f"metric {key!r} must be a number or a 0-d tensor, got {type(value).__name__}")
    if hasattr(value, "detach"):
        # The tracker threads read it later; a copy (an async device op, no sync) keeps an
        # in-place update by the loop, like running_loss.zero_(), from changing it.
        value = value.detach().clone()
    return value


def to_number(value: Any) -> float | int:
    """A plain Python number for a value accepted by ``qualify`` (may sync a device tensor)."""
    if type(value) in _PLAIN_NUMBERS:
        return value
    if isinstance(value, (bool, int)):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value.item()


def nonfinite(metrics: Mapping[str, float | int]) -> list[str]:
    return [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]


_PLAIN_NUMBERS = frozenset({int, float})
_QUALIFIED: dict[str, dict[str, str]] = {}  # namespace -> {key as logged: namespaced key}


def _is_scalar_like(value: Any) -> bool:
    # bool is numeric enough to plot; torch/numpy scalars expose .item() and a 0 or 1 element
    # shape that is known on the host, so checking them costs no device sync.
    if isinstance(value, (bool, int, float)):
        return True
    if not hasattr(value, "item"):
        return False
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) == 0:
        dtype = str(getattr(value, "dtype", ""))
        return not any(t in dtype for t in ("str", "bytes", "object", "<U"))
    return math.prod(shape) == 1
