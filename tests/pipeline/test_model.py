"""The model a dataset file declares: built from its schema, trainable on missing values and unseen
categories, and loadable under the one loading policy (skops, the fixed allow-list of trusted types)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io

from mlpipeline import dataset, model_format
from mlpipeline.model import build_model, fit, model_inputs, skops_trusted_types

NUMERIC = """
model_name: numbers
label: {column: y}
features:
  - {name: a, type: numeric}
  - {name: b, type: numeric}
"""
MIXED = """
model_name: mixed
label: {column: y}
features:
  - {name: a, type: numeric, nullable: true}
  - {name: b, type: numeric}
  - {name: colour, type: categorical, nullable: true}
  - {name: size, type: categorical}
"""


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows),
                         "colour": rng.choice(["red", "green", "blue"], rows),
                         "size": rng.choice(["S", "M", "L"], rows)})
    score = data["a"] + (data["colour"] == "red") * 1.5 - (data["size"] == "S")
    data["y"] = np.where(score > 0.3, "yes", "no")
    data.loc[data.index % 9 == 0, "a"] = np.nan
    data.loc[data.index % 11 == 0, "colour"] = None
    return data


def saved_and_loaded(tmp_path, fitted, spec: dataset.Dataset):
    """`fitted` saved in the skops format and loaded back trusting only the types the allow-list gives it,
    after checking those are all it needs and all in the one allow-list."""
    path = tmp_path / "model.skops"
    skops.io.dump(fitted, path)
    needed = set(skops.io.get_untrusted_types(file=path))
    assert needed <= set(skops_trusted_types(spec)) <= model_format.TRUSTED_TYPES
    return skops.io.load(path, trusted=skops_trusted_types(spec))


def regression_frame(rows: int, seed: int) -> pd.DataFrame:
    """MIXED's columns with a numeric target: linear in a and b, a step for one colour and one size."""
    data = frame(rows, seed).drop(columns="y")
    rng = np.random.default_rng(seed + 100)
    data["y"] = (3 * data["a"].fillna(0.0) - 2 * data["b"] + 4 * (data["colour"] == "red") - 2 * (data["size"] == "S")
                 + rng.normal(scale=0.5, size=rows))
    return data


def regression(text: str) -> str:
    return text.replace("label: {column: y}", "label: {column: y, task: regression}")


def declared(text: str, estimator: str) -> dataset.Dataset:
    params = {"random_forest": "{n_estimators: 10}", "hist_gradient_boosting": "{max_iter: 20}"}.get(estimator, "{}")
    return dataset.parse_text(text + f"model: {{estimator: {estimator}, params: {params}}}\n", "test.yaml", "test")


@pytest.mark.parametrize("estimator", sorted(dataset.CLASSIFIERS))
@pytest.mark.parametrize("schema", ["numeric", "mixed"])
def test_every_allow_listed_estimator_trains_saves_and_loads_under_the_policy(tmp_path, estimator, schema):
    spec = declared(NUMERIC if schema == "numeric" else MIXED, estimator)
    train = frame(400, 1) if schema == "mixed" else frame(400, 1).fillna({"a": 0.0})
    fitted = fit(train, spec)
    loaded = saved_and_loaded(tmp_path, fitted, spec)
    test = frame(100, 2) if schema == "mixed" else frame(100, 2).fillna({"a": 0.0})
    inputs = model_inputs(test, spec)
    assert (loaded.predict(inputs) == fitted.predict(inputs)).all()
    assert (fitted.predict(inputs) == test["y"]).mean() > 0.6  # it learned something


def test_an_all_numeric_dataset_keeps_the_shape_the_serving_fast_path_folds():
    spec = declared(NUMERIC, "logistic_regression")
    assert [name for name, _ in build_model(spec).steps] == ["scale", "clf"]
    assert not hasattr(build_model(declared(NUMERIC, "random_forest")), "steps")


def test_missing_values_and_categories_never_seen_in_training_are_answered():
    spec = declared(MIXED, "logistic_regression")
    fitted = fit(frame(300, 1), spec)
    unseen = pd.DataFrame({"a": [np.nan, 0.5], "b": [0.1, -0.2], "colour": [None, "purple"], "size": ["XL", "M"]})
    assert set(fitted.predict(model_inputs(unseen, spec))) <= {"yes", "no"}


def test_categories_that_look_like_numbers_stay_text():
    spec = declared(MIXED, "logistic_regression")
    data = frame(200, 3)
    data["size"] = np.where(data["size"] == "S", 1, 2)  # a reader that typed the column as integers
    inputs = model_inputs(data, spec)
    assert set(inputs["size"]) == {"1", "2"} and inputs["a"].dtype == "float64"
    assert inputs["colour"].map(lambda v: v is None or isinstance(v, str)).all()


def test_params_the_file_allows_but_the_estimator_refuses_fail_with_a_clear_error():
    from mlpipeline.errors import PipelineError

    spec = dataset.parse_text(NUMERIC + "model: {estimator: logistic_regression, params: {C: -1}}\n", "t.yaml", "t")
    with pytest.raises(PipelineError, match="training logistic_regression failed: .*C"):
        fit(frame(100, 1).fillna({"a": 0.0}), spec)


@pytest.mark.parametrize("estimator", sorted(dataset.REGRESSORS))
@pytest.mark.parametrize("schema", ["numeric", "mixed"])
def test_every_allow_listed_regressor_trains_saves_and_loads_under_the_policy(tmp_path, estimator, schema):
    spec = declared(regression(NUMERIC if schema == "numeric" else MIXED), estimator)
    train = regression_frame(600, 1) if schema == "mixed" else regression_frame(600, 1).fillna({"a": 0.0})
    fitted = fit(train, spec)
    loaded = saved_and_loaded(tmp_path, fitted, spec)
    test = regression_frame(200, 2) if schema == "mixed" else regression_frame(200, 2).fillna({"a": 0.0})
    inputs = model_inputs(test, spec)
    predictions = loaded.predict(inputs)
    # allclose: a forest sums its trees in parallel, in whatever order they finish
    assert predictions.dtype == np.float64 and np.allclose(predictions, fitted.predict(inputs), rtol=1e-12)
    baseline = np.sqrt(np.mean((test["y"] - train["y"].mean()) ** 2))
    assert np.sqrt(np.mean((predictions - test["y"]) ** 2)) < 0.8 * baseline  # it learned something


def test_ridge_on_numeric_features_keeps_the_shape_the_serving_fast_path_folds():
    assert [name for name, _ in build_model(declared(regression(NUMERIC), "ridge")).steps] == ["scale", "clf"]


def test_a_regression_target_that_is_not_a_number_fails_training_clearly():
    from mlpipeline.errors import PipelineError

    spec = declared(regression(NUMERIC), "ridge")
    data = regression_frame(50, 1).fillna({"a": 0.0}).astype({"y": object})
    data.loc[3, "y"] = "high"
    with pytest.raises((PipelineError, ValueError), match="high"):
        fit(data, spec)
