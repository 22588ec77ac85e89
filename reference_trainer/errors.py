"""The trainer's one error type for a user's mistake (bad data, bad flag, bad checkpoint)."""
import os
from typing import IO, Any

from trackkit.options import OneLineError


class InputError(OneLineError):
    """Shown by ``trackkit-train`` as one ``Error: ...`` line, exit code 2, no traceback."""

    def show(self, file: IO[Any] | None = None) -> None:
        # The processes of a multi-process run check the same inputs and fail alike: rank 0 says it once.
        if os.environ.get("RANK", "0") == "0":
            super().show(file)
