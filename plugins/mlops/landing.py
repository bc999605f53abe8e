"""The landing area's rules: each model has its own, `landing/<model_name>/<partition>/`; a batch is complete
when its writer has dropped the `_SUCCESS` marker (what the sensor waits for), and `latest` means the newest
complete batch of that model."""

from __future__ import annotations

import re
from pathlib import Path

from mlpipeline.errors import PipelineError
from mlpipeline.volume import model_area  # the stages' own layout and name check: one place

MARKER = "_SUCCESS"
LATEST = "latest"
PARTITION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def model_landing(model_name: str) -> Path:
    """A model's landing area, relative to the data volume's root (ValueError: not a model name)."""
    try:
        return model_area("landing", model_name)
    except PipelineError as exc:
        raise ValueError(str(exc)) from None


def batch_complete(folder: Path) -> bool:
    """A batch is complete when its writer has dropped the _SUCCESS marker."""
    return (folder / MARKER).is_file()


def latest_partition(landing: Path) -> str | None:
    """The newest partition (by date) under a model's landing area whose batch is complete, or None."""
    if not landing.is_dir():
        return None
    complete = [p.name for p in landing.iterdir() if PARTITION.match(p.name) and batch_complete(p)]
    return max(complete) if complete else None
