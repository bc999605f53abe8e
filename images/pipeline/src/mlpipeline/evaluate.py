"""Classification metrics on a labelled set."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score


def score(y_true, y_pred, classes: list[str]) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {
        "rows": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "per_class_recall": {c: float(r) for c, r in zip(classes, recalls)},
    }
