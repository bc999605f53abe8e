"""The model a dataset file declares: a scikit-learn Pipeline built from its schema and its estimator.

The estimator comes from the allow-list of the label's task (`mlpipeline.dataset.ESTIMATORS` names them and
the params a file may set; ESTIMATORS below maps each task's names to classes). What goes before it depends
on the schema:

- every feature numeric and none nullable: the estimator alone, scaled first where it needs it (the
  shape the serving fast path folds into one matrix product);
- otherwise a ColumnTransformer: numeric features imputed (median) and scaled, categorical ones imputed
  with a constant and one-hot encoded (categories unseen in training are ignored, not refused: the
  dataset file allows unseen categories, and drift counts them).
"""

from __future__ import annotations

import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from .dataset import Dataset
from .errors import PipelineError
from .model_format import (
    CALIBRATED_CLASSIFIER,
    HIST_GRADIENT_BOOSTING_PREDICTOR,
    NUMPY_DTYPE,
    RANDOM_FOREST_TREE,
    SIGMOID_CALIBRATION,
)

MISSING_CATEGORY = "__missing__"  # what a missing categorical value is imputed as (one more one-hot column)


def _linear_svm(**params):
    return CalibratedClassifierCV(LinearSVC(**params))  # calibrated: predict_proba for the report and canary


# task: {name: (the estimator's class or factory, whether it needs scaled inputs, the random_state param)}
ESTIMATORS = {
    "classification": {
        "logistic_regression": (LogisticRegression, True, "random_state"),
        "random_forest": (lambda **p: RandomForestClassifier(**{"n_jobs": -1, **p}), False, "random_state"),
        "hist_gradient_boosting": (HistGradientBoostingClassifier, False, "random_state"),
        "linear_svm": (_linear_svm, True, "estimator__random_state"),
    },
    "regression": {
        # scaled: the penalty treats every coefficient alike, so the features must share a scale
        "ridge": (Ridge, True, "random_state"),
        "random_forest": (lambda **p: RandomForestRegressor(**{"n_jobs": -1, **p}), False, "random_state"),
        "hist_gradient_boosting": (HistGradientBoostingRegressor, False, "random_state"),
    },
}

# Types each estimator's fitted model holds that skops loads only when told to trust them. They are written
# into the model's MLmodel; every loader trusts them only if they are in model_format.TRUSTED_TYPES, the one
# allow-list (tests/pipeline/test_model.py fits each estimator and checks both).
SKOPS_TRUSTED_TYPES = {
    "logistic_regression": [],
    "ridge": [],
    "random_forest": [RANDOM_FOREST_TREE],
    "hist_gradient_boosting": [HIST_GRADIENT_BOOSTING_PREDICTOR],
    "linear_svm": [CALIBRATED_CLASSIFIER, SIGMOID_CALIBRATION],
}
IMPUTER_TYPES = [NUMPY_DTYPE]  # SimpleImputer keeps the dtype it was fitted on


def needs_preprocessing(dataset: Dataset) -> bool:
    return any(not f.numeric or f.nullable for f in dataset.features)


def skops_trusted_types(dataset: Dataset) -> list[str]:
    return sorted(set(SKOPS_TRUSTED_TYPES[dataset.estimator] + (IMPUTER_TYPES if needs_preprocessing(dataset)
                                                                    else [])))


def _estimator(dataset: Dataset):
    factory, _, seed_param = ESTIMATORS[dataset.task][dataset.estimator]
    try:
        estimator = factory(**dataset.params)
    except TypeError as exc:
        raise PipelineError(f"bad params for estimator {dataset.estimator!r}: {exc}") from exc
    estimator.set_params(**{seed_param: dataset.seed})
    return estimator


def build_model(dataset: Dataset):
    """The unfitted model for `dataset`: its columns in, its label's classes (or a number) out."""
    scaled = ESTIMATORS[dataset.task][dataset.estimator][1]
    estimator = _estimator(dataset)
    if not needs_preprocessing(dataset):
        return Pipeline([("scale", StandardScaler()), ("clf", estimator)]) if scaled else estimator
    numeric = [f.name for f in dataset.features if f.numeric]
    categorical = [f.name for f in dataset.features if not f.numeric]
    numeric_steps = [("impute", SimpleImputer(strategy="median"))] + ([("scale", StandardScaler())] if scaled else [])
    prepare = ColumnTransformer([
        ("numeric", Pipeline(numeric_steps), numeric),
        # None is the one missing marker of a text column (model_inputs and the model server both send it):
        # NaN would be a second one, which an imputer of None leaves alone.
        ("categorical", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY,
                                                           missing_values=None)),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore"))]), categorical),
    ], sparse_threshold=0)  # dense: every allow-listed estimator takes it, and the columns are few
    return Pipeline([("prepare", prepare), ("clf", estimator)])


def model_inputs(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """The feature columns as the model takes them: numeric as float64, categorical as text (object dtype,
    None for missing: one type per column, whatever type a reader gave the column)."""
    columns = {}
    for feature in dataset.features:
        column = frame[feature.name]
        if feature.numeric:
            columns[feature.name] = column.astype("float64")
        else:
            values = [None if missing else str(v) for v, missing in zip(column.to_numpy(dtype=object),
                                                                         column.isna().to_numpy(), strict=True)]
            columns[feature.name] = pd.Series(values, index=frame.index, dtype=object)
    return pd.DataFrame(columns, index=frame.index)


def targets(frame: pd.DataFrame, dataset: Dataset) -> pd.Series:
    """The label as a model is fitted and scored on: class names as text, a numeric target as float64."""
    return frame[dataset.label].astype("float64" if dataset.regression else str)


def fit(train: pd.DataFrame, dataset: Dataset):
    model = build_model(dataset)
    try:
        return model.fit(model_inputs(train, dataset), targets(train, dataset))
    except ValueError as exc:  # e.g. params out of their range, which the file's types cannot catch
        raise PipelineError(f"training {dataset.estimator} failed: {exc}") from exc
