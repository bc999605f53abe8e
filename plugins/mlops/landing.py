"""The landing area's rules: a batch is complete when its writer has dropped the `_SUCCESS` marker (what
the sensor waits for), and which partition `latest` means."""

from __future__ import annotations

import re
from pathlib import Path

MARKER = "_SUCCESS"
LATEST = "latest"
PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def batch_complete(folder: Path) -> bool:
    """A batch is complete when its writer has dropped the _SUCCESS marker."""
    return (folder / MARKER).is_file()


def latest_partition(landing: Path) -> str | None:
    """The newest partition (by date) whose batch is complete, or None."""
    if not landing.is_dir():
        return None
    complete = [p.name for p in landing.iterdir() if PARTITION.match(p.name) and batch_complete(p)]
    return max(complete) if complete else None
