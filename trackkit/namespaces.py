"""The metric namespaces, defined once: each one's name, the hook that receives it, its x axis.

Every namespace is logged against the global optimizer step, in every backend. ``axis`` is the
name under which a backend that wants the x value inside the row (wandb) records that step;
a per-epoch presentation (wandb's ``define_metric`` against ``epoch/number``) is a backend's
choice, never a different step number.

A namespace that is not one of the four below (``system``, or one a user makes up) goes to
``trackkit_log_metrics``, which is also the catch-all of a tracker that does not implement a
namespace's own hook.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

CATCH_ALL = "trackkit_log_metrics"


@dataclass(frozen=True)
class Namespace:
    name: str  # "train": metric keys are "train/..."
    hook: str  # the hook that receives its records
    axis: str  # the metric that carries the global step where a backend wants it in the row

    @property
    def prefix(self) -> str:
        return self.name + "/"


def _builtin(name: str) -> Namespace:
    return Namespace(name, f"trackkit_log_{name}", f"{name}/step")


# The guide's namespaces, in the order a run logs them.
TRAIN, EVAL, EPOCH, FINAL = (_builtin(n) for n in ("train", "eval", "epoch", "final"))
BUILTIN: dict[str, Namespace] = {ns.name: ns for ns in (TRAIN, EVAL, EPOCH, FINAL)}


def namespace(name: str) -> Namespace:
    """The namespace called ``name``: a built-in one, or one of the catch-all hook's."""
    found = BUILTIN.get(name)
    return found if found is not None else Namespace(name, CATCH_ALL, f"{name}/step")


def check_custom(name: str) -> None:
    """Raise ValueError unless ``name`` can be a namespace of ``run.log_metrics``."""
    if not isinstance(name, str):
        raise TypeError(f"a namespace must be a string, got {type(name).__name__}")
    if name in BUILTIN or not _CUSTOM_NAME.fullmatch(name):
        hint = f"; use log_{name}" if name in BUILTIN else ""
        raise ValueError(f"log_metrics takes a namespace of its own (letters, digits, _ . -), not {name!r}{hint}")


_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
