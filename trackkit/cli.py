"""The ``trackkit`` command: inspect installed trackers and the runs they recorded."""
from __future__ import annotations

import click

from .plugins import discovered


@click.group()
@click.version_option(package_name="trackkit")
def main() -> None:
    """Pluggable experiment tracking for PyTorch training loops."""


@main.command()
def plugins() -> None:
    """List the discovered trackers, where each comes from, and whether its backend imports."""
    rows = [("NAME", "DISTRIBUTION", "CLASS", "BACKEND")]
    for source in discovered().values():
        available = source.backend_available()
        rows.append((source.name, source.distribution, source.target, "ok" if available else "missing"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
