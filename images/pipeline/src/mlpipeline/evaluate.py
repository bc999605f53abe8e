"""Classification metrics on a labelled set, from one confusion matrix.

Labels are mapped to class codes once, so scoring a million string labels costs milliseconds (sklearn's
metrics re-sort the strings for every metric). The metric functions take a stack of confusion matrices
(`[..., classes, classes + 1]`), so the promotion test's bootstrap scores every resample in one call.

A numeric target's metrics (RMSE, MAE, R², MAPE), their directions and per-row losses are at the end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def codes(values, classes: list[str]) -> np.ndarray:
    """Class codes of `values`; a value outside `classes` gets len(classes) (a prediction no class names)."""
    coded = pd.Index(classes).get_indexer(np.asarray(values, dtype=object).astype(str)).astype(np.int64)
    return np.where(coded < 0, len(classes), coded)


def confusion(y_true, y_pred, classes: list[str]) -> np.ndarray:
    """Rows: true class; columns: predicted class, plus a last column for predictions outside `classes`."""
    k = len(classes)
    true, pred = codes(y_true, classes), codes(y_pred, classes)
    keep = true < k
    return np.bincount(true[keep] * (k + 1) + pred[keep], minlength=k * (k + 1)).reshape(k, k + 1)


def _per_class(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right answers, recall and support per class."""
    k = matrix.shape[-2]
    right = np.diagonal(matrix[..., :k], axis1=-2, axis2=-1).astype(float)
    support = matrix.sum(axis=-1).astype(float)
    recall = np.divide(right, support, out=np.zeros_like(right), where=support > 0)
    return right, recall, support


def accuracy(matrix: np.ndarray) -> np.ndarray:
    total = matrix.sum(axis=(-2, -1)).astype(float)
    right = _per_class(matrix)[0].sum(axis=-1)
    return np.divide(right, total, out=np.zeros_like(right), where=total > 0)


def balanced_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in the set (as scikit-learn's balanced_accuracy_score)."""
    _, recall, support = _per_class(matrix)
    present = (support > 0).sum(axis=-1)
    return np.divide(recall.sum(axis=-1), present, out=np.zeros(recall.shape[:-1]), where=present > 0)


def macro_f1(matrix: np.ndarray) -> np.ndarray:
    """Unweighted mean F1 over the classes (as scikit-learn's f1_score(average='macro'))."""
    k = matrix.shape[-2]
    right = np.diagonal(matrix[..., :k], axis1=-2, axis2=-1).astype(float)
    support = matrix.sum(axis=-1).astype(float)
    predicted = matrix[..., :k].sum(axis=-2).astype(float)
    denominator = support + predicted
    f1 = np.divide(2 * right, denominator, out=np.zeros_like(right), where=denominator > 0)
    return f1.mean(axis=-1)


METRICS = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}


def score(y_true, y_pred, classes: list[str]) -> dict:
    matrix = confusion(y_true, y_pred, classes)
    _, recall, _ = _per_class(matrix)
    return {
        "rows": int(np.asarray(y_true).size),
        **{name: float(metric(matrix)) for name, metric in METRICS.items()},
        "per_class_recall": {c: float(r) for c, r in zip(classes, recall, strict=True)},
    }


# ---- regression --------------------------------------------------------------------------------------------
#
# A numeric target: RMSE, MAE, R² and MAPE, each with the direction in which it is better, and the per-row loss
# the promotion rule's paired test compares (decide.decide_regression). Same values as scikit-learn's
# root_mean_squared_error, mean_absolute_error, r2_score and mean_absolute_percentage_error.

REGRESSION_METRICS = {"rmse": "lower", "mae": "lower", "r2": "higher", "mape": "lower"}  # where each is better
# The per-row loss each metric is made of: the paired test compares the two models row by row on it
# (R² = 1 - SSE / SST ranks models on the same rows as the squared error does).
REGRESSION_LOSSES = {"rmse": "squared_error", "r2": "squared_error", "mae": "absolute_error",
                     "mape": "absolute_percentage_error"}
# MAPE divides by |y_true|: below this (scikit-learn's floor for the denominator) it is undefined.
MAPE_EPSILON = float(np.finfo(np.float64).eps)


