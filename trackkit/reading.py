"""Reading a run's metrics.jsonl back: one checked event per line, streamed, never all at once.

Every reader (``trackkit runs ...``, ``sync --to``, the jsonl tracker on resume) goes through
``lines()``, so they all agree on what a record holds:

- a line is one JSON object of a known shape (``problem()`` says what is wrong with one that is
  not); anything else is ``TrackkitError("FILE:LINE: ...")``;
- a last line that is not valid JSON (a write torn by a kill -9, or one still in progress) is
  skipped, and everything before it read.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from .errors import TrackkitError
from .namespaces import BUILTIN, EVAL, FINAL, TRAIN, check_custom


class NumberText(str):
    """A JSON number with a fraction or an exponent, as written in the record: what ``as_written``
    readers get instead of a float, to copy it out (export) without a round trip through float."""

    __slots__ = ()


# bool is not a number here: json's true and false never came from a log call.
NUMBERS = frozenset({int, float, NumberText})
INT64 = 2**63  # steps must fit the backends' 64-bit integers
# Kinds whose events carry metrics: a built-in namespace's own, or "metrics" (any other namespace).
METRIC_KINDS = frozenset({*BUILTIN, "metrics"})
KINDS = METRIC_KINDS | {"artifact", "resume"}
# Fields beyond "event" that a kind must have. Every kind has a step, but for records written
# before final and artifact events had one.
REQUIRED = {"epoch": ("epoch",), "metrics": ("namespace",), "artifact": ("path", "name", "kind", "metadata")}
STEP_OPTIONAL = frozenset({FINAL.name, "artifact"})

_PLAIN = frozenset({TRAIN.name, EVAL.name})  # kinds with no fields of their own: the fast path's
_FIRST = itemgetter(0)
_DECODERS = {False: json.JSONDecoder(), True: json.JSONDecoder(parse_float=NumberText)}
_INVALID = object()


def read_events(path: str | os.PathLike, as_written: bool = False) -> Iterator[dict[str, Any]]:
    """The events of a metrics.jsonl, in order; TrackkitError naming FILE:LINE at the first bad line.

    ``as_written``: numbers with a fraction or exponent come as NumberText, not float.
    """
    return map(_FIRST, lines(path, as_written=as_written))  # map: no Python frame per event


def lines(
    path: str | os.PathLike, offset: int = 0, number: int = 0, as_written: bool = False
) -> Iterator[tuple[dict[str, Any], int, bool]]:
    """``(event, offset after its line, whether the line ends in a newline)`` from byte ``offset`` on.

    ``number`` is how many lines come before ``offset`` (for error messages). A line without its
    newline can only be the last; it is yielded when it parses (a complete record, or a file
    written by hand), and skipped when it does not, like any last line that does not parse.
    """
    decoder = _DECODERS[as_written]
    scan = decoder.scan_once  # type: ignore[attr-defined]
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise TrackkitError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with f:
        f.seek(offset)
        for line in f:
            number += 1
            offset += len(line)
            # json's C scanner, called directly: json.loads spends a third of its time around it.
            try:
                text = line.decode()
                event, end = scan(text, 0)
                if end != len(text) and not text[end:].isspace():
                    event = _INVALID
            except (ValueError, StopIteration, RecursionError):  # RecursionError: ten thousand "[" in a row
                event = _parsed_slowly(line, decoder)
            if event is _INVALID:
                if not f.read(1):
                    return  # the last line: torn by a kill -9, or still being written
                raise TrackkitError(f"{path}:{number}: not valid JSON")
            why = problem(event)
            if why is not None:
                raise TrackkitError(f"{path}:{number}: {why}")
            yield event, offset, line.endswith(b"\n")


def _parsed_slowly(line: bytes, decoder: json.JSONDecoder) -> Any:
    """What the scanner refused: white space before the value, or not JSON at all (_INVALID)."""
    try:
        return decoder.decode(line.decode())
    except (ValueError, RecursionError):
        return _INVALID


def problem(event: Any) -> str | None:
    """What makes ``event`` something other than a recorded event, or None when it is one."""
    if type(event) is dict and event.get("event") in _PLAIN:  # most events: checked fastest, in one go
        step, metrics = event.get("step"), event.get("metrics")
        if (type(step) is int and 0 <= step < INT64 and type(metrics) is dict
                and NUMBERS.issuperset(map(type, metrics.values())) and type(event.get("time", 0)) in NUMBERS):
            return None
    return _problem(event)


def _problem(event: Any) -> str | None:
    if type(event) is not dict:
        return f"not an event (a JSON object), got {_short(event)}"
    kind: Any = event.get("event")
    for field in REQUIRED.get(kind, ()):
        if field not in event:
            return f"this {kind} event has no {field!r}"
    if kind not in KINDS:
        return f"unknown event kind {_short(kind)}"
    step = event.get("step")
    if "step" not in event and kind not in STEP_OPTIONAL:
        return f"this {kind} event has no step"
    if not (_counter(step) or (step is None and kind in STEP_OPTIONAL)):
        return f"step must be a whole number from 0 to 2**63-1, got {_short(step)}"
    if kind in METRIC_KINDS:
        return _metrics_problem(event)
    if kind == "artifact":
        return _artifact_problem(event)
    return None


def _metrics_problem(event: dict[str, Any]) -> str | None:
    metrics = event.get("metrics")
    if type(metrics) is not dict:
        return f"metrics must be an object of numbers, got {_short(metrics)}"
    if not NUMBERS.issuperset(map(type, metrics.values())):
        bad = next(k for k, v in metrics.items() if type(v) not in NUMBERS)
        return f"metric {bad!r} must be a number, got {_short(metrics[bad])}"
    if "time" in event and type(event["time"]) not in NUMBERS:
        return f"time must be a number, got {_short(event['time'])}"
    kind = event["event"]
    if kind == "epoch" and not _counter(event["epoch"]):
        return f"epoch must be a whole number from 0 to 2**63-1, got {_short(event['epoch'])}"
    if kind == "metrics":
        try:
            check_custom(event["namespace"])
        except (TypeError, ValueError) as exc:
            return str(exc)
    return None


def _artifact_problem(event: dict[str, Any]) -> str | None:
    for field in ("path", "name", "kind"):
        if type(event[field]) is not str:
            return f"an artifact's {field} must be a string, got {_short(event[field])}"
    if type(event["metadata"]) is not dict:
        return f"an artifact's metadata must be an object, got {_short(event['metadata'])}"
    return None


def _counter(value: Any) -> bool:
    return type(value) is int and 0 <= value < INT64


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
