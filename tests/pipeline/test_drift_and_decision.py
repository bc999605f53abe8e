"""Drift statistics and the promote/reject decision."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipeline.config import engine_settings
from mlpipeline.decide import decide, mcnemar_exact, paired_bootstrap
from mlpipeline.drift import drift_report, psi
from mlpipeline.simulate import simulate

DRIFT = engine_settings()["drift"]
DECISION = {"metric": "accuracy", "min_metric": 0.7, "min_improvement": 0.01, "alpha": 0.05,
            "bootstrap_rounds": engine_settings()["decision"]["bootstrap_rounds"]}
BINARY = ["0", "1"]


def report(schema, reference, current):
    return drift_report(reference, current, schema, list(schema.classes), DRIFT)


def test_psi_is_zero_for_the_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=50_000)
    assert psi(ref, rng.normal(size=50_000)) < 0.01
    assert 0.1 < psi(ref, rng.normal(0.5, 1, size=50_000)) < psi(ref, rng.normal(1.5, 1, size=50_000))


def test_small_samples_use_ks_and_large_ones_psi(schema):
    small = report(schema, simulate(schema, 1000, seed=1), simulate(schema, 1000, seed=2))
    large = report(schema, simulate(schema, 20_000, seed=1), simulate(schema, 20_000, seed=2))
    assert small["method"] == "ks" and large["method"] == "psi"
    assert small["drifted_features"] == [] and large["drifted_features"] == []


@pytest.mark.parametrize("rows", [600, 20_000])
def test_covariate_shift_is_flagged_on_every_feature(schema, rows):
    result = report(schema, simulate(schema, rows, seed=1), simulate(schema, rows, "covariate", 1.0, seed=2))
    assert result["drifted_features"] == schema.feature_names and result["share_drifted"] == 1.0


def test_concept_drift_leaves_features_alone(schema):
    result = report(schema, simulate(schema, 3000, seed=1), simulate(schema, 3000, "concept", 1.0, seed=2))
    assert result["drifted_features"] == []


def test_label_mix_change_is_measured(schema):
    reference = simulate(schema, 3000, seed=1)
    skewed = reference[reference[schema.label] != "setosa"]
    assert report(schema, reference, skewed)["label"]["pvalue"] < 1e-6


def outcomes(n_both, n_only_challenger, n_only_champion, n_neither):
    y = np.zeros(n_both + n_only_challenger + n_only_champion + n_neither, dtype=int)
    challenger = np.concatenate([np.zeros(n_both + n_only_challenger), np.ones(n_only_champion + n_neither)])
    champion = np.concatenate([np.zeros(n_both), np.ones(n_only_challenger), np.zeros(n_only_champion),
                               np.ones(n_neither)])
    return y, challenger.astype(int), champion.astype(int)


def test_no_champion_promotes_only_above_the_floor():
    y = np.zeros(100, dtype=int)
    assert decide(y, np.zeros(100, dtype=int), None, BINARY, DECISION)["decision"] == "promote"
    worse = np.r_[np.zeros(50), np.ones(50)].astype(int)
    result = decide(y, worse, None, BINARY, DECISION)
    assert result["decision"] == "reject" and "below the minimum" in result["reason"]


def test_clear_significant_improvement_promotes():
    result = decide(*outcomes(300, 60, 5, 35), BINARY, DECISION)
    assert result["decision"] == "promote" and result["mcnemar"]["pvalue"] < 1e-6
    low, high = result["bootstrap_ci95"]
    assert low < result["improvement"] < high and low > 0


def test_small_improvement_on_one_split_is_not_enough():
    # Challenger is right on 3 more rows out of 400: greater, but not by the margin nor significantly.
    result = decide(*outcomes(350, 5, 2, 43), BINARY, DECISION)
    assert result["improvement"] > 0 and result["decision"] == "reject"
    assert "below the required margin" in result["reason"]


def test_margin_met_but_not_significant_is_rejected():
    result = decide(*outcomes(30, 4, 1, 5), BINARY, DECISION)  # +7.5% on 40 rows, McNemar p = 0.375
    assert result["improvement"] >= DECISION["min_improvement"] and result["decision"] == "reject"
    assert "not significant" in result["reason"]


def test_worse_challenger_is_rejected():
    assert decide(*outcomes(300, 5, 60, 35), BINARY, DECISION)["decision"] == "reject"


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 200), st.integers(0, 50), st.integers(0, 50), st.integers(0, 100))
def test_mcnemar_and_bootstrap_agree_with_counts(both, only_a, only_b, neither):
    if both + only_a + only_b + neither == 0:
        return
    y, a, b = outcomes(both, only_a, only_b, neither)
    test = mcnemar_exact(a == y, b == y)
    assert (test["only_challenger_right"], test["only_champion_right"]) == (only_a, only_b)
    assert 0 <= test["pvalue"] <= 1
    differences = paired_bootstrap(y, a, b, BINARY, "accuracy", 200, seed=1)
    low, high = differences.min(), differences.max()
    assert -1 <= low <= high <= 1
    if only_a == only_b == 0:
        assert low == high == 0
    if only_b == 0:
        assert low >= 0  # the challenger is never wrong where the champion is right


def test_frames_with_missing_label_column_still_report_feature_drift(schema):
    current = simulate(schema, 500, seed=3).drop(columns=[schema.label])
    reference = simulate(schema, 500, seed=4).drop(columns=[schema.label])
    result = drift_report(reference, current, schema, list(schema.classes), DRIFT)
    assert result["label"] is None and set(result["features"]) == set(schema.feature_names)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["a", "b", "c", "zz"])), min_size=1,
                max_size=80))
def test_score_matches_sklearn(pairs):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

    from mlpipeline.evaluate import score

    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    result = score(y_true, y_pred, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert result["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=["a", "b", "c"], average="macro",
                                                        zero_division=0))
    if set(y_pred) <= set(y_true):  # scikit-learn counts a class predicted but absent from y_true; we do not
        assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    recalls = recall_score(y_true, y_pred, labels=["a", "b", "c"], average=None, zero_division=0)
    assert list(result["per_class_recall"].values()) == pytest.approx(list(recalls))


def _paired(rows_right_both, only_challenger, only_champion, wrong_both, classes=3):
    """Labels and two models' predictions over `classes` classes, with the given right/wrong pattern."""
    n = rows_right_both + only_challenger + only_champion + wrong_both
    y = np.arange(n) % classes
    wrong = (y + 1) % classes
    challenger = np.where(np.arange(n) < rows_right_both + only_challenger, y, wrong)
    champion = np.where((np.arange(n) < rows_right_both) | (np.arange(n) >= rows_right_both + only_challenger)
                        & (np.arange(n) < n - wrong_both), y, wrong)
    names = [str(c) for c in range(classes)]
    return y.astype(str), challenger.astype(str), champion.astype(str), names


