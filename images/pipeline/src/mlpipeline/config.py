"""Training configuration: defaults from the bundled YAML, overridable by a user file."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import yaml

from .errors import PipelineError

_WINDOW = re.compile(r"^(all|last:[1-9][0-9]*)$")


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge_config(base: dict, override: dict) -> dict:
    """The override merged into the base, except that a model of another kind keeps only its own
    params: the defaults' params belong to the default kind (a random forest given C fails)."""
    merged = _merge(base, override)
    model = override.get("model")
    if isinstance(model, dict) and merged["model"].get("kind") != base["model"].get("kind"):
        merged["model"]["params"] = copy.deepcopy(model.get("params") or {})
    return merged


def default_config() -> dict:
    return yaml.safe_load(resources.files("mlpipeline.resources").joinpath("config.yaml").read_text())


def load_config(path: str | Path | None = None, window: str | None = None) -> dict:
    """Defaults, then the user's file, then an explicit window; validated."""
    config = default_config()
    if path is not None:
        try:
            override = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise PipelineError(f"cannot read config {path}: {exc.strerror}") from exc
        if not isinstance(override, dict):
            raise PipelineError(f"config {path} must be a YAML mapping")
        config = _merge_config(config, override)
    if window is not None:
        config["window"] = window
    validate_window(config["window"])
    from .model import build_estimator  # here, not at import: register imports this module and never loads a config

    build_estimator(config["model"])  # an unknown kind or a parameter it does not take fails here, not in training
    test_size = config["split"]["test_size"]
    if not 0 < test_size < 1:
        raise PipelineError(f"config split.test_size must be between 0 and 1, got {test_size}")
    return config


def validate_window(window: str) -> str:
    if not isinstance(window, str) or not _WINDOW.match(window):
        raise PipelineError(f"training window must be 'all' or 'last:N' with N >= 1, got {window!r}")
    return window


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
