"""The one exception type the layer raises for a user's mistake (bad name, bad folder)."""


class TrackkitError(Exception):
    """Shown as one line, and exit code 2, by the command-line tools."""
