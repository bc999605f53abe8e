"""Registry versions for tests that deploy: trained and registered by the real pipeline stages."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlops.hooks.stage import StageHook
from tests.datasets import dataset_path

from .dag_test import dataset_text


def train_and_register(stages: StageHook, root: Path, model: str, partition: str, drift: str, seed: int,
                       estimator: dict | None = None, dataset: str = "iris", severity: float | None = None) -> dict:
    """The example dataset as `model`; `estimator`: its `model` key replaced (another estimator, say);
    `dataset`: a numeric test dataset of tests/datasets/ instead (its batches drawn from scikit-learn's
    bundled table); `severity`: the drift's (the simulator's default when None)."""
    data = {"data_root": root}
    if dataset == "iris":
        text, reference = dataset_text(model_name=model, **({"model": estimator} if estimator else {})), {}
    else:
        document = {**yaml.safe_load(dataset_path(dataset).read_text()), "model_name": model}
        text, reference = yaml.safe_dump(document, sort_keys=False), {"reference": f"sklearn:{dataset}"}
    given = {"dataset_content": text, "dataset_name": dataset}
    stages.run("simulate", {**data, **given, **reference, "partition": partition, "rows": 600, "drift": drift,
                            "seed": seed, **({"severity": severity} if severity is not None else {})})
    stages.run("ingest", {**data, **given, "partition": partition})
    run_key = stages.run("split", {**data, **given, "partition": partition})["run_key"]
    stages.run("train-local", {**data, "run_key": run_key, "model_name": model})
    return stages.run("register", {**data, "run_key": run_key, "model_name": model})
