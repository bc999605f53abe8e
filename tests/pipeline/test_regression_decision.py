"""A numeric target's metrics (mlpipeline.evaluate) and promotion rule (mlpipeline.decide.decide_regression):
scikit-learn's values, the directions, the paired Wilcoxon test and bootstrap CI at the rule's boundaries."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipeline.config import engine_settings
from mlpipeline.contracts import REGRESSION_FIELDS, TrainingDecision
from mlpipeline.decide import decide_regression, regression_bootstrap, wilcoxon_losses
from mlpipeline.evaluate import (
    MAPE_EPSILON,
    REGRESSION_LOSSES,
    REGRESSION_METRICS,
    MapeUndefinedError,
    mape,
    r2,
    row_losses,
    score_regression,
)

ROUNDS = engine_settings()["decision"]["bootstrap_rounds"]
RMSE = {"metric": "rmse", "max_metric": 45.0, "min_improvement": 0.05, "alpha": 0.05, "bootstrap_rounds": ROUNDS}
R2 = {"metric": "r2", "min_metric": 0.5, "min_improvement": 0.05, "alpha": 0.05, "bootstrap_rounds": ROUNDS}


def models(rows=400, challenger_noise=1.0, champion_noise=1.3, seed=0):
    """A target and two models' predictions whose errors have the given spreads."""
    rng = np.random.default_rng(seed)
    y = rng.normal(50, 10, rows)
    return y, y + rng.normal(0, challenger_noise, rows), y + rng.normal(0, champion_noise, rows)


# ---- metrics -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("seed", "rows"), [(0, 2), (1, 7), (2, 100), (3, 5000), (4, 20_000)])
def test_regression_metrics_equal_scikit_learn(seed, rows):
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        r2_score,
        root_mean_squared_error,
    )

    rng = np.random.default_rng(seed)
    y_true = rng.normal(3, 5, rows) * rng.choice([1, 1e3], rows)
    y_pred = y_true + rng.standard_t(3, rows) * 4
    result = score_regression(y_true, y_pred)
    assert result["rows"] == rows
    expected = {"rmse": root_mean_squared_error(y_true, y_pred), "mae": mean_absolute_error(y_true, y_pred),
                "r2": r2_score(y_true, y_pred), "mape": mean_absolute_percentage_error(y_true, y_pred)}
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_r2_of_a_constant_target_is_scikit_learns():
    from sklearn.metrics import r2_score

    y = np.full(5, 2.0)
    assert r2(y, y) == r2_score(y, y) == 1.0
    assert r2(y, y + 1) == r2_score(y, y + 1) == 0.0


def test_each_metric_has_a_direction_and_a_per_row_loss():
    assert REGRESSION_METRICS == {"rmse": "lower", "mae": "lower", "r2": "higher", "mape": "lower"}
    y, a, _ = models(50)
    assert np.sqrt(row_losses(y, a, "rmse").mean()) == pytest.approx(score_regression(y, a)["rmse"], rel=1e-12)
    assert row_losses(y, a, "mae").mean() == pytest.approx(score_regression(y, a)["mae"], rel=1e-12)
    assert row_losses(y, a, "mape").mean() == pytest.approx(score_regression(y, a)["mape"], rel=1e-12)
    assert np.array_equal(row_losses(y, a, "r2"), row_losses(y, a, "rmse"))
    assert set(REGRESSION_LOSSES) == set(REGRESSION_METRICS)


def test_mape_is_undefined_where_the_target_is_zero():
    y, pred = np.array([0.0, 1.0, 2.0]), np.array([0.1, 1.1, 1.9])
    assert mape(y, pred) is None and score_regression(y, pred)["mape"] is None
    assert score_regression(y, pred)["rmse"] is not None  # the other metrics are still given
    assert mape(y + MAPE_EPSILON, pred) is not None
    with pytest.raises(MapeUndefinedError, match=r"MAPE is undefined: 1 row\(s\) have a target of \(almost\) 0"):
        row_losses(y, pred, "mape")
    with pytest.raises(MapeUndefinedError, match="choose rmse, mae or r2"):
        decide_regression(y, pred, pred[::-1], {**RMSE, "metric": "mape"})


