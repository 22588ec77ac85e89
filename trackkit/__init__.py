"""trackkit: pluggable experiment tracking for PyTorch training loops.

- ``trackkit.start(...)`` returns the Run a training loop logs to (run.py).
- ``trackkit/hookspecs.py`` is the whole contract a tracker implements.
- ``trackkit.options.tracker_options`` gives any click command ``--tracker``, ``--offline``
  and every installed tracker's own options.
"""
from .dispatch import Limits
from .errors import TrackkitError
from .hookspecs import hookimpl, hookspec
from .metrics import perplexity
from .namespaces import Namespace
from .run import NullRun, Run, start
from .runinfo import RunInfo

__version__ = "0.2.0"
__all__ = ["Limits", "Namespace", "NullRun", "Run", "RunInfo", "TrackkitError", "hookimpl", "hookspec", "perplexity",
           "start"]
