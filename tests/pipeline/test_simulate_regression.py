"""The batch simulator for a numeric target: its references (bundled tables with a numeric target,
sklearn:friedman1, files), clean batches, the covariate, coefficient and heteroscedastic drifts, bad input
and the `simulate` stage, on the regression test datasets (diabetes, friedman)."""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge

from mlpipeline.dataset import Feature
from mlpipeline.errors import PipelineError
from mlpipeline.simulate import (
    DRIFT_KINDS,
    FRIEDMAN1,
    Recalibration,
    default_reference,
    drift_feature,
    load_reference,
    prepare_reference,
    simulate,
    sklearn_references,
    to_bytes,
)
from mlpipeline.validate import validate_batch
from tests import datasets

from .helpers import run_cli

NAMES = ("diabetes", "friedman")
BUNDLED = {"diabetes": "sklearn:diabetes", "friedman": "sklearn:friedman1"}
ROWS = 4000


@functools.cache
def dataset(name: str):
    return datasets.load(name)


@functools.cache
def reference(name: str):
    return load_reference(BUNDLED[name], dataset(name))


def batch(name: str, drift: str = "none", severity: float = 1.0, seed: int = 1, rows: int = ROWS) -> pd.DataFrame:
    return simulate(dataset(name), rows, drift, severity, seed, reference(name))


def rmse(model, name: str, frame: pd.DataFrame) -> float:
    ds = dataset(name)
    return float(np.sqrt(np.mean((model.predict(frame[ds.feature_names]) - frame[ds.label].to_numpy()) ** 2)))


def fitted(name: str, frame: pd.DataFrame, flexible: bool = False):
    """A Ridge (a linear model), or gradient-boosted trees where P(y|x) must be followed closely."""
    ds = dataset(name)
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0) if flexible else Ridge(alpha=0.1)
    return model.fit(frame[ds.feature_names], frame[ds.label])


def standardized(name: str, column: str, values) -> np.ndarray:
    source = datasets.reference_frame(name)[column]
    return (np.asarray(values) - source.mean()) / source.std(ddof=0)


# ---- references --------------------------------------------------------------------------------------------


def test_the_bundled_tables_are_given_to_their_own_task():
    regression, classification = sklearn_references("regression"), sklearn_references("classification")
    assert {"sklearn:diabetes", "sklearn:friedman1"} <= set(regression)
    assert {"sklearn:iris", "sklearn:wine", "sklearn:breast_cancer"} <= set(classification)
    assert not set(regression) & set(classification)
    assert "sklearn:linnerud" not in regression, "three targets per row: not one number"


@pytest.mark.parametrize("name", NAMES)
def test_a_bundled_reference_names_its_columns_as_the_dataset_file_does(name):
    ds, ref, frame = dataset(name), reference(name), datasets.reference_frame(name)
    assert default_reference(ds) == BUNDLED[name]
    assert ref.classes == () and ref.labels.dtype == np.float64
    np.testing.assert_array_equal(ref.labels, frame[ds.label].to_numpy(float))
    for column in ds.feature_names:
        np.testing.assert_array_equal(ref.numeric[column], frame[column].to_numpy(float))


def test_friedman1_is_make_friedman1_seeded():
    ref = reference("friedman")
    assert ref.rows == FRIEDMAN1["n_samples"]
    x = {name: ref.numeric[name] for name in dataset("friedman").feature_names}
    assert all(0 <= v.min() and v.max() <= 1 for v in x.values()), "uniform features on [0, 1]"
    # Friedman #1: 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4, plus the documented noise.
    signal = 10 * np.sin(np.pi * x["x0"] * x["x1"]) + 20 * (x["x2"] - 0.5) ** 2 + 10 * x["x3"] + 5 * x["x4"]
    assert (ref.labels - signal).std() == pytest.approx(FRIEDMAN1["noise"], rel=0.1)
    assert np.array_equal(load_reference("sklearn:friedman1", dataset("friedman")).labels, ref.labels)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_reference_file_with_a_numeric_label_gives_the_same_batch(suffix, tmp_path):
    path = datasets.write_reference("diabetes", tmp_path / f"reference{suffix}")
    for drift in ("none", "heteroscedastic"):
        pd.testing.assert_frame_equal(simulate(dataset("diabetes"), 300, drift, 1.0, 13, str(path)),
                                      batch("diabetes", drift, seed=13, rows=300))


