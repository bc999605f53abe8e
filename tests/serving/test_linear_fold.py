"""The linear fold must predict exactly what sklearn predicts (a regressor's numbers to rounding), or not be
used; both answer with positions in a classifier's classes_, or with a regressor's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserving.linear_fold import fold_linear, fold_refusal, sklearn_class_positions, verified_predictor


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
    assert verified_predictor(model, x[:5]) is not None
    assert verified_predictor(model, x[:5]).__qualname__.startswith("fold_linear")


def test_other_models_use_sklearn():
    x, y = data(3)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    assert fold_linear(forest) is None
    positions = verified_predictor(forest, x[:5])
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

    x, y = data(3)
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": np.where(x[:, 2] > 0.2, "p", "q")})
    model = make_pipeline(ColumnTransformer([("n", StandardScaler(), ["a", "b"]), ("c", OneHotEncoder(), ["c"])]),
                          LogisticRegression(max_iter=1000)).fit(frame, y)
    assert fold_linear(model) is None
    assert fold_refusal(model) == "its step 'columntransformer' is a ColumnTransformer, not a StandardScaler"
    with caplog.at_level(logging.INFO, logger="mlserving.linear_fold"):
        positions = verified_predictor(model, frame.head(5), where="m")
    assert [r.getMessage() for r in caplog.records] == [
        "m: predicting with sklearn, no linear fold: its step 'columntransformer' is a ColumnTransformer, not a "
        "StandardScaler"]
    assert np.array_equal(model.classes_[positions(frame)], model.predict(frame))


def regression_data(seed: int = 0):
    """Features on scales from 0.1 to 20 around offsets up to 100, and a number to predict from them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 4)) * [1, 5, 0.1, 20] + [5, -3, 0.2, 100]
    return x, 3 * x[:, 0] - x[:, 1] / 5 + 40 * x[:, 2] + 0.05 * x[:, 3] + rng.normal(0, 0.5, 600)


@pytest.mark.parametrize("scalers", [0, 1, 2])
def test_a_ridge_folds_and_predicts_what_sklearn_predicts(scalers):
    x, y = regression_data()
    model = make_pipeline(*[StandardScaler() for _ in range(scalers)], Ridge(alpha=0.5)).fit(x, y) if scalers \
        else Ridge(alpha=0.5).fit(x, y)
    folded = fold_linear(model)
    probe = np.random.default_rng(1).normal(size=(20_000, 4)) * [2, 10, 0.3, 40] + [5, -3, 0.2, 100]
    assert folded(probe).dtype == np.float64 and folded(probe).shape == (20_000,)
    assert np.allclose(folded(probe), model.predict(probe), rtol=1e-12, atol=1e-9)
    predictor = verified_predictor(model, x[:5])
    assert predictor.__qualname__.startswith("fold_linear")
    assert np.allclose(predictor(probe), model.predict(probe), rtol=1e-12, atol=1e-9)


def test_a_ridge_of_several_targets_is_not_folded():
    x, y = regression_data()
    model = make_pipeline(StandardScaler(), Ridge()).fit(x, np.column_stack([y, -y]))
    assert fold_linear(model) is None
    assert fold_refusal(model) == "its last step 'ridge' predicts 2 targets, not one"


@pytest.mark.parametrize("regressor", [RandomForestRegressor(n_estimators=5, random_state=0),
                                       HistGradientBoostingRegressor(max_iter=20, random_state=0)],
                         ids=["random_forest", "hist_gradient_boosting"])
def test_other_regressors_use_sklearns_predictions(regressor):
    x, y = regression_data()
    model = regressor.fit(x, y)
    assert fold_linear(model) is None
    assert fold_refusal(model) == f"its last step 'model' is a {type(regressor).__name__}, not a LogisticRegression " \
        "or a Ridge"
    predictor = verified_predictor(model, x[:5])
    assert predictor.__qualname__.startswith("sklearn_predictions")
    assert predictor(x).dtype == np.float64 and np.array_equal(predictor(x), model.predict(x))

