"""A run's configuration: the engine's settings (bundled `config.yaml`, the same for every model) and the
training window, which a run may override (the DAG's `training_window` Param). Everything a model
declares (estimator, split, metric, promotion rule) is in its dataset file."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources

import yaml

from .dataset import Dataset
from .errors import PipelineError

_WINDOW = re.compile(r"^(all|last:[1-9][0-9]*)$")


def engine_settings() -> dict:
    return yaml.safe_load(resources.files("mlpipeline.resources").joinpath("config.yaml").read_text())


def run_config(dataset: Dataset, window: str | None = None) -> dict:
    """The engine's settings with the run's training window (the dataset's unless overridden)."""
    return {**engine_settings(), "window": validate_window(window or dataset.window)}


def validate_window(window: str) -> str:
    if not isinstance(window, str) or not _WINDOW.match(window):
        raise PipelineError(f"training window must be 'all' or 'last:N' with N >= 1, got {window!r}")
    return window


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