def test_the_drift_feature_is_the_one_most_correlated_with_the_target():
    for name in NAMES:
        frame = datasets.reference_frame(name)
        correlations = frame[dataset(name).feature_names].corrwith(frame[dataset(name).label]).abs()
        assert drift_feature(dataset(name), reference(name)) == correlations.idxmax()


# ---- clean batches -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_clean_batch_keeps_the_targets_distribution(name):
    ds, ref = dataset(name), datasets.reference_frame(name)
    frame = batch(name, seed=2)
    assert list(frame.columns) == ds.columns and len(frame) == ROWS
    assert frame[ds.label].dtype == np.float64
    assert stats.ks_2samp(frame[ds.label], ref[ds.label]).pvalue > 0.01
    assert set(frame[ds.label]) <= set(ref[ds.label]), "targets travel with their rows, unchanged"
    for column in ds.feature_names:
        spread = ref[column].std()
        assert frame[column].mean() == pytest.approx(ref[column].mean(), abs=0.1 * spread)
        assert frame[column].std() == pytest.approx(spread, rel=0.1)
    assert frame[ds.feature_names].duplicated().mean() < 0.001, "numeric features are jittered"
    fmt = ds.source.format
    validated = validate_batch(to_bytes(frame, fmt), f"b.{fmt}", ds)
    assert validated.ok, validated.violations


@pytest.mark.parametrize("drift", ["covariate", "coefficient", "heteroscedastic"])
def test_the_same_seed_gives_the_same_batch_and_zero_severity_the_clean_one(drift):
    pd.testing.assert_frame_equal(batch("diabetes", drift, 0.7, seed=3, rows=500),
                                  batch("diabetes", drift, 0.7, seed=3, rows=500))
    assert not batch("diabetes", drift, 0.7, seed=3, rows=500).equals(batch("diabetes", drift, 0.7, seed=4, rows=500))
    pd.testing.assert_frame_equal(batch("diabetes", drift, 0.0, seed=3, rows=500), batch("diabetes", seed=3, rows=500))


# ---- drift -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_covariate_drift_moves_the_features_and_keeps_the_relation(name):
    """P(x) shifts towards high values of the drift feature; each row keeps its target, so a model of the
    reference predicts the shifted batch about as well as a clean one."""
    ds, ref = dataset(name), datasets.reference_frame(name)
    j = drift_feature(ds, reference(name))
    clean = batch(name, seed=5)
    model = fitted(name, ref, flexible=name == "friedman")
    shifts = []
    for severity in (0.5, 1.0):
        drifted = batch(name, "covariate", severity, seed=5)
        assert set(drifted[ds.label]) <= set(ref[ds.label]), "targets are the reference rows' own"
        shifts.append(standardized(name, j, drifted[j]).mean() - standardized(name, j, clean[j]).mean())
        assert shifts[-1] > severity / 2
        assert stats.ks_2samp(drifted[j], clean[j]).pvalue < 1e-6
        assert rmse(model, name, drifted) == pytest.approx(rmse(model, name, clean), rel=0.15)
    assert shifts[1] > shifts[0], "a larger severity shifts further"


@pytest.mark.parametrize("name", NAMES)
def test_coefficient_drift_changes_the_slope_of_the_drift_feature(name):
    ds = dataset(name)
    j = drift_feature(ds, reference(name))
    severity = 1.0
    clean, drifted = batch(name, seed=6), batch(name, "coefficient", severity, seed=6)
    pd.testing.assert_frame_equal(drifted[ds.feature_names], clean[ds.feature_names])
    change = drifted[ds.label] - clean[ds.label]
    slope, intercept = np.polyfit(clean[j], change, 1)
    sd_y, sd_j = reference(name).labels.std(), datasets.reference_frame(name)[j].std(ddof=0)
    assert slope == pytest.approx(severity * sd_y / sd_j, rel=0.01), "y + severity sd_y z_j"
    assert np.abs(change - (slope * clean[j] + intercept)).max() < 0.01 * sd_y, "a linear change, no noise"
    old = fitted(name, batch(name, seed=1))
    assert rmse(old, name, drifted) > 1.5 * rmse(old, name, clean), "a model of clean data degrades"
    new = fitted(name, batch(name, "coefficient", severity, seed=2))
    assert rmse(new, name, drifted) < 1.1 * rmse(old, name, clean), "the new relation can be learned"


