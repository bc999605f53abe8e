"""Registry versions for tests that deploy: trained and registered by the real pipeline stages."""

from __future__ import annotations

from pathlib import Path

from mlops.hooks.stage import StageHook

from .dag_test import dataset_text


def train_and_register(stages: StageHook, root: Path, model: str, partition: str, drift: str, seed: int,
                       estimator: dict | None = None) -> dict:
    """The example dataset as `model`; `estimator`: its `model` key replaced (another estimator, say)."""
    data = {"data_root": root}
    given = {"dataset_content": dataset_text(model_name=model, **({"model": estimator} if estimator else {})),
             "dataset_name": "iris"}
    stages.run("simulate", {**data, **given, "partition": partition, "rows": 600, "drift": drift, "seed": seed})
    stages.run("ingest", {**data, **given, "partition": partition})
    run_key = stages.run("split", {**data, **given, "partition": partition})["run_key"]
    stages.run("train-local", {**data, "run_key": run_key, "model_name": model})
    return stages.run("register", {**data, "run_key": run_key, "model_name": model})
