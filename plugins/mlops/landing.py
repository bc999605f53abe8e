"""The landing area's completeness rule, shared by the sensor and its trigger."""

from __future__ import annotations

from pathlib import Path

MARKER = "_SUCCESS"


def batch_complete(folder: Path) -> bool:
    """A batch is complete when its writer has dropped the _SUCCESS marker."""
    return (folder / MARKER).is_file()
