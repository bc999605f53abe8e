"""Classification metrics on a labelled set, from one confusion matrix.

Labels are mapped to class codes once, so scoring a million string labels costs
milliseconds (sklearn's metrics re-sort the strings for every metric).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(y_true, y_pred, classes: list[str]) -> np.ndarray:
    """Rows: true class; columns: predicted class, plus a last column for predictions outside `classes`."""
    k = len(classes)
    true = pd.Categorical(np.asarray(y_true), categories=classes).codes.astype(np.int64)
    pred = pd.Categorical(np.asarray(y_pred), categories=classes).codes.astype(np.int64)
    pred = np.where(pred < 0, k, pred)
    keep = true >= 0
    return np.bincount(true[keep] * (k + 1) + pred[keep], minlength=k * (k + 1)).reshape(k, k + 1)


def score(y_true, y_pred, classes: list[str]) -> dict:
    matrix = confusion(y_true, y_pred, classes)
    k = len(classes)
    right = np.diag(matrix[:, :k]).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix[:, :k].sum(axis=0).astype(float)
    recall = np.divide(right, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(right, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    rows = int(np.asarray(y_true).size)
    return {
        "rows": rows,
        "accuracy": float(right.sum() / rows) if rows else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class_recall": {c: float(r) for c, r in zip(classes, recall, strict=True)},
    }
