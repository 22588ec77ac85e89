"""The trainer's one error type for a user's mistake (bad data, bad flag, bad checkpoint)."""
from trackkit.options import OneLineError


class InputError(OneLineError):
    """Shown by ``trackkit-train`` as one ``Error: ...`` line, exit code 2, no traceback."""