@pytest.mark.parametrize("metric", ["balanced_accuracy", "macro_f1"])
def test_other_metrics_decide_by_a_paired_bootstrap_of_the_metric(metric):
    settings_ = {**DECISION, "metric": metric}
    clearly_better = decide(*_paired(300, 60, 5, 35), settings_)
    assert clearly_better["decision"] == "promote" and clearly_better["paired_test"]["name"] == "paired_bootstrap"
    assert clearly_better["paired_test"]["pvalue"] < 0.01 and clearly_better["mcnemar"] is None
    assert clearly_better["bootstrap_ci95"][0] > 0 and metric in clearly_better["reason"]
    same = decide(*_paired(300, 0, 0, 100), settings_)
    assert same["decision"] == "reject" and same["improvement"] == 0
    not_significant = decide(*_paired(30, 4, 1, 5), settings_)
    assert not_significant["improvement"] >= 0.01 and not_significant["decision"] == "reject"
    assert "not significant" in not_significant["reason"]
    worse = decide(*_paired(300, 5, 60, 35), settings_)
    assert worse["decision"] == "reject" and worse["improvement"] < 0


def test_the_decision_is_made_on_the_declared_metric_not_accuracy():
    # Two classes, 90 % of one: a champion that always answers the majority class has accuracy 0.9 and
    # balanced accuracy 0.5; a challenger that finds most of the minority has lower accuracy but far
    # higher balanced accuracy.
    y = np.array(["a"] * 900 + ["b"] * 100)
    champion = np.array(["a"] * 1000)
    challenger = np.array(["a"] * 800 + ["b"] * 100 + ["b"] * 90 + ["a"] * 10)
    on_accuracy = decide(y, challenger, champion, ["a", "b"], DECISION)
    on_balanced = decide(y, challenger, champion, ["a", "b"], {**DECISION, "metric": "balanced_accuracy"})
    assert on_accuracy["decision"] == "reject" and on_accuracy["improvement"] < 0
    assert on_balanced["decision"] == "promote" and on_balanced["champion_score"] == pytest.approx(0.5)
    assert on_balanced["challenger_accuracy"] == pytest.approx(0.89)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abcz"), st.sampled_from("abcz")), min_size=5,
                max_size=60), st.sampled_from(["accuracy", "balanced_accuracy", "macro_f1"]))
def test_the_bootstrap_resamples_rows_as_a_row_bootstrap_would(rows, metric):
    """Drawing the cells' counts from one multinomial is a row bootstrap: the differences it gives have the
    mean and spread of resampling the rows themselves, and two identical models always differ by 0."""
    from mlpipeline.evaluate import METRICS, confusion

    y, a, b = (np.array(column) for column in zip(*rows, strict=True))
    classes = ["a", "b", "c"]
    rng = np.random.default_rng(1)
    by_rows = []
    for _ in range(800):
        index = rng.integers(0, y.size, y.size)
        by_rows.append(METRICS[metric](confusion(y[index], a[index], classes))
                       - METRICS[metric](confusion(y[index], b[index], classes)))
    differences = paired_bootstrap(y, a, b, classes, metric, 800, seed=0)
    assert abs(differences.mean() - np.mean(by_rows)) < 0.05
    assert abs(differences.std() - np.std(by_rows)) < 0.05
    assert not paired_bootstrap(y, a, a, classes, metric, 50, seed=0).any()