@pytest.mark.parametrize("name", NAMES)
def test_heteroscedastic_drift_adds_noise_that_grows_with_the_drift_feature(name):
    ds = dataset(name)
    j = drift_feature(ds, reference(name))
    severity = 0.8
    clean, drifted = batch(name, seed=7), batch(name, "heteroscedastic", severity, seed=7)
    pd.testing.assert_frame_equal(drifted[ds.feature_names], clean[ds.feature_names])
    z = np.abs(standardized(name, j, clean[j]))
    noise = (drifted[ds.label] - clean[ds.label]).to_numpy()
    sd_y = reference(name).labels.std()
    assert abs(noise.mean()) < 0.05 * sd_y, "zero on average"
    away = z > 0.2
    assert (noise[away] / z[away]).std() == pytest.approx(severity * sd_y, rel=0.06), "N(0, (s sd_y |z_j|)^2)"
    model = fitted(name, batch(name, seed=1))
    low, high = z <= np.quantile(z, 0.25), z >= np.quantile(z, 0.75)

    def spread_ratio(frame):
        residuals = frame[ds.label].to_numpy() - model.predict(frame[ds.feature_names])
        return residuals[high].var() / residuals[low].var()

    assert spread_ratio(drifted) > 3 * spread_ratio(clean), "residual variance grows with |z_j|"


# ---- bad input ---------------------------------------------------------------------------------------------


def _labelled(name: str, values) -> pd.DataFrame:
    frame = datasets.reference_frame(name)
    frame[dataset(name).label] = values(len(frame))
    return frame