class MapeUndefinedError(ValueError):
    """MAPE was asked for on a target that is (near) zero on some row."""


def regression_arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as float vectors of one length; refuses empty, mismatched or non-finite input by name."""
    true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if true.size != pred.size:
        raise ValueError(f"{true.size} targets but {pred.size} predictions")
    if true.size == 0:
        raise ValueError("no rows to score")
    for name, values in (("target", true), ("prediction", pred)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{int(np.sum(~np.isfinite(values)))} {name}(s) are NaN or infinite")
    return true, pred


def mape_defined(y_true) -> bool:
    """MAPE is defined only when every |y_true| is at least MAPE_EPSILON."""
    return bool(np.all(np.abs(np.asarray(y_true, dtype=np.float64)) >= MAPE_EPSILON))


def row_losses(y_true, y_pred, metric: str) -> np.ndarray:
    """Per-row loss for `metric`: squared error (rmse, r2), absolute error (mae), absolute percentage error
    (mape; raises MapeUndefinedError when some |y_true| < MAPE_EPSILON)."""
    true, pred = regression_arrays(y_true, y_pred)
    loss = REGRESSION_LOSSES[metric]
    if loss == "squared_error":
        return (true - pred) ** 2
    if loss == "absolute_error":
        return np.abs(true - pred)
    if not mape_defined(true):
        raise MapeUndefinedError(f"MAPE is undefined: {int(np.sum(np.abs(true) < MAPE_EPSILON))} row(s) have a "
                                 f"target of (almost) 0; choose rmse, mae or r2 for this dataset")
    return np.abs(true - pred) / np.abs(true)


def r2_from(sse, sst) -> np.ndarray:
    """1 - SSE/SST; a constant target (SST = 0) gives 1 for a perfect fit, else 0 (as scikit-learn's r2_score)."""
    sse, sst = np.asarray(sse, dtype=np.float64), np.asarray(sst, dtype=np.float64)
    ratio = np.divide(sse, sst, out=np.zeros_like(sse * sst), where=sst > 0)
    return np.where(sst > 0, 1.0 - ratio, np.where(sse == 0, 1.0, 0.0))


def rmse(y_true, y_pred) -> float:
    return float(np.sqrt(row_losses(y_true, y_pred, "rmse").mean()))


def mae(y_true, y_pred) -> float:
    return float(row_losses(y_true, y_pred, "mae").mean())


def r2(y_true, y_pred) -> float:
    true, _ = regression_arrays(y_true, y_pred)
    return float(r2_from(row_losses(y_true, y_pred, "r2").sum(), np.sum((true - true.mean()) ** 2)))


def mape(y_true, y_pred) -> float | None:
    """Mean absolute percentage error as a fraction (0.1 is 10 %), or None when it is undefined: some |y_true| is
    below MAPE_EPSILON, where the percentage error divides by (almost) zero. scikit-learn returns a huge number
    there instead; we say "undefined"."""
    true, _ = regression_arrays(y_true, y_pred)
    return float(row_losses(y_true, y_pred, "mape").mean()) if mape_defined(true) else None


REGRESSION_SCORES = {"rmse": rmse, "mae": mae, "r2": r2, "mape": mape}


def score_regression(y_true, y_pred) -> dict:
    """rows, rmse, mae, r2 and mape (None when undefined) on a labelled set."""
    true, pred = regression_arrays(y_true, y_pred)
    return {"rows": int(true.size), **{name: metric(true, pred) for name, metric in REGRESSION_SCORES.items()}}


def score_labelled(dataset, y_true, y_pred, classes: list[str]) -> dict:
    """The dataset's task's metrics of predictions on a labelled set: score (classes) or score_regression."""
    return score_regression(y_true, y_pred) if dataset.regression else score(y_true, y_pred, classes)


def primary_metrics(metrics: dict) -> dict[str, float]:
    """The scalar metrics of a score (per-class recall and row count left out; an undefined MAPE too)."""
    return {name: value for name, value in metrics.items()
            if name not in ("rows", "per_class_recall") and value is not None}
