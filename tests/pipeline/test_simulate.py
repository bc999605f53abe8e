"""The batch simulator: sizes, reproducibility and what each drift kind does to a model."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipeline.errors import PipelineError
from mlpipeline.model import fit
from mlpipeline.simulate import simulate, to_csv_bytes
from mlpipeline.validate import validate_csv

from .helpers import run_cli

MODEL = {"kind": "logistic_regression", "params": {"max_iter": 500}}


@pytest.fixture(scope="module")
def clean_model():
    from mlpipeline.schema import load_schema

    schema = load_schema()
    return fit(simulate(schema, 3000, seed=100), schema.feature_names, schema.label, MODEL, 0)


def accuracy(model, frame, schema) -> float:
    return float(np.mean(model.predict(frame[schema.feature_names]) == frame[schema.label]))


@pytest.mark.parametrize("rows", [10, 1000, 200_000])
def test_sizes_are_exact_balanced_and_valid(schema, rows):
    frame = simulate(schema, rows, seed=1)
    assert len(frame) == rows and list(frame.columns) == schema.columns
    counts = frame[schema.label].value_counts()
    assert counts.max() - counts.min() <= 1
    assert validate_csv(to_csv_bytes(frame), schema).ok


def test_same_seed_same_bytes_other_seed_other_bytes(schema):
    assert to_csv_bytes(simulate(schema, 500, seed=7)) == to_csv_bytes(simulate(schema, 500, seed=7))
    assert to_csv_bytes(simulate(schema, 500, seed=7)) != to_csv_bytes(simulate(schema, 500, seed=8))


def test_clean_data_looks_like_iris(schema, clean_model):
    from sklearn.datasets import load_iris

    iris = load_iris()
    frame = simulate(schema, 30_000, seed=2)
    for i, name in enumerate(schema.feature_names):
        for c, cls in enumerate(schema.classes):
            simulated = frame.loc[frame[schema.label] == cls, name].mean()
            assert simulated == pytest.approx(iris.data[iris.target == c, i].mean(), rel=0.05)
    assert accuracy(clean_model, simulate(schema, 3000, seed=3), schema) > 0.9


def test_covariate_drift_moves_features_but_keeps_the_labelling(schema, clean_model):
    clean, shifted = simulate(schema, 5000, seed=4), simulate(schema, 5000, "covariate", 1.0, seed=4)
    assert (shifted[schema.feature_names].mean() > clean[schema.feature_names].mean() * 1.05).all()
    # P(class | features) is unchanged, so a clean model keeps most of its accuracy.
    assert accuracy(clean_model, shifted, schema) > 0.8


def test_concept_drift_breaks_a_clean_model_in_proportion_to_severity(schema, clean_model):
    mild = accuracy(clean_model, simulate(schema, 5000, "concept", 0.3, seed=5), schema)
    full = accuracy(clean_model, simulate(schema, 5000, "concept", 1.0, seed=5), schema)
    assert 0.55 < mild < 0.8 and full < 0.1
    clean = simulate(schema, 5000, seed=5)
    drifted = simulate(schema, 5000, "concept", 1.0, seed=5)
    assert np.allclose(clean[schema.feature_names], drifted[schema.feature_names])


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, "--rows must be between"),
    ({"rows": 10, "drift": "sideways"}, "--drift must be one of"),
    ({"rows": 10, "drift": "concept", "severity": 1.5}, "--severity must be"),
    ({"rows": 10, "severity": float("nan")}, "--severity must be"),
])
def test_bad_parameters_are_refused(schema, kwargs, message):
    with pytest.raises(PipelineError, match=message):
        simulate(schema, **kwargs)


def test_cli_writes_an_atomic_batch_and_a_success_marker(volume):
    result = run_cli("simulate", "--data-root", volume.root, "--partition", "2026-11-02", "--rows", 120,
                     "--drift", "covariate", "--severity", "0.5", "--seed", 3).json
    landing = volume.landing("2026-11-02")
    assert sorted(p.name for p in landing.iterdir()) == sorted([result["path"].rsplit("/", 1)[1], "_SUCCESS"])
    assert result["rows"] == 120 and sum(result["class_counts"].values()) == 120


def test_cli_refuses_bad_input_with_one_line_and_writes_nothing(volume):
    result = run_cli("simulate", "--data-root", volume.root, "--partition", "2026-11-02", "--rows", "-5",
                     check=False)
    assert result.returncode == 1 and "--rows must be between" in result.error_line
    assert not volume.root.exists()
