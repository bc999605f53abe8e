"""Registry versions for tests that deploy: trained and registered by the real pipeline stages."""

from __future__ import annotations

from pathlib import Path

from mlops.hooks.stage import StageHook


def train_and_register(stages: StageHook, root: Path, model: str, partition: str, drift: str, seed: int,
                       config: Path | None = None) -> dict:
    """`config`: a training config YAML for split (another estimator, say)."""
    data = {"data_root": root}
    stages.run("simulate", {**data, "partition": partition, "rows": 600, "drift": drift, "seed": seed})
    stages.run("ingest", {**data, "partition": partition})
    run_key = stages.run("split", {**data, "partition": partition, "config": config})["run_key"]
    stages.run("train-local", {**data, "run_key": run_key, "model_name": model})
    return stages.run("register", {**data, "run_key": run_key, "model_name": model})
