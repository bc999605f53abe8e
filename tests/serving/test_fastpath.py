"""The linear fold must predict exactly what sklearn predicts, or not be used."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserving.fastpath import fold_linear, verified_fast_predict


def data(classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 4)) * [1, 5, 0.1, 20] + [5, -3, 0.2, 100]
    y = np.asarray(["a", "b", "c", "d"])[((x[:, 0] + x[:, 1] / 5 > 2).astype(int) + (x[:, 3] > 100)) % classes]
    return x, y


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("scalers", [0, 1, 2])
def test_fold_matches_sklearn(classes, scalers):
    x, y = data(classes)
    model = make_pipeline(*[StandardScaler() for _ in range(scalers)], LogisticRegression(max_iter=1000)).fit(x, y)
    folded = fold_linear(model)
    probe = np.random.default_rng(1).normal(size=(5000, 4)) * [2, 10, 0.3, 40] + [5, -3, 0.2, 100]
    assert np.array_equal(folded(probe), model.predict(probe))
    assert verified_fast_predict(model, x[:5]) is not model.predict


def test_other_models_use_sklearn():
    x, y = data(3)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    assert fold_linear(forest) is None
    assert verified_fast_predict(forest, x[:5]) == forest.predict
