"""Classification metrics on a labelled set, from one confusion matrix.

Labels are mapped to class codes once, so scoring a million string labels costs milliseconds (sklearn's
metrics re-sort the strings for every metric). The metric functions take a stack of confusion matrices
(`[..., classes, classes + 1]`), so the promotion test's bootstrap scores every resample in one call.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def codes(values, classes: list[str]) -> np.ndarray:
    """Class codes of `values`; a value outside `classes` gets len(classes) (a prediction no class names)."""
    coded = pd.Categorical(np.asarray(values, dtype=object).astype(str), categories=classes).codes.astype(np.int64)
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
