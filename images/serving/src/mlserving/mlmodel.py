"""Read an MLflow scikit-learn model directory without importing MLflow.

The server needs four things from it: the input columns, the skops file, the types that file may hold,
and the run it was logged in. MLflow would read them with `mlflow.models.Model.load` and load the
estimator with `mlflow.sklearn.load_model`, at the cost of importing MLflow (and its dependencies) in
every server. This reads the same fields the same way; the field names and their meaning follow
MLflow 3.17's `mlflow/models/model.py` (the MLmodel YAML), `mlflow/models/signature.py` (a signature's
`inputs` is a JSON list of column specs) and `mlflow/sklearn/__init__.py` (`save_model` writes
`pickled_model`, `serialization_format` and `skops_trusted_types` under `flavors.sklearn`;
`_load_model_from_local_file` passes the latter to `skops.io.load`).

Only the skops format is served: pickle and cloudpickle files run code when they are loaded. The
types a model asks skops to trust are read from the model itself, so they are honoured only if this
server trusts them too (SERVED_TRUSTED_TYPES).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

# What the pipeline's estimators need beyond skops's defaults (mlpipeline.model.SKOPS_TRUSTED_TYPES):
# the fitted trees of a random forest and of histogram gradient boosting.
SERVED_TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree",
                                  "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"})


class ModelLoadError(Exception):
    """The directory does not hold a model this server can serve; the message says why."""


@dataclass(frozen=True)
class MLmodelFile:
    features: tuple[str, ...]
    model_file: Path
    trusted_types: tuple[str, ...]
    run_id: str
    model_id: str


def _document(path: Path) -> dict:
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        raise ModelLoadError(f"{path} has no MLmodel file: not an MLflow model directory")
    try:
        document = yaml.safe_load(mlmodel.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{mlmodel} is unreadable: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(f"{mlmodel} is unreadable: a YAML mapping was expected, got {type(document).__name__}")
    return document


def _features(document: dict, path: Path) -> tuple[str, ...]:
    signature = document.get("signature")
    inputs = signature.get("inputs") if isinstance(signature, dict) else None
    if not inputs:
        raise ModelLoadError(f"{path}: the MLmodel has no input signature; log the model with one")
    try:
        columns = json.loads(inputs)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: the MLmodel's input signature is not a JSON list: {exc}") from exc
    names = [c.get("name") if isinstance(c, dict) else None for c in columns] if isinstance(columns, list) else None
    if not names or any(not isinstance(n, str) for n in names):
        raise ModelLoadError(f"{path}: the input signature must name its columns, got {names}")
    return tuple(names)


def _sklearn_flavor(document: dict, path: Path) -> dict:
    flavors = document.get("flavors")
    if not isinstance(flavors, dict) or not isinstance(flavors.get("sklearn"), dict):
        raise ModelLoadError(f"{path}: flavors {sorted(flavors) if isinstance(flavors, dict) else flavors} "
                             "include no 'sklearn'")
    flavor = flavors["sklearn"]
    serialization = flavor.get("serialization_format", "pickle")  # MLflow's default when the field is absent
    if serialization != "skops":
        raise ModelLoadError(f"{path}: the model is saved as {serialization!r}; this server loads only 'skops' "
                             "(pickle formats run code when loaded): log it with serialization_format='skops'")
    if flavor.get("code"):
        raise ModelLoadError(f"{path}: the model was logged with code paths ({flavor['code']}), which this "
                             "server does not import")
    return flavor


def _model_file(flavor: dict, path: Path) -> Path:
    name = flavor.get("pickled_model")
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{path}: the sklearn flavor names no model file (pickled_model)")
    model_file = (path / name).resolve()
    if not model_file.is_relative_to(path.resolve()):
        raise ModelLoadError(f"{path}: the model file {name!r} is outside the model directory")
    if not model_file.is_file():
        raise ModelLoadError(f"{path}: the model file {name!r} does not exist")
    return model_file


def _trusted_types(flavor: dict, path: Path) -> tuple[str, ...]:
    asked = flavor.get("skops_trusted_types") or []
    if not isinstance(asked, list) or any(not isinstance(t, str) for t in asked):
        raise ModelLoadError(f"{path}: skops_trusted_types must be a list of type names, got {asked!r}")
    refused = sorted(set(asked) - SERVED_TRUSTED_TYPES)
    if refused:
        raise ModelLoadError(f"{path}: the model asks skops to trust {refused}, which this server does not "
                             f"trust (it trusts {sorted(SERVED_TRUSTED_TYPES)})")
    return tuple(asked)


def read_mlmodel(path: Path) -> MLmodelFile:
    """The fields of `path`/MLmodel the server uses; ModelLoadError says what is missing or refused."""
    document = _document(path)
    flavor = _sklearn_flavor(document, path)
    return MLmodelFile(features=_features(document, path), model_file=_model_file(flavor, path),
                       trusted_types=_trusted_types(flavor, path), run_id=str(document.get("run_id") or ""),
                       model_id=str(document.get("model_id") or ""))


def load_estimator(model: MLmodelFile, path: Path):
    """The estimator in the skops file, loaded as `mlflow.sklearn.load_model` would load it."""
    import skops.io

    try:
        return skops.io.load(model.model_file, trusted=list(model.trusted_types))
    except Exception as exc:
        raise ModelLoadError(f"{path}: the sklearn model failed to load: {type(exc).__name__}: {exc}") from exc
