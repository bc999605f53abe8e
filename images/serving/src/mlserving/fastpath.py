"""A numpy fast path for linear classifiers (optionally behind StandardScalers).

sklearn spends ~0.5 ms of input checking on every predict call, even for one
row, which would be most of a request's cost. For a Pipeline of StandardScaler
steps ending in a LogisticRegression, the whole model folds into one affine map
(x @ W + b, argmax). The fold is only used after it reproduces sklearn's own
predictions on a probe batch; any other model, or any mismatch, uses sklearn. The loader never offers
it a model whose inputs are not all plain numbers (categorical columns, missing values accepted, columns
selected by name: a ColumnTransformer), and says in one log line which predictor a model got and why.

Both predictors answer with positions in the model's `classes_`, not the labels: the
answer looks the labels up once, and the traffic metrics count small integers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)


def fold_refusal(estimator) -> str | None:
    """Why the model is not StandardScalers then a LogisticRegression (None: it is, and folds)."""
    named = estimator.steps if isinstance(estimator, Pipeline) else [("model", estimator)]
    *scalers, (last_name, last) = named
    if type(last) is not LogisticRegression:
        return f"its last step {last_name!r} is a {type(last).__name__}, not a LogisticRegression"
    for name, step in scalers:
        if type(step) is not StandardScaler:
            return f"its step {name!r} is a {type(step).__name__}, not a StandardScaler"
    return None


def fold_linear(estimator) -> Callable[[np.ndarray], np.ndarray] | None:
    """The model as one affine map, predicting positions in classes_; None if it is not that kind."""
    if fold_refusal(estimator) is not None:
        return None
    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    *scalers, last = steps
    weights = last.coef_.T.astype(np.float64)          # (features, k)
    bias = last.intercept_.astype(np.float64).copy()    # (k,)
    for scaler in reversed(scalers):                   # x' = (x - mean) / scale, applied first
        mean = scaler.mean_ if scaler.with_mean else np.zeros(weights.shape[0])
        scale = scaler.scale_ if scaler.with_std else np.ones(weights.shape[0])
        weights = weights / scale[:, None]
        bias = bias - mean @ weights
    if weights.shape[1] == 1:  # binary: one decision column, positive means classes_[1]
        return lambda rows: ((rows @ weights)[:, 0] + bias[0] > 0).astype(np.intp)
    return lambda rows: (rows @ weights + bias).argmax(axis=1)


def sklearn_class_positions(estimator) -> Callable[[np.ndarray], np.ndarray]:
    """sklearn's predict, its labels mapped back to positions in classes_ (not assumed sorted)."""
    order = np.argsort(estimator.classes_, kind="stable")
    ordered = estimator.classes_[order]
    return lambda rows: order[np.searchsorted(ordered, estimator.predict(rows))]


def verified_class_positions(estimator, probe: np.ndarray, rng_seed: int = 0,
                             where: str = "the model") -> Callable[[np.ndarray], np.ndarray]:
    """The folded predictor if it agrees with sklearn on a probe batch, else sklearn's predict; either
    predicts positions in classes_. Which one, and why not the fold, is logged (one line)."""
    folded = fold_linear(estimator)
    if folded is None:
        log.info("%s: predicting with sklearn, no linear fold: %s", where, fold_refusal(estimator))
        return sklearn_class_positions(estimator)
    rng = np.random.default_rng(rng_seed)
    spread = np.abs(probe).mean(axis=0) + 1.0
    jitter = rng.normal(size=(2000, probe.shape[1])) * spread
    batch = np.vstack([probe, probe[rng.integers(0, len(probe), 2000)] + jitter])
    if np.array_equal(estimator.classes_[folded(batch)], estimator.predict(batch)):
        log.info("%s: predicting with the linear fold (StandardScalers and a LogisticRegression)", where)
        return folded
    log.warning("%s: predicting with sklearn: the linear fold disagreed with it on the probe batch", where)
    return sklearn_class_positions(estimator)
