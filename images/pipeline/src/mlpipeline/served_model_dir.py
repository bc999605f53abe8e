"""A registry version's model directory as the local target serves it: MLflow's files plus `registry.json`
naming the version (which mlserving reports, mlserving.loader.registry_identity).

Two writers leave the same directory: the pipeline's `fetch-model` stage (MLflow's client) and the Airflow
side's MlflowHook (MLflow's artifact REST API, no MLflow process to start). Standard library only: the
Airflow environment imports this module too.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

REGISTRY_FILE = "registry.json"


def holds_version(directory: Path, name: str, version: str) -> bool:
    """Whether `directory` is already this version, complete (it is written whole or not at all)."""
    try:
        known = json.loads((directory / REGISTRY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (directory / "MLmodel").exists() and known.get("name") == name and known.get("version") == str(version)


@contextlib.contextmanager
def staged(destination: Path, name: str, version: str, run_id: str | None) -> Iterator[Path]:
    """A folder beside `destination` to download the version's files into. When the block ends without an
    error, registry.json is added and the folder replaces `destination` whole; otherwise it is removed and
    `destination` is left as it was."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield staging
        (staging / REGISTRY_FILE).write_text(json.dumps({
            "name": name, "version": str(version), "run_id": run_id, "model_uri": f"models:/{name}/{version}"}))
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
