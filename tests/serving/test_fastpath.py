"""The linear fold must predict exactly what sklearn predicts, or not be used; both answer with positions
in the model's classes_."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserving.fastpath import fold_linear, sklearn_class_positions, verified_class_positions


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
    assert np.array_equal(model.classes_[folded(probe)], model.predict(probe))
    assert verified_class_positions(model, x[:5]) is not None
    assert verified_class_positions(model, x[:5]).__qualname__.startswith("fold_linear")


def test_other_models_use_sklearn():
    x, y = data(3)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    assert fold_linear(forest) is None
    positions = verified_class_positions(forest, x[:5])
    assert positions.__qualname__.startswith("sklearn_class_positions")
    assert np.array_equal(forest.classes_[positions(x)], forest.predict(x))


def test_sklearns_labels_map_back_to_positions_in_unsorted_classes():
    """sklearn sorts classes_ when it fits; a model whose classes_ were set otherwise still maps back."""
    x, y = data(3)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    order = np.array([2, 0, 1])
    forest.classes_ = forest.classes_[order]  # the trees' outputs now index a permuted list
    predicted = forest.predict(x)
    assert np.array_equal(forest.classes_[sklearn_class_positions(forest)(x)], predicted)


def test_a_pipeline_with_a_column_transformer_says_why_it_does_not_fold(caplog):
    import logging

    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    from mlserving.fastpath import fold_refusal

    x, y = data(3)
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": np.where(x[:, 2] > 0.2, "p", "q")})
    model = make_pipeline(ColumnTransformer([("n", StandardScaler(), ["a", "b"]), ("c", OneHotEncoder(), ["c"])]),
                          LogisticRegression(max_iter=1000)).fit(frame, y)
    assert fold_linear(model) is None
    assert fold_refusal(model) == "its step 'columntransformer' is a ColumnTransformer, not a StandardScaler"
    with caplog.at_level(logging.INFO, logger="mlserving.fastpath"):
        positions = verified_class_positions(model, frame.head(5), where="m")
    assert [r.getMessage() for r in caplog.records] == [
        "m: predicting with sklearn, no linear fold: its step 'columntransformer' is a ColumnTransformer, not a "
        "StandardScaler"]
    assert np.array_equal(model.classes_[positions(frame)], model.predict(frame))