@pytest.mark.parametrize("name, frame, message", [
    ("diabetes", lambda: _labelled("diabetes", lambda n: np.where(np.arange(n) % 2, "high", "low")),
     "the label 'progression' of a regression dataset must hold numbers; it holds such as 'low'"),
    ("diabetes", lambda: _labelled("diabetes", lambda n: np.r_[np.inf, np.ones(n - 1)]),
     "the label 'progression' holds infinite values"),
    ("diabetes", lambda: _labelled("diabetes", lambda n: np.r_[np.nan, np.ones(n - 1)]),
     "the label column 'progression' has 1 missing value(s)"),
    ("cancer-mixed", lambda: _labelled("cancer-mixed", lambda n: np.linspace(0, 1, n)),
     "the label 'diagnosis' holds numbers with fractions (such as 0.00"),
])
def test_a_label_that_does_not_fit_the_task_is_refused(name, frame, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        prepare_reference(frame(), dataset(name), "ref.csv")


def test_a_bundled_table_of_the_other_task_is_refused():
    regression, classification = (", ".join(sklearn_references(t)) for t in ("regression", "classification"))
    with pytest.raises(PipelineError, match=re.escape(f"sklearn:iris: a classification table (named classes), but "
                                                      f"the dataset's label is regression; use {regression}")):
        load_reference("sklearn:iris", dataset("diabetes"))
    with pytest.raises(PipelineError, match=re.escape(f"sklearn:diabetes: a regression table (a numeric target, "
                                                      f"no classes), but the dataset's label is classification; use "
                                                      f"{classification}")):
        load_reference("sklearn:diabetes", dataset("wine"))
    other = dataclasses.replace(dataset("diabetes"), name="other", features=(Feature("weight", "numeric"),))
    with pytest.raises(PipelineError, match=re.escape(f"dataset 'other' needs --reference: a CSV or Parquet sample "
                                                      f"with its columns ('weight', 'progression'); no bundled "
                                                      f"scikit-learn dataset ({regression}) has its features")):
        load_reference(None, other)


@pytest.mark.parametrize("name, drift, task, other", [("diabetes", "concept", "regression", "classification"),
                                                      ("iris", "coefficient", "classification", "regression")])
def test_a_drift_of_the_other_task_is_refused_with_each_tasks_drifts(name, drift, task, other):
    expected = (f"--drift must be one of {', '.join(DRIFT_KINDS[task])}, got {drift!r} (the drifts of a {task} "
                f"label; a {other} label's: {', '.join(DRIFT_KINDS[other])})")
    with pytest.raises(PipelineError, match=re.escape(expected)):
        simulate(dataset(name), 10, drift, 0.5)


def test_a_regression_drift_needs_a_numeric_feature_that_varies():
    frame = datasets.reference_frame("diabetes")
    frame[dataset("diabetes").feature_names] = 0.0
    assert len(simulate(dataset("diabetes"), 10, "none", reference=frame)) == 10
    with pytest.raises(PipelineError, match="no numeric feature of --reference .* has two different values"):
        simulate(dataset("diabetes"), 10, "coefficient", reference=frame)


# ---- the stage ---------------------------------------------------------------------------------------------


def test_the_stage_lands_a_drifted_regression_batch(tmp_path):
    root = tmp_path / "volume"
    result = run_cli("simulate", "--data-root", root, "--dataset", datasets.dataset_path("friedman"),
                     "--partition", "2026-11-02", "--rows", 300, "--drift", "coefficient", "--severity", "0.5",
                     "--seed", 3).json
    ds = dataset("friedman")
    assert result["reference"] == "sklearn:friedman1" and result["path"].endswith(".parquet")
    assert result["drift_feature"] == drift_feature(ds, reference("friedman"))
    assert "class_counts" not in result
    frame = pd.read_parquet(result["path"])
    pd.testing.assert_frame_equal(frame, batch("friedman", "coefficient", 0.5, seed=3, rows=300))
    assert result["target"] == pytest.approx({"mean": frame[ds.label].mean(), "std": frame[ds.label].std(ddof=0),
                                              "min": frame[ds.label].min(), "max": frame[ds.label].max()})
    assert validate_batch(open(result["path"], "rb").read(), result["path"], ds).ok


def test_the_stage_lands_a_recalibrated_regression_batch_whose_targets_stay(tmp_path):
    """A recalibration changes what the sensors read, not what is measured: the targets are the clean batch's,
    and no drift feature is named (the recalibrated columns are)."""
    root = tmp_path / "volume"
    result = run_cli("simulate", "--data-root", root, "--dataset", datasets.dataset_path("diabetes"), "--partition",
                     "2026-11-02", "--rows", 300, "--seed", 3, "--drift", "recalibration", "--recalibrate",
                     "bmi*1.6").json
    assert result["recalibrated"] == ["bmi*1.6"] and "drift_feature" not in result
    frame, clean = pd.read_csv(result["path"], dtype="float64"), batch("diabetes", seed=3, rows=300)
    pd.testing.assert_frame_equal(frame.drop(columns="bmi"), clean.drop(columns="bmi"), check_exact=False)
    np.testing.assert_allclose(frame["bmi"], 1.6 * clean["bmi"], rtol=0, atol=1e-9)
    assert not np.allclose(frame["bmi"], clean["bmi"])


def test_a_recalibrated_regression_batch_is_the_clean_one_but_for_the_sensor():
    clean = batch("diabetes", seed=5, rows=500)
    drifted = simulate(dataset("diabetes"), 500, "recalibration", seed=5, reference=reference("diabetes"),
                       recalibrations=(Recalibration("s5", 1.0, -0.02),))
    pd.testing.assert_frame_equal(drifted.drop(columns="s5"), clean.drop(columns="s5"))
    np.testing.assert_allclose(drifted["s5"], clean["s5"] - 0.02, rtol=0, atol=1e-12)


def test_the_stage_refuses_a_drift_of_the_other_task_and_writes_nothing(tmp_path):
    root = tmp_path / "volume"
    result = run_cli("simulate", "--data-root", root, "--dataset", datasets.dataset_path("diabetes"), "--partition",
                     "2026-11-02", "--drift", "label_noise", "--severity", "0.2", check=False)
    expected = f"--drift must be one of {', '.join(DRIFT_KINDS['regression'])}, got 'label_noise'"
    assert result.returncode == 1 and expected in result.error_line, result.stderr
    assert result.stdout == "" and not root.exists()
