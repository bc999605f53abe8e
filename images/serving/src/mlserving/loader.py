"""Load an MLflow-logged scikit-learn model directory and prove it predicts (read without MLflow, under the
pipeline's one loading policy: mlpipeline.model_format).

The directory is exactly what `mlpipeline register` produced (MLmodel, the skops
file, input_example.json): in a cluster KServe's storage initializer puts it in
/mnt/models; locally the deploy backend downloads it.

Which registry version it is comes from the deployer: a registry.json beside MLmodel
({"name", "version", "run_id", "model_uri"}, written by `mlpipeline fetch-model`), else
the environment (MLSERVING_REGISTRY_VERSION, MLSERVING_RUN_ID, MLSERVING_MODEL_URI: the
InferenceService sets them on the predictor, since KServe's storage initializer copies
only the artifact folder); without either the version is reported as "unregistered".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlpipeline.model_format import ModelLoadError, load_estimator, read_mlmodel

from .fastpath import verified_class_positions

REGISTRY_FILE = "registry.json"
REGISTRY_ENV = {"version": "MLSERVING_REGISTRY_VERSION", "run_id": "MLSERVING_RUN_ID",
                "model_uri": "MLSERVING_MODEL_URI"}


@dataclass(frozen=True)
class LoadedModel:
    estimator: object
    # Rows in, positions in class_values out: sklearn's predict, or a verified numpy fold of it (fastpath.py).
    class_positions: Callable[[np.ndarray], np.ndarray]
    class_values: np.ndarray  # the estimator's classes_, as it answers them
    features: tuple[str, ...]
    classes: tuple[str, ...]  # the same, as text (metadata and metrics)
    version: str
    run_id: str
    model_uri: str
    source: str
    loaded_at: float = field(default_factory=time.time)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """The predicted labels, as the estimator's own predict gives them."""
        return self.class_values[self.class_positions(rows)]


def _strip_feature_names(estimator, features: tuple[str, ...]) -> None:
    """The server validates names against the signature, then passes plain arrays.

    sklearn would warn (slowly, on every call) that an array has no feature
    names, so after checking they match the signature, the fitted names go.
    """
    steps = [s for _, s in getattr(estimator, "steps", [])] or [estimator]
    for step in steps:
        fitted = getattr(step, "feature_names_in_", None)
        if fitted is not None:
            if tuple(fitted) != features:
                raise ModelLoadError(f"the estimator was fitted on {list(fitted)}, but the signature says "
                                     f"{list(features)}")
            del step.feature_names_in_


def _probe_rows(path: Path, features: tuple[str, ...]) -> np.ndarray:
    example = path / "input_example.json"
    if example.exists():
        doc = json.loads(example.read_text())
        columns, data = doc.get("columns"), doc.get("data")
        if columns and data:
            index = [columns.index(f) for f in features]
            return np.asarray(data, dtype=np.float64)[:, index]
    return np.ones((1, len(features)))


def registry_identity(path: Path) -> dict:
    """The registry's name for the model in `path`: its registry.json, else the deployer's environment."""
    if (path / REGISTRY_FILE).exists():
        return json.loads((path / REGISTRY_FILE).read_text())
    return {key: os.environ[env] for key, env in REGISTRY_ENV.items() if os.environ.get(env)}


def load_model_dir(path: str | Path) -> LoadedModel:
    """Load and check a model directory; raise ModelLoadError with the reason if it cannot serve."""
    path = Path(path).resolve()  # a link to a version (the local deploy's `current`): the real folder
    meta = read_mlmodel(path)
    features = meta.features
    estimator = load_estimator(meta, path)
    if not hasattr(estimator, "predict") or not hasattr(estimator, "classes_"):
        raise ModelLoadError(f"{path}: the model is not a fitted classifier")
    _strip_feature_names(estimator, features)
    probe = _probe_rows(path, features)
    try:
        predicted = estimator.predict(probe)
    except Exception as exc:
        raise ModelLoadError(f"{path}: the model failed a test prediction: {type(exc).__name__}: {exc}") from exc
    if len(predicted) != len(probe):
        raise ModelLoadError(f"{path}: a test prediction returned {len(predicted)} rows for {len(probe)}")
    registry = registry_identity(path)
    return LoadedModel(
        estimator=estimator,
        class_positions=verified_class_positions(estimator, probe),
        class_values=np.asarray(estimator.classes_),
        features=features,
        classes=tuple(str(c) for c in estimator.classes_),
        version=str(registry.get("version", "unregistered")),
        run_id=str(registry.get("run_id") or meta.run_id),
        model_uri=str(registry.get("model_uri") or (f"models:/{meta.model_id}" if meta.model_id else "")),
        source=str(path.resolve()),
    )
