"""Load an MLflow-logged scikit-learn model directory and prove it predicts (read without MLflow, under the
pipeline's one loading policy: mlpipeline.model_format).

A model is a classifier (it answers with one of its classes) or a regressor (it answers with a number), as
scikit-learn's own is_classifier / is_regressor say of its fitted final estimator: its class, which the skops
allow-list admitted, decides; nothing else in the model's files does. A regressor's predictions are counted
in a histogram on the edges its prediction_buckets.json gives (prediction_buckets).

The directory is exactly what `mlpipeline register` produced (MLmodel, the skops
file, input_example.json): in a cluster KServe's storage initializer puts it in
/mnt/models; locally the deploy backend downloads it.

The signature's column types decide what a request may hold (validation.InputSpec): numeric columns
(double, float, long, integer) and categorical ones (string). A numeric column accepts a missing value
when the model imputes it (sklearn_inputs.imputed_columns: a SimpleImputer on its way in; the training
pipeline imputes every numeric column of a model that has any preprocessing) or when the signature marks
it optional; a categorical column always does (the pipeline imputes those with a constant, and its
encoder ignores what it does not know). A model with categorical columns, or a ColumnTransformer picking
its columns by name, is called on a DataFrame; an all-numeric one on a float array, folded into one
matrix product where it can be (linear_fold.py). The load proves the model answers its input example and,
where missing values are accepted, a row of them.

Which registry version it is comes from the deployer: a registry.json beside MLmodel
({"name", "version", "run_id", "model_uri"}, written by `mlpipeline fetch-model`), else
the environment (MLSERVING_REGISTRY_VERSION, MLSERVING_RUN_ID, MLSERVING_MODEL_URI: the
InferenceService sets them on the predictor, since KServe's storage initializer copies
only the artifact folder); without either the version is reported as "unregistered".
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kserve.errors import InvalidInput
from sklearn.base import is_classifier, is_regressor

from mlpipeline.model_format import (
    FEATURE_BUCKETS_FILE,
    PREDICTION_BUCKETS_FILE,
    PREDICTION_BUCKETS_KEY,
    MLmodelFile,
    ModelLoadError,
    load_estimator,
    read_feature_buckets,
    read_mlmodel,
)

from .linear_fold import final_step, fold_refusal, sklearn_predictor, verified_predictor
from .sklearn_inputs import imputed_columns, known_categories, selects_columns_by_name
from .validation import NUMERIC_TYPES, STRING_TYPES, Batch, InputSpec, batch_from_v1

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"
REGISTRY_ENV = {"version": "MLSERVING_REGISTRY_VERSION", "run_id": "MLSERVING_RUN_ID",
                "model_uri": "MLSERVING_MODEL_URI"}


@dataclass(frozen=True)
class LoadedModel:
    estimator: object
    # A checked request in (float rows when spec.plain, else a validation.Batch); out, a classifier's
    # positions in class_values, a regressor's predicted numbers (float64): sklearn's predict, or a verified
    # numpy fold of it (linear_fold.py).
    predictor: Callable[[np.ndarray | Batch], np.ndarray]
    class_values: np.ndarray  # a classifier's classes_, as it answers them (a regressor's: none)
    features: tuple[str, ...]
    classes: tuple[str, ...]  # the same, as text (metadata and metrics)
    version: str
    run_id: str
    model_uri: str
    source: str
    spec: InputSpec  # the features' kinds and which accept a missing value
    categories: dict[str, tuple[str, ...]]  # each categorical feature's categories the model knows
    # each numeric feature's live-drift histogram edges from the training data (read_feature_buckets);
    # None: the model has no such file, or it was refused (the server's global edges count its values)
    feature_buckets: dict[str, tuple[float, ...]] | None = None
    regression: bool = False  # a regressor: it predicts a number, not a class
    # a regressor's prediction histogram edges (prediction_buckets); None: a classifier, or no usable file
    prediction_buckets: tuple[float, ...] | None = None
    loaded_at: float = field(default_factory=time.time)

    def predict(self, rows: np.ndarray | Batch) -> np.ndarray:
        """The predicted labels (or a regressor's numbers), as the estimator's own predict gives them."""
        if self.regression:
            return self.predictor(rows)
        return self.class_values[self.predictor(rows)]


def _strip_feature_names(estimator, features: tuple[str, ...], strip: bool = True) -> None:
    """The server validates names against the signature, then passes plain arrays.

    sklearn would warn (slowly, on every call) that an array has no feature
    names, so after checking they match the signature, the fitted names go
    (unless `strip` is false: a model called on DataFrames keeps them, and only the names its first step
    takes, the model's own, are the signature's).
    """
    steps = ([s for _, s in getattr(estimator, "steps", [])] or [estimator]) if strip else [estimator]
    for step in steps:
        fitted = getattr(step, "feature_names_in_", None)
        if fitted is not None:
            if tuple(fitted) != features:
                raise ModelLoadError(f"the estimator was fitted on {list(fitted)}, but the signature says "
                                     f"{list(features)}")
            if strip:
                del step.feature_names_in_


def _example(path: Path) -> tuple[list, list] | None:
    """The input example's columns and rows (MLflow writes it in pandas' split orient, NaN as a bare NaN,
    which json reads)."""
    example = path / "input_example.json"
    if example.exists():
        doc = json.loads(example.read_text())
        columns, data = doc.get("columns"), doc.get("data")
        if columns and data:
            return columns, data
    return None


def _probe_rows(path: Path, features: tuple[str, ...]) -> np.ndarray:
    example = _example(path)
    if example is not None:
        columns, data = example
        index = [columns.index(f) for f in features]
        return np.asarray(data, dtype=np.float64)[:, index]
    return np.ones((1, len(features)))


def _probe_batch(path: Path, spec: InputSpec, categories: dict[str, tuple[str, ...]]) -> Batch:
    """The input example as a request of its rows, checked as one; without an example, one made-up row."""
    example = _example(path)
    if example is None:
        row = {name: (categories.get(name) or ("",))[0] if categorical else 1.0
               for name, categorical, _ in spec.places}
        return batch_from_v1({"instances": [row]}, spec, 1)
    columns, data = example
    try:
        instances = [{name: row[columns.index(name)] for name in spec.features} for row in data]
        return batch_from_v1({"instances": [{k: None if isinstance(v, float) and math.isnan(v) else v
                                             for k, v in row.items()} for row in instances]}, spec, len(instances))
    except (ValueError, IndexError, TypeError, InvalidInput) as exc:
        raise ModelLoadError(f"{path}: the input example does not fit the signature's columns: {exc}") from None


def _missing_row(batch: Batch, spec: InputSpec) -> Batch:
    """The first row of `batch` with every value that may be missing missing."""
    numeric = batch.numeric[:1].copy()
    numeric[:, spec.numeric_nullable] = np.nan
    return Batch(numeric, tuple(np.array([None], dtype=object) for _ in batch.categorical))


def input_spec(meta: MLmodelFile, estimator, where: str) -> InputSpec:
    """The model's inputs as the server checks them: kinds from the signature, missing values accepted where
    the model imputes (or the signature marks the column optional) and for every categorical column."""
    types = meta.feature_types or ("double",) * len(meta.features)
    unsupported = [f"{name} ({kind})" for name, kind in zip(meta.features, types, strict=True)
                   if kind not in NUMERIC_TYPES | STRING_TYPES]
    if unsupported:
        raise ModelLoadError(f"{where}: input column(s) {unsupported} have a type this server does not take; it "
                             f"takes numeric ({', '.join(sorted(NUMERIC_TYPES))}) and string columns")
    categorical = tuple(kind in STRING_TYPES for kind in types)
    imputed = imputed_columns(estimator, meta.features)
    required = meta.feature_required or (True,) * len(meta.features)
    nullable = tuple(c or name in imputed or not r
                     for name, c, r in zip(meta.features, categorical, required, strict=True))
    return InputSpec(meta.features, categorical, nullable)


def _why_sklearn(estimator, spec: InputSpec, frame: bool) -> str:
    if spec.categorical_names:
        return f"its inputs include categorical features {list(spec.categorical_names)}"
    if spec.nullable_names:
        return f"it accepts missing values for {list(spec.nullable_names)}"
    if frame:
        return "it selects its columns by name (a ColumnTransformer)"
    return fold_refusal(estimator) or "no reason"


def registry_identity(path: Path) -> dict:
    """The registry's name for the model in `path`: its registry.json, else the deployer's environment."""
    if (path / REGISTRY_FILE).exists():
        return json.loads((path / REGISTRY_FILE).read_text())
    return {key: os.environ[env] for key, env in REGISTRY_ENV.items() if os.environ.get(env)}


def feature_buckets(path: Path, spec: InputSpec) -> dict[str, tuple[float, ...]] | None:
    """The model's per-feature histogram edges, or None. A file that fails its checks is refused, not the
    model: the edges only sharpen what live drift sees, a model whose predictions pass every check is not
    kept from serving (or a swap refused) over them, and its values are still counted, on the global edges,
    which the exported le labels name, so live drift stays consistent. The refusal is logged as a warning
    naming the file and what is wrong with it."""
    try:
        edges = read_feature_buckets(path, spec.numeric_names)
    except ModelLoadError as exc:
        log.warning("%s; its feature values are counted on the server's global edges", exc)
        return None
    if edges is None:
        log.info("%s: no %s (a model logged before per-feature edges): its feature values are counted on the "
                 "server's global edges", path, FEATURE_BUCKETS_FILE)
    return edges


def prediction_buckets(path: Path) -> tuple[float, ...] | None:
    """A regressor's prediction histogram edges (its PREDICTION_BUCKETS_FILE), or None. As with feature_buckets,
    a file that fails its checks is refused, not the model (the edges only shape a histogram), with a warning
    naming the file and what is wrong with it. Without usable edges no prediction histogram is exported at all:
    there are no global edges for predictions (a target's scale is the model's own), and every version of a
    model counts on the same edges, its first version's, so that the canary and live drift can compare two
    versions' histograms; counts on any other edges would not compare. A missing file is warned about too:
    every regression model the pipeline logs carries one."""
    try:
        edges = read_feature_buckets(path, (PREDICTION_BUCKETS_KEY,), str(path), PREDICTION_BUCKETS_FILE)
    except ModelLoadError as exc:
        log.warning("%s; its predictions are not counted in a histogram (no mlserving_prediction)", exc)
        return None
    if edges is None:
        log.warning("%s: no %s: its predictions are not counted in a histogram (no mlserving_prediction)", path,
                    PREDICTION_BUCKETS_FILE)
        return None
    return edges[PREDICTION_BUCKETS_KEY]


def is_regression(estimator, where: str) -> bool:
    """Whether the model predicts numbers (a regressor) rather than classes, as scikit-learn's is_regressor and
    is_classifier say of its fitted final estimator; anything else cannot be served."""
    final = final_step(estimator)
    if is_regressor(final) and hasattr(estimator, "predict"):
        return True
    if is_classifier(final) and hasattr(estimator, "predict") and hasattr(estimator, "classes_"):
        return False
    raise ModelLoadError(f"{where}: the model is not a fitted classifier or regressor (its final step is a "
                         f"{type(final).__name__})")


def load_model_dir(path: str | Path) -> LoadedModel:
    """Load and check a model directory; raise ModelLoadError with the reason if it cannot serve."""
    path = Path(path).resolve()  # a link to a version (the local deploy's `current`): the real folder
    meta = read_mlmodel(path)
    features = meta.features
    estimator = load_estimator(meta, path)
    regression = is_regression(estimator, str(path))
    spec = input_spec(meta, estimator, str(path))
    categories = {name: categories for name, categories in known_categories(estimator, features).items()
                  if name in spec.categorical_names}
    # A DataFrame for a model that picks its columns by name, or was fitted on named text columns
    frame = hasattr(estimator, "feature_names_in_") and (bool(spec.categorical_names)
                                                          or selects_columns_by_name(estimator))
    _strip_feature_names(estimator, features, strip=not frame)
    if spec.plain and not frame:
        probe = _probe_rows(path, features)
        _test_prediction(estimator, probe, path, regression)
        predictor = verified_predictor(estimator, probe, where=str(path))
    else:
        predictor = SklearnPredictor(estimator, spec, frame)
        if spec.plain:
            _test_prediction(estimator, _as_frame(_probe_rows(path, features), features), path, regression)
        else:
            probe = _probe_batch(path, spec, categories)
            _test_prediction(estimator, predictor.model_input(probe), path, regression)
            if spec.nullable_names or spec.categorical_names:
                _test_prediction(estimator, predictor.model_input(_missing_row(probe, spec)), path, regression,
                                 " with every value that may be missing missing (null)")
        log.info("%s: predicting with sklearn, no linear fold: %s", path, _why_sklearn(estimator, spec, frame))
    registry = registry_identity(path)
    class_values = np.asarray([] if regression else estimator.classes_)
    return LoadedModel(
        estimator=estimator,
        predictor=predictor,
        class_values=class_values,
        features=features,
        spec=spec,
        categories=categories,
        classes=tuple(str(c) for c in class_values),
        version=str(registry.get("version", "unregistered")),
        run_id=str(registry.get("run_id") or meta.run_id),
        model_uri=str(registry.get("model_uri") or (f"models:/{meta.model_id}" if meta.model_id else "")),
        source=str(path.resolve()),
        feature_buckets=feature_buckets(path, spec),
        regression=regression,
        prediction_buckets=prediction_buckets(path) if regression else None,
    )


def _test_prediction(estimator, inputs, path: Path, regression: bool, what: str = "") -> None:
    """The model predicts one answer per row of `inputs`; a regressor, one finite number per row (the shape
    and kind of answer the server sends)."""
    try:
        predicted = estimator.predict(inputs)
    except Exception as exc:
        raise ModelLoadError(f"{path}: the model failed a test prediction{what}: {type(exc).__name__}: {exc}") \
            from exc
    if len(predicted) != len(inputs):
        raise ModelLoadError(f"{path}: a test prediction returned {len(predicted)} rows for {len(inputs)}")
    if regression:
        predicted = np.asarray(predicted)
        if predicted.ndim != 1 or predicted.dtype.kind not in "fiu" or not np.isfinite(predicted).all():
            raise ModelLoadError(f"{path}: a test prediction{what} is not one finite number per row: "
                                 f"{predicted.dtype} of shape {list(predicted.shape)}, "
                                 f"{predicted.ravel()[:5].tolist()}")


def _as_frame(rows: np.ndarray, features: tuple[str, ...]):
    import pandas as pd

    return pd.DataFrame(rows, columns=list(features))


class SklearnPredictor:
    """sklearn's predict as the server answers with it (a classifier's positions in classes_, a regressor's
    numbers), for a model that is not a plain float-array one: a checked request (float rows for an
    all-numeric spec, else a Batch) made into what the model was fitted on, a DataFrame (`frame`) or an
    array."""

    def __init__(self, estimator, spec: InputSpec, frame: bool):
        self.predict = sklearn_predictor(estimator)
        self.spec, self.frame = spec, frame

    def model_input(self, rows: np.ndarray | Batch):
        if type(rows) is not Batch:  # an all-numeric model that takes a DataFrame
            return _as_frame(rows, self.spec.features)
        return self.spec.frame(rows) if self.frame else self.spec.array(rows)

    def __call__(self, rows: np.ndarray | Batch) -> np.ndarray:
        return self.predict(self.model_input(rows))
