"""Finding trackers: the ``trackkit.trackers`` entry-point group, or ``package.module:Class``."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import TrackkitError

ENTRY_POINT_GROUP = "trackkit.trackers"
NONE = "none"


@dataclass(frozen=True)
class TrackerSource:
    name: str
    target: str  # "package.module:Class"
    distribution: str  # "trackkit 0.2.0", or "(by path)" for module:Class

    def load(self) -> type:
        module_name, _, attr = self.target.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise TrackkitError(f"cannot load tracker {self.name!r} from {self.target}: {exc}") from None
        if not isinstance(obj, type):
            raise TrackkitError(f"tracker {self.name!r} ({self.target}) is not a class")
        return obj

    def create(self, options: Mapping[str, Any]) -> object:
        """An instance, given the options its constructor declares; a missing backend is an error.

        The backend packages in ``requires`` are imported here, on the thread that starts the
        run: the hooks run on the tracker's own thread, and two threads importing one package at
        once can deadlock in Python's import locks (the user's own import of it then fails).
        """
        cls = self.load()
        for module in getattr(cls, "requires", ()):
            if importlib.util.find_spec(module) is None:
                raise TrackkitError(
                    f"tracker {self.name!r} needs the {module!r} package, which is not installed "
                    f"(pip install 'trackkit[{self.name}]' for built-ins)"
                )
            try:
                importlib.import_module(module)
            except Exception as exc:  # installed but broken: a version clash, a missing library
                raise TrackkitError(f"tracker {self.name!r} cannot import {module!r}: {exc}") from None
        params = inspect.signature(cls).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            options = {k: v for k, v in options.items() if k in params}
        try:
            return cls(**options)  # on the caller's thread (hookspecs.py: threads)
        except Exception as exc:  # a bad option value: the tracker's own message, in one line
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackkitError(f"tracker {self.name!r} cannot be created: {text}") from None

    def backend_available(self) -> bool | None:
        """Whether the backend libraries the tracker class lists in ``requires`` import."""
        try:
            requires = getattr(self.load(), "requires", ())
        except TrackkitError:
            return False
        return all(importlib.util.find_spec(module) is not None for module in requires)


@lru_cache(maxsize=1)
def discovered() -> dict[str, TrackerSource]:
    """Every tracker installed in the entry-point group, by the name users pass to --tracker."""
    found: dict[str, TrackerSource] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        found.setdefault(ep.name, TrackerSource(ep.name, ep.value, dist))
    return dict(sorted(found.items()))


def source_for(name: str) -> TrackerSource:
    """The source of a tracker given by entry-point name or as ``package.module:Class``."""
    if ":" in name:
        return TrackerSource(name.rpartition(":")[2].lower(), name, "(by path)")
    sources = discovered()
    if name not in sources:
        available = ", ".join([*sources, NONE])
        raise TrackkitError(f"unknown tracker {name!r}; available: {available} (or package.module:Class)")
    return sources[name]


def parse_names(values: list[str] | tuple[str, ...] | str) -> list[str]:
    """``["console,jsonl", "wandb"]`` -> ``["console", "jsonl", "wandb"]``; ``none`` clears all."""
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if NONE in names:
        if len(names) > 1:
            raise TrackkitError(f"tracker 'none' cannot be combined with {', '.join(n for n in names if n != NONE)}")
        return []
    for name in names:
        source_for(name)  # fail early, with the list of what is available
    return names
