"""The linear fold: a numpy stand-in for linear models (optionally behind StandardScalers).

sklearn spends ~0.5 ms of input checking on every predict call, even for one
row, which would be most of a request's cost. For a Pipeline of StandardScaler
steps ending in a LogisticRegression or a Ridge, the whole model folds into one affine map
(x @ W + b; a classifier's argmax). The fold is only used after it reproduces sklearn's own
predictions on a probe batch (a classifier's labels exactly, a regressor's numbers to nine significant
digits: the fold adds the same products in another order); any other model, or any mismatch, uses sklearn.
The loader never offers it a model whose inputs are not all plain numbers (categorical columns, missing
values accepted, columns selected by name: a ColumnTransformer), and says in one log line which predictor
a model got and why.

A classifier's predictors answer with positions in the model's `classes_`, not the labels: the
answer looks the labels up once, and the traffic metrics count small integers. A regressor's answer with
its predicted numbers (float64).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from sklearn.base import is_regressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)

FOLDED = (LogisticRegression, Ridge)  # the final estimators the fold takes (exactly these classes)


def final_step(estimator):
    """A Pipeline's last step (its fitted final estimator), or the estimator itself."""
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def fold_refusal(estimator) -> str | None:
    """Why the model is not StandardScalers then a LogisticRegression or a single-target Ridge (None: it is,
    and folds)."""
    named = estimator.steps if isinstance(estimator, Pipeline) else [("model", estimator)]
    *scalers, (last_name, last) = named
    if type(last) not in FOLDED:
        return f"its last step {last_name!r} is a {type(last).__name__}, not a LogisticRegression or a Ridge"
    if type(last) is Ridge and np.ndim(last.coef_) != 1:
        return f"its last step {last_name!r} predicts {len(last.coef_)} targets, not one"
    for name, step in scalers:
        if type(step) is not StandardScaler:
            return f"its step {name!r} is a {type(step).__name__}, not a StandardScaler"
    return None


def fold_linear(estimator) -> Callable[[np.ndarray], np.ndarray] | None:
    """The model as one affine map, predicting positions in classes_ (a classifier) or the predicted numbers
    (a Ridge); None if it is not that kind."""
    if fold_refusal(estimator) is not None:
        return None
    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    *scalers, last = steps
    weights = np.atleast_2d(last.coef_).T.astype(np.float64)          # (features, k); a Ridge's k is 1
    bias = np.atleast_1d(last.intercept_).astype(np.float64).copy()    # (k,)
    for scaler in reversed(scalers):                   # x' = (x - mean) / scale, applied first
        mean = scaler.mean_ if scaler.with_mean else np.zeros(weights.shape[0])
        scale = scaler.scale_ if scaler.with_std else np.ones(weights.shape[0])
        weights = weights / scale[:, None]
        bias = bias - mean @ weights
    if type(last) is Ridge:  # the prediction itself
        column, intercept = weights[:, 0].copy(), float(bias[0])
        return lambda rows: rows @ column + intercept
    if weights.shape[1] == 1:  # binary: one decision column, positive means classes_[1]
        return lambda rows: ((rows @ weights)[:, 0] + bias[0] > 0).astype(np.intp)
    return lambda rows: (rows @ weights + bias).argmax(axis=1)


def sklearn_class_positions(estimator) -> Callable[[np.ndarray], np.ndarray]:
    """sklearn's predict, its labels mapped back to positions in classes_ (not assumed sorted)."""
    order = np.argsort(estimator.classes_, kind="stable")
    ordered = estimator.classes_[order]
    return lambda rows: order[np.searchsorted(ordered, estimator.predict(rows))]


def sklearn_predictions(estimator) -> Callable[[np.ndarray], np.ndarray]:
    """A regressor's own predict, as float64 numbers."""
    return lambda rows: np.asarray(estimator.predict(rows), dtype=np.float64)


def sklearn_predictor(estimator) -> Callable[[np.ndarray], np.ndarray]:
    """sklearn's predict as the server answers with it: a regressor's numbers, a classifier's positions."""
    return sklearn_predictions(estimator) if is_regressor(final_step(estimator)) else \
        sklearn_class_positions(estimator)


def folded_agrees(estimator, folded: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> bool:
    """Whether the fold predicts what sklearn does on `rows`: the same labels, or numbers equal to nine
    significant digits of the largest prediction (the fold's sums are sklearn's products added in another
    order, so they differ in the last bits, never more)."""
    expected = estimator.predict(rows)
    if is_regressor(final_step(estimator)):
        scale = float(np.abs(expected).max(initial=0.0)) or 1.0
        return np.allclose(folded(rows), expected, rtol=1e-9, atol=1e-9 * scale)
    return np.array_equal(estimator.classes_[folded(rows)], expected)


def verified_predictor(estimator, probe: np.ndarray, rng_seed: int = 0,
                       where: str = "the model") -> Callable[[np.ndarray], np.ndarray]:
    """The folded predictor if it agrees with sklearn on a probe batch, else sklearn's predict; either
    predicts positions in classes_ (a classifier) or the predicted numbers (a regressor). Which one, and why
    not the fold, is logged (one line)."""
    folded = fold_linear(estimator)
    if folded is None:
        log.info("%s: predicting with sklearn, no linear fold: %s", where, fold_refusal(estimator))
        return sklearn_predictor(estimator)
    rng = np.random.default_rng(rng_seed)
    spread = np.abs(probe).mean(axis=0) + 1.0
    jitter = rng.normal(size=(2000, probe.shape[1])) * spread
    batch = np.vstack([probe, probe[rng.integers(0, len(probe), 2000)] + jitter])
    if folded_agrees(estimator, folded, batch):
        log.info("%s: predicting with the linear fold (StandardScalers and a %s)", where,
                 type(final_step(estimator)).__name__)
        return folded
    log.warning("%s: predicting with sklearn: the linear fold disagreed with it on the probe batch", where)
    return sklearn_predictor(estimator)