@pytest.mark.parametrize(("y_true", "y_pred", "message"), [
    ([1.0, 2.0], [1.0], "2 targets but 1 predictions"),
    ([], [], "no rows to score"),
    ([1.0, 2.0], [1.0, np.nan], r"1 prediction\(s\) are NaN or infinite"),
    ([np.inf, 2.0], [1.0, 2.0], r"1 target\(s\) are NaN or infinite"),
])
def test_input_off_the_rails_is_refused_by_name(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        score_regression(y_true, y_pred)


# ---- the promotion rule at its boundaries ----------------------------------------------------------------------

@pytest.mark.parametrize("margin", [0.05, 0.0])
def test_equal_models_are_not_promoted(margin):
    y, a, _ = models()
    result = decide_regression(y, a, a.copy(), {**RMSE, "min_improvement": margin})
    assert result["decision"] == "reject" and result["improvement"] == 0
    assert result["paired_test"]["pvalue"] == 1.0 and result["paired_test"]["name"] == "wilcoxon"
    assert result["bootstrap_ci95"] == [0.0, 0.0]
    assert ("below the required margin" if margin else "not significant") in result["reason"]
    assert margin or "Wilcoxon p=1 >= 0.05" in result["reason"] and "includes 0" in result["reason"]


def test_all_zero_differences_give_p_one_not_nan():
    assert wilcoxon_losses(np.ones(30), np.ones(30))["pvalue"] == 1.0


def test_a_clearly_better_challenger_is_promoted_with_its_evidence():
    result = decide_regression(*models(champion_noise=1.6), RMSE)
    assert result["decision"] == "promote" and result["direction"] == "lower"
    assert result["challenger_score"] < result["champion_score"]
    assert result["improvement"] == pytest.approx(result["champion_score"] - result["challenger_score"])
    assert result["relative_improvement"] == pytest.approx(result["improvement"] / result["champion_score"])
    assert result["relative_improvement"] >= result["min_improvement"] == 0.05
    test = result["paired_test"]
    assert test["pvalue"] < 1e-6 and test["alternative"] == "less" and test["loss"] == "squared_error"
    low, high = result["bootstrap_ci95"]
    assert 0 < low < result["improvement"] < high
    assert result["reason"].startswith("challenger beats champion by ")
    assert "% rmse (>= 5 %)" in result["reason"] and "Wilcoxon p=" in result["reason"]
    assert "bootstrap 95% CI of the difference [" in result["reason"] and "excludes 0" in result["reason"]


def test_a_worse_challenger_is_rejected():
    y, a, b = models()
    result = decide_regression(y, b, a, RMSE)
    assert result["decision"] == "reject" and result["improvement"] < 0 and result["relative_improvement"] < 0
    assert result["paired_test"]["pvalue"] > 0.5 and result["bootstrap_ci95"][1] < 0


def test_better_on_average_on_few_noisy_rows_is_not_promoted():
    # Ten rows: the challenger is much closer on six and farther on four; its RMSE is 5.6 % lower (the margin
    # is met), but on ten rows that is no evidence: the Wilcoxon test and the bootstrap CI both say so.
    y = np.zeros(10)
    champion = np.ones(10)
    challenger = np.array([0.6] * 6 + [1.3] * 4)
    result = decide_regression(y, challenger, champion, RMSE)
    assert 0.05 <= result["relative_improvement"] < 0.06
    assert result["decision"] == "reject" and "is not significant" in result["reason"]
    assert result["paired_test"]["pvalue"] >= 0.05 and result["bootstrap_ci95"][0] <= 0 < result["bootstrap_ci95"][1]
    assert "includes 0" in result["reason"]


def test_a_significant_improvement_below_the_margin_is_not_promoted():
    rng = np.random.default_rng(5)
    y = rng.normal(0, 1, 5000)
    error = rng.normal(0, 1, 5000)
    result = decide_regression(y, y + 0.98 * error, y + error, RMSE)  # 2 % better on every row
    assert result["relative_improvement"] == pytest.approx(0.02)
    assert result["paired_test"]["pvalue"] < 1e-10 and result["bootstrap_ci95"][0] > 0
    assert result["decision"] == "reject" and "below the required margin 5 %" in result["reason"]


def test_the_margin_is_relative_to_the_champion():
    y, a, b = models()
    result = decide_regression(y, a, b, RMSE)
    just_above = decide_regression(y, a, b, {**RMSE, "min_improvement": result["relative_improvement"] * 0.999})
    just_below = decide_regression(y, a, b, {**RMSE, "min_improvement": result["relative_improvement"] * 1.001})
    assert just_above["decision"] == "promote" and just_below["decision"] == "reject"


def test_a_first_model_is_held_to_the_threshold_in_its_direction():
    y, a, _ = models()  # challenger rmse about 1.0, r2 about 0.99
    assert decide_regression(y, a, None, {**RMSE, "max_metric": 1.5})["decision"] == "promote"
    above = decide_regression(y, a, None, {**RMSE, "max_metric": 0.5})
    assert above["decision"] == "reject" and "is above the maximum 0.5" in above["reason"]
    assert above["threshold"] == 0.5 and above["champion_score"] is None and "paired_test" not in above
    assert decide_regression(y, a, None, {**R2, "min_metric": 0.9})["decision"] == "promote"
    below = decide_regression(y, a, None, {**R2, "min_metric": 0.999})
    assert below["decision"] == "reject" and "is below the minimum 0.999" in below["reason"]


def test_the_threshold_must_be_the_one_the_direction_asks_for():
    y, a, _ = models(20)
    with pytest.raises(ValueError, match=r"rmse is better lower: a first model's threshold is max_metric "
                                         r"\(metric.max\), not min_metric"):
        decide_regression(y, a, None, {**R2, "metric": "rmse"})
    with pytest.raises(ValueError, match=r"r2 is better higher: a first model's threshold is min_metric "
                                         r"\(metric.min\), not max_metric"):
        decide_regression(y, a, None, {**RMSE, "metric": "r2"})
    with pytest.raises(ValueError, match="'accuracy' is not a regression metric"):
        decide_regression(y, a, None, {**RMSE, "metric": "accuracy"})


def test_r2_is_decided_in_its_own_direction():
    y, a, b = models()
    better = decide_regression(y, a, b, R2)
    assert better["decision"] == "promote" and better["direction"] == "higher"
    assert better["challenger_score"] > better["champion_score"] and better["improvement"] > 0
    assert better["bootstrap_ci95"][0] > 0
    # On the same rows the share of unexplained variance removed is the relative fall of the squared error.
    squared = [row_losses(y, p, "r2").sum() for p in (a, b)]
    assert better["relative_improvement"] == pytest.approx(1 - squared[0] / squared[1], rel=1e-9)
    assert "of the champion's unexplained variance (1 - r2)" in better["reason"]
    worse = decide_regression(y, b, a, R2)
    assert worse["decision"] == "reject" and worse["improvement"] < 0 and worse["bootstrap_ci95"][1] < 0


@pytest.mark.parametrize("metric", ["mae", "mape"])
def test_mae_and_mape_compare_their_own_losses(metric):
    result = decide_regression(*models(), {**RMSE, "metric": metric})
    assert result["decision"] == "promote" and result["paired_test"]["loss"] == REGRESSION_LOSSES[metric]
    assert result["relative_improvement"] == pytest.approx(1 - result["challenger_score"] / result["champion_score"])


def test_a_perfect_champion_cannot_be_beaten():
    y = np.arange(1.0, 40.0)
    result = decide_regression(y, y + 0.1, y.copy(), RMSE)
    assert result["decision"] == "reject" and "the champion is perfect on the test set" in result["reason"]


# ---- the bootstrap -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "mape"])
def test_the_bootstrap_resamples_rows_as_a_row_bootstrap_would(metric):
    """The same draws as resampling the rows one round at a time and scoring both models on them."""
    from mlpipeline.evaluate import REGRESSION_SCORES

    y, a, b = models(150, seed=2)
    differences = regression_bootstrap(y, a, b, metric, 300, seed=7)
    rng, expected = np.random.default_rng(7), []
    for _ in range(300):
        index = rng.integers(0, y.size, size=(1, y.size), dtype=np.int32)[0]
        a_score, b_score = (REGRESSION_SCORES[metric](y[index], p[index]) for p in (a, b))
        expected.append(a_score - b_score if REGRESSION_METRICS[metric] == "higher" else b_score - a_score)
    np.testing.assert_allclose(differences, expected, rtol=1e-9, atol=1e-12)


def test_the_bootstrap_is_deterministic_for_a_seed_and_does_not_depend_on_the_chunks():
    y, a, b = models(1000)
    first = regression_bootstrap(y, a, b, "r2", 500, seed=3)
    assert np.array_equal(first, regression_bootstrap(y, a, b, "r2", 500, seed=3))
    assert not np.array_equal(first, regression_bootstrap(y, a, b, "r2", 500, seed=4))
    for chunk in (1, 999, 7_000, 1 << 24):  # one round per chunk, ..., every round in one chunk
        np.testing.assert_allclose(regression_bootstrap(y, a, b, "r2", 500, seed=3, chunk_elements=chunk), first,
                                   rtol=1e-10, atol=1e-13)
    assert decide_regression(y, a, b, R2, seed=3) == decide_regression(y, a, b, R2, seed=3)


def test_the_bootstrap_of_a_large_test_set_runs_in_bounded_memory():
    rows = 200_000
    y, a, b = models(rows, challenger_noise=1.0, champion_noise=1.01, seed=9)
    tracemalloc.start()
    try:
        started = time.monotonic()
        differences = regression_bootstrap(y, a, b, "rmse", ROUNDS, seed=0)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # All rounds' row indices at once would be ROUNDS * rows * 8 bytes (1.6 GB); the chunks keep it to tens of MB.
    assert peak < 64e6, f"peak {peak / 1e6:.0f} MB"
    assert elapsed < 60, f"{elapsed:.1f} s"  # about 2 s on an idle laptop
    assert differences.shape == (ROUNDS,) and np.all(np.isfinite(differences))
    assert 0 < np.quantile(differences, 0.025) < np.quantile(differences, 0.975) < 0.02


# ---- properties ------------------------------------------------------------------------------------------------

# From 14 rows: below, scipy's Wilcoxon with ties runs an exact permutation test, about a second an example.
rows_strategy = st.lists(st.tuples(st.floats(1, 100), st.floats(-100, 100), st.floats(-100, 100)), min_size=14,
                         max_size=60)


@settings(max_examples=40, deadline=None)
@given(rows_strategy, st.sampled_from(sorted(REGRESSION_METRICS)), st.sampled_from([0.0, 0.01, 0.1]))
def test_swapping_challenger_and_champion_never_promotes_both_ways(rows, metric, margin):
    y, a, b = (np.array(column) for column in zip(*rows, strict=True))
    threshold = {"max_metric": 1e9} if REGRESSION_METRICS[metric] == "lower" else {"min_metric": -1e9}
    decision = {"metric": metric, "min_improvement": margin, "alpha": 0.05, "bootstrap_rounds": 200, **threshold}
    forth, back = decide_regression(y, a, b, decision), decide_regression(y, b, a, decision)
    assert not (forth["decision"] == back["decision"] == "promote")
    assert forth["improvement"] == pytest.approx(-back["improvement"], abs=1e-9)
    assert forth["bootstrap_ci95"][0] <= forth["bootstrap_ci95"][1]
    same = decide_regression(y, a, a.copy(), decision)
    assert same["decision"] == "reject" and same["paired_test"]["pvalue"] == 1.0


@settings(max_examples=30, deadline=None)
@given(rows_strategy)
def test_the_paired_test_reads_the_losses_one_sided(rows):
    y, a, b = (np.array(column) for column in zip(*rows, strict=True))
    losses = [row_losses(y, p, "mae") for p in (a, b)]
    forth, back = wilcoxon_losses(*losses), wilcoxon_losses(*losses[::-1])
    assert 0 <= forth["pvalue"] <= 1 and 0 <= back["pvalue"] <= 1
    assert (forth["challenger_lower_loss"], forth["champion_lower_loss"]) == (back["champion_lower_loss"],
                                                                            back["challenger_lower_loss"])
    if forth["challenger_lower_loss"] == 0:
        assert forth["pvalue"] >= 0.5  # the challenger is nowhere better: no evidence that it is


# ---- the record ------------------------------------------------------------------------------------------------

def test_a_regression_decision_is_a_training_decision_and_round_trips():
    outcome = decide_regression(*models(), RMSE)
    decision = TrainingDecision(run_key="rk-9", challenger_run_id="r9", challenger_model_uri="models:/m-9",
                                challenger_metrics=score_regression(*models()[:2]), champion_version="3",
                                **outcome)
    record = json.loads(json.dumps(decision.to_dict()))
    assert TrainingDecision.from_dict(record) == decision == TrainingDecision.from_tags(decision.tags())
    assert record["paired_test"]["name"] == "wilcoxon" and record["min_improvement"] == 0.05
    assert record["direction"] == "lower" and record["challenger_accuracy"] is None
    first = TrainingDecision(run_key="rk-1", challenger_run_id="r1", challenger_model_uri="models:/m-1",
                             challenger_metrics={}, **decide_regression(*models()[:2], None, RMSE))
    assert TrainingDecision.from_dict(first.to_dict()) == first and first.to_dict()["threshold"] == 45.0


def test_a_classification_record_is_unchanged_by_the_regression_fields():
    from mlpipeline.decide import decide

    y = np.array(["a"] * 80 + ["b"] * 20)
    outcome = decide(y, y, None, ["a", "b"], {"metric": "accuracy", "min_metric": 0.7, "min_improvement": 0.01,
                                               "alpha": 0.05, "bootstrap_rounds": 100})
    decision = TrainingDecision(run_key="rk-1", challenger_run_id="r1", challenger_model_uri="models:/m-1",
                                challenger_metrics={"accuracy": 1.0}, **outcome)
    record = decision.to_dict()
    assert not set(REGRESSION_FIELDS) & set(record)
    old = {k: v for k, v in record.items()}  # a record written before the regression fields existed
    assert TrainingDecision.from_dict(old) == decision
