"""The estimator: built from the config, fitted on the training set."""

from __future__ import annotations

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .errors import PipelineError
from .model_format import HIST_GRADIENT_BOOSTING_PREDICTOR, RANDOM_FOREST_TREE

ESTIMATORS = {
    "logistic_regression": lambda p: Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(**p))]),
    "random_forest": lambda p: RandomForestClassifier(**{"n_jobs": -1, **p}),
    "hist_gradient_boosting": lambda p: HistGradientBoostingClassifier(**p),
}

# Types these estimators hold that skops loads only when told to trust them. They are written into the
# model's MLmodel; every loader trusts them only if they are in model_format.TRUSTED_TYPES, the one
# allow-list (an estimator added here whose types are not there can be trained but never loaded).
SKOPS_TRUSTED_TYPES = {
    RandomForestClassifier: [RANDOM_FOREST_TREE],
    HistGradientBoostingClassifier: [HIST_GRADIENT_BOOSTING_PREDICTOR],
}


def skops_trusted_types(model) -> list[str]:
    return SKOPS_TRUSTED_TYPES.get(type(model), [])


def build_estimator(model_config: dict):
    kind = model_config.get("kind")
    if kind not in ESTIMATORS:
        raise PipelineError(f"unknown model kind {kind!r}; choose one of {sorted(ESTIMATORS)}")
    try:
        return ESTIMATORS[kind](dict(model_config.get("params") or {}))
    except TypeError as exc:
        raise PipelineError(f"bad params for model kind {kind!r}: {exc}") from exc


def fit(train: pd.DataFrame, features: list[str], label: str, model_config: dict, seed: int):
    estimator = build_estimator(model_config)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    elif "clf__random_state" in estimator.get_params():
        estimator.set_params(clf__random_state=seed)
    return estimator.fit(train[features], train[label])
